"""Operator-level profiles of eager PyTorch networks with ``torch.profiler`` (``torch-cpu``, ``torch-cuda``).

Each unit of the network (:mod:`.structure`) runs inside a profiler scope (the C-implemented ``RecordFunctionFast``:
with Python's ``record_function`` a hooked block cost ~80 us even unprofiled) opened and closed by forward hooks
(attached only for the warm-up and profiled calls), and each profiled call inside a scope of its own. An operator counts
once, at the outermost level (``aten::linear``, not the ``aten::addmm`` it calls), with its inclusive time: CPU time on
the CPU, the time of the kernels it launched on CUDA; it belongs to its innermost unit scope. Profiled calls whose
total is further than the protocol's tolerance from the median are dropped as disturbed (:func:`~slimnas.latency.
protocol.assess`), as the protocol drops passes.

**The time between operators** (CPU): a profiled call's timeline is a tree (the call's scope, the units' scopes, the
outermost operators). Whatever time a scope spends outside its outermost operators and its inner scopes is the
Python and dispatch between operators (module ``__call__``, ``forward`` bodies, hooks): it becomes a ``framework``
sample of that unit, read off the call's own events. Nothing in it comes from an unprofiled call.

**The profiler's own cost**, removed from the samples: recording an operator event costs wall time, and a unit scope
costs its forward hooks' Python and its event. Both are estimated once per process on a *calibration network* (48
small Linear-GELU-LayerNorm blocks, nothing of the profiled model; :func:`profiler_cost`) with the same protocol as the
model's profiled calls: profiled calls without the unit hooks and with them, each paired with the unprofiled call
right before it; per event the median ``(profiled - unprofiled) / events``, per scope the rest of the hooked calls'
extra time over their scopes.
Then, in a profiled call of the model, an outermost operator loses the cost of the events nested in it (they are
recorded inside its span), and a unit's framework time loses the cost of its outermost operators' own events and of
its scope. The overhead removed is stated (``ModelProfile.overhead_removed_ms``, ``cost``), next to the overhead
observed (``profiler_overhead_ms``: profiled minus unprofiled calls). In real networks recording costs more than on
the small calibration network (observed 2.0-3.7 ms per call, removed 0.7-1.9 ms, for the paper's models and
deit_tiny), so part of the profiler's cost stays in the categories: the sum errs high by that part (+1% to +8%,
``docs/latency-analysis.md``).

**The check** (not circular: the unprofiled calls enter no sample and no estimate): every profiled call follows an
unprofiled call without hooks, timed alone (the profiler's schedule: wait, warm-up, active), and the profile states
how the categories' sum, framework included, compares with those calls (``ModelProfile.agreement``: measured in the
same moments, so a busy machine slows both) and with the whole network measured under the latency tables' protocol
(``measured_ms``), and what the profiler added to a call as observed (``profiler_overhead_ms``). On CUDA the
operators' times are kernel times and no framework samples are made (the device's idle time is not the host's
Python); nothing is subtracted there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from slimnas._threads import torch_threads
from slimnas.latency.protocol import Protocol, assess

from .categories import FRAMEWORK, is_known_torch, torch_category
from .records import OpSample, ProfiledCalls, ProfilerCost
from .structure import TOP_LEVEL, Unit, model_units


def _quiet_kineto() -> None:
    """No per-cycle ``profiler_start``/``profiler_stop`` lines from the profiler's C++ library (kineto) on stderr:
    every profiled call is a cycle, so they flooded ``slimnas profile``'s output. A level the user set is kept."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")

__all__ = ["profile_calls", "profiler_cost", "scoped", "BETWEEN_OPERATORS"]

_SCOPE, _CALL = "slimnas.unit::", "slimnas.call::"

#: The pseudo-operator name of a unit's framework samples.
BETWEEN_OPERATORS = "(between operators)"


@contextlib.contextmanager
def scoped(model: Any, units: Sequence[Unit]) -> Iterator[None]:
    """Open a profiler scope named after each unit while it runs (forward hooks, removed on exit; the profiler's
    C-implemented ``RecordFunctionFast``, a fraction of ``record_function``'s cost)."""
    from torch._C._profiler import _RecordFunctionFast

    modules = dict(model.named_modules())
    handles = []
    stack: list[Any] = []

    def pre(name: str) -> Callable[..., None]:
        label = _SCOPE + name

        def hook(module: Any, args: Any) -> None:
            scope = _RecordFunctionFast(label)
            scope.__enter__()
            stack.append(scope)
        return hook

    def post(module: Any, args: Any, output: Any) -> None:
        stack.pop().__exit__(None, None, None)

    try:
        for unit in units:
            module = modules[unit.module]
            handles.append(module.register_forward_pre_hook(pre(unit.module)))
            handles.append(module.register_forward_hook(post))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _descendants(event: Any) -> int:
    """How many events are recorded inside ``event`` (all depths)."""
    return sum(1 + _descendants(child) for child in event.cpu_children)


def _calibration_network() -> Any:
    """48 small blocks (Linear, GELU, LayerNorm, residual add), each block one unit, as in the networks profiled."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act, self.norm = nn.Linear(16, 16), nn.GELU(), nn.LayerNorm(16)

        def forward(self, x: Any) -> Any:
            return x + self.norm(self.act(self.fc(x)))

    class Calibration(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(*[Block() for _ in range(48)])

        def forward(self, x: Any) -> Any:
            return self.blocks(x)

    return Calibration().eval()


def _windowed(run: Callable[[], Any], calls: int, count: bool = False) -> tuple[list[float], tuple[int, int]]:
    """``calls`` timed calls (us) inside one CPU profiler window, after one untimed call; with ``count``, the operator
    events and unit scopes recorded per call (parsing the window's events is slow: only when asked)."""
    _quiet_kineto()
    from torch.profiler import ProfilerActivity, profile

    walls = []
    with profile(activities=[ProfilerActivity.CPU], acc_events=False) as prof:
        run()
        for _ in range(calls):
            t0 = time.perf_counter()
            run()
            walls.append((time.perf_counter() - t0) * 1e6)
    if not count:
        return walls, (0, 0)
    names = [e.name for e in prof.events()]
    scopes = sum(1 for n in names if n.startswith(_SCOPE))
    return walls, ((len(names) - scopes) // (calls + 1), scopes // (calls + 1))


def _paired_cycles(run: Callable[[], Any], cycles: int, hooks: Callable[[], Any], *, activities: Sequence[Any] = (),
                   on_trace_ready: Callable[[Any], None] | None = None, mark: bool = False,
                   sync: Callable[[], None] | None = None) -> tuple[list[float], list[float]]:
    """The profiling protocol, one implementation for the profiled model (:func:`profile_calls`) and the calibration
    (:func:`profiler_cost`): per cycle a call that absorbs the previous cycle's trace processing, an unprofiled call
    timed alone (no hooks), the profiler's warm-up call and the profiled call timed alone (both inside ``hooks()``;
    the profiled one inside a ``slimnas.call::<cycle>`` scope when ``mark``). ``activities``: the profiler's (default:
    the CPU). Returns the unprofiled and the profiled calls' wall times (us)."""
    _quiet_kineto()
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile, schedule

    sync = sync or (lambda: None)
    plain: list[float] = []
    profiled: list[float] = []
    with contextlib.ExitStack() as stack, profile(
            activities=list(activities) or [ProfilerActivity.CPU],
            schedule=schedule(wait=2, warmup=1, active=1, repeat=cycles), on_trace_ready=on_trace_ready,
            acc_events=False) as prof:
        for step in range(4 * cycles):
            phase, i = step % 4 - 1, step // 4
            if phase == 1:
                stack.enter_context(hooks())
            scope = record_function(f"{_CALL}{i}") if mark and phase == 2 else contextlib.nullcontext()
            t0 = time.perf_counter()
            with scope:
                run()
                sync()
            elapsed = (time.perf_counter() - t0) * 1e6
            (plain if phase == 0 else profiled if phase == 2 else []).append(elapsed)
            if phase == 2:
                stack.close()
            prof.step()
    return plain, profiled


#: A calibration whose estimate exceeds these (us) was disturbed (another process took the CPU): it is repeated.
_PLAUSIBLE_EVENT_US, _PLAUSIBLE_SCOPE_US, _ATTEMPTS = 10.0, 200.0, 3


@functools.lru_cache(maxsize=1)
def profiler_cost(cycles: int = 16) -> ProfilerCost:
    """The profiler's cost per recorded operator event and per unit scope in this process, measured on a calibration
    network, never on a profiled model, with the protocol of :func:`profile_calls` (each profiled call the first of
    its profiler window, right after an unprofiled call): ``cycles`` cycles without the unit hooks, then as many with
    them, on one intra-op thread (the profiler records on the calling thread; more threads only add contention on a
    shared machine). Each profiled call is paired with the unprofiled call of its cycle (the same moment), and the
    median difference counts: ``per_event_us`` = (profiled without hooks - unprofiled) / operator events per call;
    ``per_scope_us`` = (profiled with hooks - unprofiled - per_event_us * operator events) / unit scopes per call
    (events counted in one more window). An implausible estimate (a disturbed calibration) is repeated, up to three
    attempts; the least disturbed attempt (fastest unprofiled calls) is kept."""
    import torch

    net = _calibration_network()
    units = model_units(net)
    x = torch.randn(1, 4, 16)

    def run() -> Any:
        with torch.inference_mode():
            return net(x)

    with torch_threads(1):
        for _ in range(5):
            run()
        _, (n_ops, _) = _windowed(run, 1, count=True)
        with scoped(net, units):
            _, (n_hooked, n_scopes) = _windowed(run, 1, count=True)
        attempts: list[tuple[float, float, float, float, float]] = []
        for _ in range(_ATTEMPTS):
            plain, bare = _paired_cycles(run, cycles, contextlib.nullcontext)
            plain_too, hooked = _paired_cycles(run, cycles, lambda: scoped(net, units))
            p0, p1, p2 = _median(plain + plain_too), _median(bare), _median(hooked)
            per_event = max(_median([b - a for a, b in zip(plain, bare)]), 0.0) / max(n_ops, 1)
            per_scope = max(_median([b - a for a, b in zip(plain_too, hooked)]) - per_event * n_hooked,
                            0.0) / max(n_scopes, 1)
            attempts.append((p0, p1, p2, per_event, per_scope))
            if per_event <= _PLAUSIBLE_EVENT_US and per_scope <= _PLAUSIBLE_SCOPE_US:
                break
    p0, p1, p2, per_event, per_scope = min(attempts)
    how = (f"calibration network: {n_ops} operator events and {n_scopes} unit scopes per call, {cycles} profiled "
           f"calls each without and with the unit hooks, one thread, medians: unprofiled {p0:.0f} us, profiled "
           f"{p1:.0f} us, profiled with unit hooks {p2:.0f} us" + (f" ({len(attempts)} attempts)"
                                                                     if len(attempts) > 1 else ""))
    return ProfilerCost(per_event_us=per_event, per_scope_us=per_scope, how=how)


class _CallTree:
    """Turns one profiled call's event tree into samples: outermost operators (minus the events nested in them) and
    each unit's time between its operators (minus its operators' own events and its scope)."""

    def __init__(self, by_name: dict[str, Unit], cost: ProfilerCost | None, cuda: bool) -> None:
        self.by_name, self.cost, self.cuda = by_name, cost, cuda
        self.samples: list[OpSample] = []
        self.events = 0
        self.scopes = 0
        self.removed_us = 0.0

    def walk(self, node: Any, unit: Unit, is_scope: bool) -> None:
        c = self.cost.per_event_us if self.cost else 0.0
        inside = 0.0  # the inclusive time of the node's outermost operators and inner scopes
        own_ops = 0
        for child in node.cpu_children:
            if child.name.startswith(_SCOPE):
                inner = self.by_name.get(child.name[len(_SCOPE):], unit)
                self.scopes += 1
                self.walk(child, inner, True)
            else:
                nested = _descendants(child)
                self.events += 1 + nested
                own_ops += 1
                if self.cuda:
                    us = _device_us(child)
                else:
                    us = child.cpu_time_total - c * nested
                    self.removed_us += c * nested
                self.samples.append(OpSample(child.name, torch_category(child.name, unit.kind == "stem"), unit,
                                             us / 1e3, is_known_torch(child.name)))
            inside += child.cpu_time_total
        if self.cuda:
            return
        removed = c * own_ops + (self.cost.per_scope_us if self.cost and is_scope else 0.0)
        self.removed_us += removed
        self.samples.append(OpSample(BETWEEN_OPERATORS, FRAMEWORK, unit,
                                     (node.cpu_time_total - inside - removed) / 1e3))


def profile_calls(model: Any, run: Callable[[], Any], runs: int, protocol: Protocol, cuda: bool = False,
                  sync: Callable[[], None] | None = None) -> ProfiledCalls:
    """Profile ``runs`` calls of ``run()`` (which calls ``model``), each right after an unprofiled call without the
    unit hooks, timed alone (the profiler's schedule: wait, warm-up, active), so that each profiled call has a
    measurement of the same moment without the profiler. On the CPU, the profiler's cost (:func:`profiler_cost`) is
    subtracted from the samples."""
    _quiet_kineto()
    from torch.profiler import ProfilerActivity

    units = model_units(model)
    by_name = {u.module: u for u in units}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = sync or (lambda: None)
    cost = None if cuda else profiler_cost()
    windows: list[Any] = []
    with scoped(model, units):
        for _ in range(3):  # the hooks' first calls
            run()
    sync()
    plain_us, walls_us = _paired_cycles(run, runs, lambda: scoped(model, units), activities=activities,
                                        on_trace_ready=lambda p: windows.append(p.events()), mark=True, sync=sync)
    plain, walls = [t / 1e3 for t in plain_us], [t / 1e3 for t in walls_us]
    trees: dict[int, _CallTree] = {}
    for event in (e for window in windows for e in window):
        if event.name.startswith(_CALL):
            tree = _CallTree(by_name, cost, cuda)
            tree.walk(event, TOP_LEVEL, False)
            trees[int(event.name[len(_CALL):])] = tree
    empty = _CallTree(by_name, cost, cuda)
    calls = [trees.get(i, empty) for i in range(runs)]
    samples = [t.samples for t in calls]
    totals = [sum(s.ms for s in call) or 1e-9 for call in samples]
    verdict = assess([[t] for t in totals], protocol)
    return ProfiledCalls(samples, list(verdict.accepted), walls, plain, units,
                         removed=[t.removed_us / 1e3 for t in calls], events=[t.events for t in calls],
                         scopes=[t.scopes for t in calls], cost=cost)


def _device_us(event: Any) -> float:
    """The time of the kernels an operator (and the operators it called) launched."""
    for name in ("device_time_total", "cuda_time_total"):
        value = getattr(event, name, None)
        if value is not None:
            return float(value)
    return 0.0
