import math
import random

import pytest

from slimnas.latency import Part, Timing
from slimnas.latency.context import ContextResult, _working_set_slope, combine


def test_the_working_set_slope_is_recovered_from_parts_seen_in_networks_of_different_sizes():
    rng = random.Random(0)
    parts = [Part("mb4d", 1, 16 * k, 16 * k) for k in range(1, 6)]
    base = {p: 0.05 * (i + 1) for i, p in enumerate(parts)}
    observed = []
    for part in parts:
        for size in rng.sample([1.0, 2.0, 4.0, 6.0, 8.0], 3):  # each part inside three networks of other sizes
            t = base[part] * math.exp(0.02 * size)
            observed.append((part, size, [t * (1 + rng.gauss(0, 0.002)) for _ in range(20)]))
    assert _working_set_slope(observed, "median") == pytest.approx(0.02, abs=0.002)
    flat = [(p, size, [base[p]] * 5) for p, size, _ in observed]
    assert _working_set_slope(flat, "median") == pytest.approx(0.0, abs=1e-12)
    assert _working_set_slope([(parts[0], 1.0, [0.1])], "median") == 0.0  # one network per part: no information


def test_parts_left_out_of_the_cover_take_their_kinds_in_context_ratio():
    t = lambda ms: Timing(ms, ms, ms, ms, 0.0, 3, ms, ms)  # noqa: E731
    covered, left = Part("mb4d", 1, 32, 32), Part("mb4d", 1, 48, 48)
    other_stage = Part("mb4d", 2, 32, 32)
    alone = {covered: t(0.10), left: t(0.20), other_stage: t(0.30), Part("head", 3, 64, 10): t(0.05)}
    context = ContextResult({covered: t(0.13)}, overhead_ms=0.01, networks=1, disturbed=0, passes=1)
    entries = combine(context, alone, "median")
    assert entries[covered].median == pytest.approx(0.13)
    assert entries[left].median == pytest.approx(0.26)  # its kind and stage: x1.3
    assert entries[other_stage].median == pytest.approx(0.39)  # its kind, another stage: x1.3
    assert entries[Part("head", 3, 64, 10)].median == pytest.approx(0.05)  # no covered head: unscaled
