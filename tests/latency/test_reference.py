import json
import math
import time

import pytest

from slimnas.latency import LatencyTable, Timing, build_table
from slimnas.latency.protocol import Protocol
from slimnas.latency.reference import MEDIAN, QUIET, ReferenceClock, pooled_latency, reference_archs, speed_factor
from slimnas.latency.validate import compare_tables, measure_networks, validation_archs
from slimnas.search_spaces.efficientformer import SearchSpace

from .conftest import FAST, MICRO, fast_backend


def test_reference_archs_are_seeded_and_the_factor_is_a_geometric_mean():
    tiny = SearchSpace.preset("tiny")
    assert reference_archs(tiny, 2) == reference_archs(tiny, 2) and len(set(reference_archs(tiny, 3))) == 3
    assert speed_factor([2.0, 0.5], [1.0, 1.0]) == pytest.approx(1.0)
    assert speed_factor([1.1, 2.2], [1.0, 2.0]) == pytest.approx(1.1)
    assert speed_factor([], []) == 1.0


class SlowedBackend(type(fast_backend())):
    """Real modules on a machine ``factor`` times slower than when the table was built (``factor`` 1 builds it).

    A call takes a time set by the module's parameter count, so the factor is exactly the one set here: what is
    tested is how a measurement is brought back to the table's speed. (With real timings of a micro network, a
    build disturbed on a loaded CI host once made a 1.5x slower machine look 0.87x as fast.)"""

    def __init__(self, factor):
        super().__init__(threads=1)
        self.factor = factor

    def sample(self, module, example, protocol):
        size = sum(p.numel() for p in module.parameters())
        return [self.factor * (0.05 + 1e-6 * size)] * protocol.samples


def test_reference_timings_pool_their_quietest_share_as_an_items_passes_do():
    protocol = Protocol()  # the default: an item pools its 3 quietest passes of 8
    quiet, spell = [1.0] * 5, [1.4] * 5
    build = [spell if k % 2 else quiet for k in range(24)]  # a build: timed at every pass, half of them in spells
    session = [quiet, spell, spell, quiet]  # a validation: a few timings
    assert pooled_latency(build, protocol) == pytest.approx(1.0) == pooled_latency(session, protocol)
    # the earlier pooling measured how long the spells lasted (2026-12-01 on the Xeon VM: 46% slower references)
    assert pooled_latency(build, protocol, MEDIAN) == pytest.approx(1.2)
    assert pooled_latency([spell, spell, quiet], protocol, MEDIAN) == pytest.approx(1.4)
    # a share, not a count: three lucky timings of 24 are not the machine's speed (9 of 24 are pooled)
    lucky = [[0.5] * 5] * 3 + [quiet] * 21
    assert pooled_latency(lucky, protocol) == pytest.approx(1.0)
    assert pooled_latency(lucky, protocol.replace(quiet_passes=0)) == pytest.approx(1.0)  # every pass: the median
    assert pooled_latency(build, protocol.replace(quiet_passes=0)) == pytest.approx(1.2)
    assert math.isnan(pooled_latency([], protocol))
    with pytest.raises(ValueError, match="pooling"):
        pooled_latency(build, protocol, "mean")


class Spells(SlowedBackend):
    """Each module's timings in a cycle of four: one quiet, three in a spell 1.6x slow (deterministic; counted on the
    module itself), so that the median over many of a module's timings is the spell and their quietest share (3 of 8)
    the quiet speed."""

    def __init__(self):
        super().__init__(1.0)

    def sample(self, module, example, protocol):
        n = getattr(module, "_spell_calls", -1) + 1
        module._spell_calls = n
        return [v * (1.0 if n % 4 == 0 else 1.6) for v in super().sample(module, example, protocol)]


def test_a_session_pools_its_reference_timings_as_the_tables_build_did(tmp_path, monkeypatch):
    protocol = FAST.replace(reference_networks=1, passes=8)
    table = build_table(MICRO, Spells(), tmp_path / "q.parquet", protocol=protocol, harness="isolated",
                        calibrate_networks=0, keep_journal=True)
    again = LatencyTable.load(tmp_path / "q.parquet")
    assert table.meta.reference["pooling"] == QUIET == again.meta.reference_pooling()
    # the build pooled the quietest share of its reference timings (every one is in its journal), not their median
    lines = (tmp_path / "q.parquet.journal.jsonl").read_text().splitlines()
    timings = [r["samples"] for r in map(json.loads, lines[1:]) if r.get("stage") == "reference"]
    assert len(timings) >= protocol.passes
    assert table.meta.reference_ms() == [pytest.approx(pooled_latency(timings, protocol))]
    assert pooled_latency(timings, protocol) < pooled_latency(timings, protocol, MEDIAN)
    # a session against the table pools its own timings the same way; against a table built before the field
    # (which recorded the median of its timings), as that one did. How many timings a session takes depends on the
    # wall clock (they stay within a tenth of its time), so what is checked here is the pooling each session asks for
    asked = []
    latencies = ReferenceClock.latencies

    def recording(clock, stage=None, pooling=QUIET):
        asked.append(pooling)
        return latencies(clock, stage, pooling)

    monkeypatch.setattr(ReferenceClock, "latencies", recording)
    ref = dict(table.meta.reference)
    del ref["pooling"]
    earlier = table.with_meta(reference=ref)
    assert earlier.meta.reference_pooling() == MEDIAN
    archs = [a for _, a in validation_archs(MICRO, 3, 0)]
    for measured in (measure_networks(table, Spells(), archs), measure_networks(earlier, Spells(), archs)):
        assert all(m.speed > 0 and m.raw == pytest.approx(m.value * m.speed) for m in measured)
    assert asked == [QUIET, MEDIAN]


def test_the_clock_times_the_references_at_every_pass_of_a_build_and_within_a_tenth_of_other_sessions():
    backend, calls = fast_backend(), []

    class Counting:
        def sample(self, module, example, protocol):
            calls.append(1)
            return backend.sample(module, example, protocol)

    from slimnas.latency.modules import network_module

    net = network_module(reference_archs(MICRO, 1)[0])
    build = ReferenceClock([lambda: net], Counting(), FAST, every_s=3600)  # a table's build: every pass start
    build.tick(True)
    build.tick(False)
    build.tick(True)
    assert len(calls) == 2
    calls.clear()
    clock = ReferenceClock([lambda: net], Counting(), FAST, every_s=3600, every_pass=False)
    clock.tick(True)
    cost = clock._cost
    clock.tick(False)  # between passes: not before every_s
    clock.tick(True)  # a pass start right after: the references would take half the session
    assert len(calls) == 1
    time.sleep(cost / 0.1 * 1.2)
    clock.tick(False)  # still not between passes
    clock.tick(True)  # ten times their cost later: a pass start times them
    assert len(calls) == 2
    clock.tick(True, force=True)  # the session's end: always
    assert len(calls) == 3 and len(clock.samples[0]) == 3 and clock.latencies()[0] > 0


def test_measurements_come_back_at_the_table_speed_and_raw(tmp_path):
    protocol = FAST.replace(reference_networks=2, passes=3)
    table = build_table(MICRO, SlowedBackend(1.0), tmp_path / "m.parquet", protocol=protocol, harness="isolated",
                        calibrate_networks=0)
    assert len(table.meta.reference["archs"]) == 2 and all(v > 0 for v in table.meta.reference_ms())
    again = LatencyTable.load(tmp_path / "m.parquet")
    assert again.meta.reference == table.meta.reference
    archs = [a for _, a in validation_archs(MICRO, 4, 0)]
    measured = measure_networks(table, SlowedBackend(1.5), archs)
    for m in measured:
        assert m.speed == pytest.approx(1.5)  # the references ran 1.5x slower too
        assert m.raw == pytest.approx(m.value * m.speed) and m.raw > m.value
    off = measure_networks(table, fast_backend(), archs, protocol.replace(reference_networks=0))
    assert all(m.speed == 1.0 and m.raw == m.value for m in off)


def test_two_tables_are_compared_at_equal_machine_speed(tmp_path):
    protocol = FAST.replace(reference_networks=1)
    a = build_table(MICRO, fast_backend(), tmp_path / "a.parquet", protocol=protocol, harness="isolated",
                        calibrate_networks=0)
    slow = LatencyTable({p: Timing(**{k: (v * 1.2 if k not in ("count",) else v) for k, v in t.to_dict().items()})
                         for p, t in a.entries.items()},
                        a.meta.__class__(**{**a.meta.to_dict(), "overhead_ms": a.meta.overhead_ms * 1.2,
                                            "reference": {**a.meta.reference,
                                                          "ms": [v * 1.2 for v in a.meta.reference_ms()]}}))
    result = compare_tables(a, slow, num_archs=10)
    assert result["speed_factor"] == pytest.approx(1.2)
    assert result["mape_pct"] == pytest.approx(0.0, abs=1e-9) and result["raw"]["mape_pct"] > 15
    assert result["reference_pooling"] == [QUIET, QUIET]
    unknown = slow.with_meta(reference=None)
    assert compare_tables(a, unknown, num_archs=10)["speed_factor"] == 1.0
    assert Protocol().reference_networks == 4


def test_the_table_keeps_the_reference_speed_of_the_stage_its_predictions_are_anchored_to(tmp_path):
    class StagedSlowdown:
        """A machine whose every call takes 1 ms, 2 ms whenever the clock says "calibration". Deterministic: what is
        tested is which stage each measurement is kept under (real timings of a micro network varied by 1.4x between
        two stages on a loaded CI host; the build below times for real)."""

        def __init__(self):
            self.clock = None

        def sample(self, module, example, protocol):
            slow = 2.0 if self.clock is not None and self.clock.stage == "calibration" else 1.0
            return [slow] * protocol.samples

    from slimnas.latency.modules import network_module

    backend = StagedSlowdown()
    net = network_module(reference_archs(MICRO, 1)[0])
    clock = ReferenceClock([lambda: net], backend, FAST, every_s=3600)
    backend.clock = clock
    for stage in ("isolated", "isolated", "calibration", "calibration"):
        clock.stage = stage
        clock.tick(True)
    alone, calibrated, pooled = clock.latencies("isolated")[0], clock.latencies("calibration")[0], clock.latencies()[0]
    assert (alone, calibrated) == (1.0, 2.0) and alone < pooled < calibrated
    assert clock.has("calibration") and not clock.has("context") and clock.latencies("context") == [pooled]
    # a resumed clock keeps the stage of every earlier measurement
    again = ReferenceClock([lambda: net], backend, FAST, done={0: list(zip(clock.stages[0], clock.samples[0]))})
    assert again.latencies("calibration") == [calibrated]

    # in a build: a calibrated table records the calibration stage's reference speed, a plain one the whole build's
    protocol = FAST.replace(reference_networks=1)
    cal = build_table(MICRO, fast_backend(), tmp_path / "c.parquet", protocol=protocol, harness="isolated",
                      calibrate_networks=4)
    plain = build_table(MICRO, fast_backend(), tmp_path / "p.parquet", protocol=protocol, harness="isolated",
                        calibrate_networks=0)
    assert cal.meta.reference["stage"] == "calibration" and plain.meta.reference["stage"] == "build"
    assert LatencyTable.load(tmp_path / "c.parquet").meta.reference == cal.meta.reference
