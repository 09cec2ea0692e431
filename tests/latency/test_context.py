import math
import random
from dataclasses import replace

import numpy as np
import pytest

from slimnas.latency import LatencyTable, Part, Timing, parts_of, parts_of_space
from slimnas.latency.context import (
    MIN_FIT_PARTS,
    ContextResult,
    _working_set_slope,
    combine,
    covering_archs,
    fit_uncovered,
    summarize_context,
)
from slimnas.latency.protocol import ContextSamples, Protocol
from slimnas.latency.table import TableMeta
from slimnas.search_spaces import SearchSpace, SpaceFamily


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


def _synthetic_context(space, factors, overhead=0.02, num_classes=10):
    """Covering networks of ``space`` timed by a made-up machine: each part a fixed first-occurrence time, a block
    right after an identical one ``factors[kind]`` of it, plus a constant per network (no noise)."""
    archs = covering_archs(space, num_classes=num_classes, cover=2, max_networks=96)
    rng = random.Random(0)
    truth = {p: 0.01 + 0.1 * rng.random() for p in parts_of_space(space, num_classes)}

    def ran(parts):  # each part as it runs in the network
        return [truth[p] * (factors.get(p.kind, 1.0) if i and parts[i - 1] == p else 1.0) for i, p in enumerate(parts)]

    def whole(parts):
        return sum(ran(parts)) + overhead

    def passes(parts):
        return [ContextSamples([whole(parts)] * 3, [[v] * 3 for v in ran(parts)]) for _ in range(2)]

    networks = [parts_of(a, num_classes) for a in archs]
    return archs, truth, whole, summarize_context(networks, [passes(n) for n in networks], Protocol(passes=2))


def test_repeated_blocks_get_a_factor_of_their_own_and_tables_predict_whole_networks_with_it(tmp_path):
    space = SearchSpace.preset("tiny")
    factors = {"mb4d": 0.85, "mb3d": 0.9}
    archs, truth, whole, result = _synthetic_context(space, factors)
    # every stage where blocks repeat in the cover gets its kind's factor; entries are the first block's time
    assert {k.split(":")[0] for k in result.repeat_factors} == {"mb4d", "mb3d"}
    assert all(f == pytest.approx(factors[k.split(":")[0]]) for k, f in result.repeat_factors.items())
    assert all(result.entries[p].median == pytest.approx(truth[p]) for p in result.entries)
    assert result.overhead_ms == pytest.approx(0.02)
    meta = TableMeta(backend="torch-cpu", device="made up", batch=1, dtype="float32", img_size=space.img_size,
                     threads=1, space=space.to_dict(), num_classes=10, harness="context",
                     overhead_ms=result.overhead_ms, repeat_factors=result.repeat_factors)
    table = LatencyTable.load(LatencyTable(result.entries, meta).save(tmp_path / "t.parquet"))
    assert table.meta.repeat_factors == result.repeat_factors  # the metadata round trip
    rng = random.Random(1)
    checked = [a for a in archs[:20] + [space.sample(rng) for _ in range(200)] if not table.missing(a)]
    assert len(checked) > 50
    runs = [a for a in checked if any(n > 1 for n in a.num_3d) or any(d - t > 1 for d, t in zip(a.depths, a.num_3d))]
    assert runs  # networks with repeated blocks are among them
    expected = np.array([whole(parts_of(a, 10)) for a in checked])
    assert np.allclose([table.predict(a) for a in checked], expected, rtol=1e-9)
    assert np.allclose(table.predict_many(checked), expected, rtol=1e-9)
    parts, constant = table.contributions(runs[0])
    assert sum(v for _, v in parts) + constant == pytest.approx(whole(parts_of(runs[0], 10)))
    # the family's generic (looping) summer agrees with EfficientFormer's vectorized one
    values = {p: t.median for p, t in table.entries.items()}
    repeats = {p: v * table.meta.repeat_factors.get(f"{p.kind}:{p.stage}", 1.0) for p, v in values.items()}
    family = space.space_family
    dense = family.part_summer(values, space, 10, 3, repeat_values=repeats)(family.features(checked))
    looped = SpaceFamily.part_summer(family, values, space, 10, 3, repeat_values=repeats)(checked)
    assert all(np.allclose(dense[k], looped[k]) for k in family.part_kinds)
    # without the factors (one pooled entry per part, as before) the same measurements mispredict those networks
    plain = _synthetic_context(space, {})[3]
    assert plain.repeat_factors == {k: pytest.approx(1.0) for k in plain.repeat_factors}
    pooled = {p: [] for p in result.entries}
    for a in archs:
        ps = parts_of(a, 10)
        for i, p in enumerate(ps):
            pooled[p].append(truth[p] * (factors.get(p.kind, 1.0) if i and ps[i - 1] == p else 1.0))
    old = LatencyTable({p: Timing.from_samples(v) for p, v in pooled.items()}, replace(meta, repeat_factors={}))
    assert np.max(np.abs(old.predict_many(runs) / [whole(parts_of(a, 10)) for a in runs] - 1)) > 0.03


def test_entries_come_from_each_covering_networks_quietest_passes():
    a, b = Part("mb4d", 1, 16, 16), Part("mb3d", 3, 32, 32)
    # a spell of interference slows the network by 6% in five of its eight passes (not disturbed: within the
    # tolerance), and unevenly: part b by 15%, part a not at all
    quiet = ContextSamples([1.0] * 3, [[0.6] * 3, [0.4] * 3])
    spell = ContextSamples([1.06] * 3, [[0.6] * 3, [0.46] * 3])
    records = [[spell, quiet, spell, quiet, spell, spell, quiet, spell]]
    result = summarize_context([[a, b]], records, Protocol(passes=8, quiet_passes=3))
    assert result.entries[a].median == pytest.approx(0.6) and result.entries[b].median == pytest.approx(0.4)
    assert result.entries[b].count == 9 and result.overhead_ms == pytest.approx(0.0) and result.disturbed == 0
    everything = summarize_context([[a, b]], records, Protocol(passes=8, quiet_passes=0))
    assert everything.entries[b].median == pytest.approx(0.46)  # the spell's share of the passes decides


def test_uncovered_parts_are_fitted_on_the_covered_parts_of_their_kind_and_stage():
    law = lambda ci, co: 0.01 + 2e-4 * ci + 1e-4 * co + 3e-6 * ci * co  # noqa: E731
    widths = range(16, 129, 16)
    every = [Part("downsample", 2, ci, co) for ci in widths for co in widths]
    rng = random.Random(0)
    covered = set(rng.sample(every, 24))
    entries = {}
    for p in covered:
        v = law(p.c_in, p.c_out)
        entries[p] = Timing(v, 1.1 * v, 0.9 * v, 1.3 * v, 0.05 * v, 40, 0.95 * v, 0.8 * v)
    entries[Part("mb4d", 2, 32, 32)] = Timing(1.0, 1.0, 1.0, 1.0, 0.0, 3, 1.0, 1.0)  # another kind: not used
    left = [p for p in every if p not in covered]
    fitted, errors = fit_uncovered(entries, left, "median")
    assert set(fitted) == set(left) and set(errors) == {"downsample/2"} and errors["downsample/2"] < 1e-6
    for p in left:
        t, v = fitted[p], law(p.c_in, p.c_out)
        assert t.median == pytest.approx(v) and t.p10 == pytest.approx(0.9 * v) and t.min == pytest.approx(0.8 * v)
        assert t.count == 40  # the nearest covered part's, scaled
    # noisy entries: the leave-one-out error says how far the fit is off
    noisy = {p: Timing(*(x * (1 + rng.gauss(0, 0.1)) if isinstance(x, float) else x for x in (
        t.median, t.mean, t.p10, t.p90, t.std, t.count, t.p25, t.min))) for p, t in entries.items()}
    assert 3 < fit_uncovered(noisy, left, "median")[1]["downsample/2"] < 30
    # too few covered parts of a kind and stage: no fit (the builder times the parts alone instead)
    few = dict(list((p, entries[p]) for p in sorted(covered))[:MIN_FIT_PARTS - 1])
    assert fit_uncovered(few, left, "median") is None
    assert fit_uncovered(entries, [Part("mb3d", 3, 64, 64)], "median") is None
