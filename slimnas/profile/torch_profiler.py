"""Operator-level profiles of eager PyTorch networks with ``torch.profiler`` (``torch-cpu``, ``torch-cuda``).

Each unit of the network (:mod:`.structure`) runs inside a ``record_function`` scope opened and closed by forward
hooks (attached only while profiling), and each profiled call inside a scope of its own. An operator counts once, at
the outermost level (``aten::linear``, not the ``aten::addmm`` it calls), with its inclusive time: CPU time on the CPU,
the time of the kernels it launched on CUDA; it belongs to its innermost unit scope. Profiled calls whose total is
further than the protocol's tolerance from the median are dropped as disturbed (:func:`~slimnas.latency.protocol.
assess`), as the protocol drops passes.

The profiler's own cost: recording an operator costs a few microseconds, which inflates the operators' times, while
the Python between operators (module calls, hooks) is in no operator. So every profiled call follows an unprofiled
call timed alone (the profiler's schedule: wait, warm-up, active), and the profile states how the categories' sum
compares with those calls (``ModelProfile.agreement``: measured in the same moments, so a busy machine slows both)
and with the whole network measured under the latency tables' protocol (``measured_ms``), and what the profiler adds to
a call (``profiler_overhead_ms``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from slimnas.latency.protocol import Protocol, assess

from .categories import is_known_torch, torch_category
from .records import OpSample, ProfiledCalls
from .structure import TOP_LEVEL, Unit, model_units

__all__ = ["profile_calls", "scoped"]

_SCOPE, _CALL = "slimnas.unit::", "slimnas.call::"


@contextlib.contextmanager
def scoped(model: Any, units: Sequence[Unit]) -> Iterator[None]:
    """Open a ``record_function`` scope named after each unit while it runs (forward hooks, removed on exit)."""
    from torch.autograd.profiler import record_function

    modules = dict(model.named_modules())
    handles = []
    stack: list[Any] = []

    def pre(name: str) -> Callable[..., None]:
        def hook(module: Any, args: Any) -> None:
            scope = record_function(_SCOPE + name)
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


def profile_calls(model: Any, run: Callable[[], Any], runs: int, protocol: Protocol, cuda: bool = False,
                  sync: Callable[[], None] | None = None) -> ProfiledCalls:
    """Profile ``runs`` calls of ``run()`` (which calls ``model``), each right after an unprofiled call timed alone
    (the profiler's schedule: wait, warm-up, active), so that each profiled call has a measurement of the same moment
    without the profiler."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile, schedule

    units = model_units(model)
    by_name = {u.module: u for u in units}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = sync or (lambda: None)
    walls: list[float] = []
    plain: list[float] = []
    windows: list[Any] = []
    with scoped(model, units):
        for _ in range(3):  # the hooks' first calls
            run()
        sync()
        # Per cycle: a call that absorbs the previous cycle's trace processing, the unprofiled call timed alone, the
        # profiler's warm-up call, the profiled call.
        with profile(activities=activities, schedule=schedule(wait=2, warmup=1, active=1, repeat=runs),
                     on_trace_ready=lambda p: windows.append(p.events()), acc_events=False) as prof:
            for step in range(4 * runs):
                phase, i = step % 4 - 1, step // 4
                t0 = time.perf_counter()
                if phase == 2:
                    with record_function(f"{_CALL}{i}"):
                        run()
                        sync()
                else:
                    run()
                    sync()
                elapsed = (time.perf_counter() - t0) * 1e3
                (plain if phase == 0 else walls if phase == 2 else []).append(elapsed)
                prof.step()
    samples: list[list[OpSample]] = [[] for _ in range(runs)]
    for event in (e for window in windows for e in window):
        name = event.name
        if name.startswith((_SCOPE, _CALL)):
            continue
        parent = event.cpu_parent
        if parent is not None and not parent.name.startswith((_SCOPE, _CALL)):
            continue  # counted in its outermost operator
        unit, call = TOP_LEVEL, None
        while parent is not None:
            if parent.name.startswith(_SCOPE) and unit is TOP_LEVEL:
                unit = by_name.get(parent.name[len(_SCOPE):], TOP_LEVEL)
            if parent.name.startswith(_CALL):
                call = int(parent.name[len(_CALL):])
                break
            parent = parent.cpu_parent
        if call is None:
            continue  # outside the profiled calls (the profiler's own start)
        us = _device_us(event) if cuda else event.cpu_time_total
        samples[call].append(OpSample(name, torch_category(name, unit.kind == "stem"), unit, us / 1e3,
                                      is_known_torch(name)))
    totals = [sum(s.ms for s in call) or 1e-9 for call in samples]
    verdict = assess([[t] for t in totals], protocol)
    return ProfiledCalls(samples, list(verdict.accepted), walls, plain, units)


def _device_us(event: Any) -> float:
    """The time of the kernels an operator (and the operators it called) launched."""
    for name in ("device_time_total", "cuda_time_total"):
        value = getattr(event, name, None)
        if value is not None:
            return float(value)
    return 0.0
