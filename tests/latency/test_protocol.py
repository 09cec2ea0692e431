import numpy as np
import pytest

from slimnas.errors import InputError
from slimnas.latency.protocol import Protocol, assess, needs_more, run_passes, statistic_of

TRUE_MS = 1.0
STATS = ("median", "mean", "min")


def _pass(rng, n=60, scale=1.0, spikes=0.0):
    """Single-call samples of a 1 ms module: small noise, optionally the whole pass scaled (the machine slower or
    faster for a while) and a share of samples hit by interference (3x)."""
    samples = TRUE_MS * scale * (1 + np.abs(rng.normal(0, 0.01, n)))
    hit = rng.random(n) < spikes
    samples[hit] *= 3.0
    return samples.tolist()


def test_disturbed_passes_are_dropped_whichever_way_they_go():
    rng = np.random.default_rng(0)
    protocol = Protocol(passes=8)
    passes = [_pass(rng) for _ in range(6)] + [_pass(rng, scale=1.35), _pass(rng, scale=0.6)]
    m = assess(passes, protocol)
    assert m.disturbed == 2 and m.passes == 6 and m.accepted == (True,) * 6 + (False, False)
    assert m.value == pytest.approx(TRUE_MS, rel=0.02)
    pooled = [x for p in passes for x in p]  # without the detection, the tails belong to the disturbed passes
    assert statistic_of(pooled, "min") < 0.65 and np.percentile(pooled, 95) > 1.3
    every = protocol.replace(statistic="min", quiet_passes=0)  # the statistic of every accepted pass
    assert assess(passes, every).value == pytest.approx(TRUE_MS, rel=0.01)
    # the three quietest passes include the burst of speed; their pooled median does not follow one pass of three
    assert m.pooled[-1] and sum(m.pooled) == 3
    assert not needs_more(m)


def test_the_median_ignores_interference_inside_a_pass_where_the_mean_does_not():
    rng = np.random.default_rng(1)
    passes = [_pass(rng, spikes=0.2) for _ in range(8)]
    for quiet in (0, 3):  # over every pass, and over the quietest three
        value = {stat: assess(passes, Protocol(statistic=stat, quiet_passes=quiet)).value for stat in STATS}
        assert value["median"] == pytest.approx(TRUE_MS, rel=0.02) and value["mean"] > 1.25 * TRUE_MS
        assert value["min"] == pytest.approx(TRUE_MS, rel=0.01)


def test_too_many_disturbed_passes_get_extra_passes_until_the_majority_agrees():
    rng = np.random.default_rng(2)
    protocol = Protocol(passes=8, extra_passes=6)
    calls = {0: 0, 1: 0}
    # item 0: a busy phase slows its passes 3 to 5 (3 of 8); item 1 is quiet throughout
    slow = {0: {2, 3, 4}}

    def sample_pass(i):
        k = calls[i]
        calls[i] += 1
        return _pass(rng, scale=1.4 if k in slow.get(i, ()) else 1.0)

    records = run_passes(2, sample_pass, protocol)
    assert len(records[1]) == 8  # quiet: no extra pass
    assert len(records[0]) == 8 + 4  # 3 of 8 disturbed (> a quarter): extra passes until 3 are a quarter (of 12)
    m = assess(records[0], protocol)
    assert m.disturbed == 3 and not needs_more(m) and m.value == pytest.approx(TRUE_MS, rel=0.02)


def test_a_resumed_schedule_takes_the_same_decisions():
    rng = np.random.default_rng(3)
    protocol = Protocol(passes=4, extra_passes=3)
    recorded = {}
    first = run_passes(3, lambda i: _pass(rng, scale=1.5 if i == 0 and rng.random() < 0.5 else 1.0), protocol,
                       on_pass=lambda i, k, r: recorded.__setitem__((i, k), r))
    again = run_passes(3, lambda i: pytest.fail("nothing left to measure"), protocol, done=recorded)
    assert again == first


def test_the_statistic_pools_the_quietest_passes_even_those_a_spell_makes_look_disturbed():
    rng = np.random.default_rng(4)
    # a spell of interference slows six of eight passes by 15%: the median-relative test calls the quiet ones off
    passes = [_pass(rng, scale=1.15) for _ in range(4)] + [_pass(rng) for _ in range(2)] + \
        [_pass(rng, scale=1.15) for _ in range(2)]
    m = assess(passes, Protocol(quiet_passes=3))
    assert m.accepted == (True,) * 4 + (False, False) + (True, True) and m.disturbed == 2
    assert sum(m.pooled) == 3 and m.pooled[4] and m.pooled[5]  # both quiet passes, and the quietest of the spell
    assert m.value < 1.02 * TRUE_MS * 1.15 and m.timing.count == 3 * 60
    everything = assess(passes, Protocol(quiet_passes=0))  # every accepted pass: the spell's
    assert everything.pooled == everything.accepted and everything.value == pytest.approx(1.15 * TRUE_MS, rel=0.02)
    # a spell over fewer passes: the three quietest are the quiet ones
    calm = [_pass(rng, scale=1.06) for _ in range(3)] + [_pass(rng) for _ in range(3)] + [_pass(rng, scale=1.06)] * 2
    m = assess(calm, Protocol(quiet_passes=3))
    assert m.pooled == (False,) * 3 + (True,) * 3 + (False,) * 2 and m.value == pytest.approx(TRUE_MS, rel=0.01)
    # no more passes than quiet_passes: the accepted ones, as before
    two = [_pass(rng), _pass(rng, scale=1.5)]
    assert assess(two, Protocol(quiet_passes=3)).pooled == assess(two, Protocol(quiet_passes=0)).accepted
    # ties are broken by order, so a resumed measurement pools the same passes
    assert assess([[1.0]] * 5, Protocol(quiet_passes=2)).pooled == (True, True, False, False, False)


def test_protocol_fields_are_checked_and_round_trip():
    p = Protocol(statistic="p10", passes=3, samples=5, pass_ms=10.0, warmup_ms=5.0, tolerance=0.05, extra_passes=1)
    assert Protocol.from_dict(p.to_dict()) == p
    assert p.replace(passes=None, samples=7).samples == 7
    for field, bad in [("statistic", "mode"), ("passes", 0), ("samples", -1), ("pass_ms", -5.0),
                       ("warmup_ms", float("nan")), ("tolerance", 0.0), ("extra_passes", -1), ("passes", 2.5),
                       ("quiet_passes", -1)]:
        with pytest.raises(InputError, match=f"protocol.{field}: must be"):
            Protocol(**{field: bad})
    with pytest.raises(InputError, match="unknown field"):
        Protocol.from_dict({"passes": 2, "repeats": 3})
    # a protocol recorded before quiet_passes existed (a table's, a journal's) pooled every accepted pass
    assert Protocol.from_dict({"passes": 2}).quiet_passes == 0 and Protocol().quiet_passes == 3
