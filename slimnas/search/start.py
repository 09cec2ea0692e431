"""Where slimming starts: the supernet's own architecture, read from alpha. Plain Python.

The paper starts slimming from the trained supernet (Sec. 4.2), whose stage-3/4 slots hold both MB4D and MB3D. A
standalone arch must pick one per slot, with MB3D a suffix of each stage. slimnas starts from every slot active at
maximum width and, in each stage, the split into MB4D then MB3D blocks that is most probable under the supernet's
``softmax(alpha)`` restricted to the non-identity kinds (``start="alpha"``, the default), or from ``space.max_arch()``
(``start="max"``).
"""

from __future__ import annotations

import math

from slimnas.search_spaces import Arch, Importance, SearchSpace

__all__ = ["start_arch", "STARTS"]

STARTS = ("alpha", "max")


def _logp(probs: dict[str, float], kind: str, lead: str, tail: str) -> float:
    """log P(kind | the slot is not an identity)."""
    p4, p3 = probs.get(lead, 0.0), probs.get(tail, 0.0)
    p = (p4 if kind == lead else p3) / max(p4 + p3, 1e-300)
    return math.log(max(p, 1e-300))


def start_arch(space: SearchSpace, importance: Importance | None = None, start: str = "alpha") -> Arch:
    """The starting arch of slimming (see the module docstring)."""
    if start not in STARTS:
        raise ValueError(f"start: expected one of {STARTS}, got {start!r}")
    if start == "max" or importance is None:
        return space.max_arch()
    blocks = []
    lead, tail = space.space_family.lead, space.space_family.tail
    for s, slots in enumerate(space.slots):
        kinds = space.kinds[s]
        if not (lead in kinds and tail in kinds):
            blocks.append(space.max_arch().blocks[s])
            continue
        logp4 = [_logp(p, lead, lead, tail) for p in importance.probs[s]]
        logp3 = [_logp(p, tail, lead, tail) for p in importance.probs[s]]
        # the number of trailing MB3D blocks that maximises the log-probability (ties: fewer MB3D)
        best = max(range(slots + 1), key=lambda n: (sum(logp4[:slots - n]) + sum(logp3[slots - n:]), -n))
        blocks.append((lead,) * (slots - best) + (tail,) * best)
    arch = Arch(space.img_size, space.max_widths, tuple(blocks), space.family)
    space.check(arch)
    return arch
