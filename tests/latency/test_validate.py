import random

import numpy as np
import pytest
from scipy.stats import kendalltau

from slimnas.errors import InputError
from slimnas.latency import CalibratedPredictor, LatencyTable, Timing
from slimnas.latency.predictor import fit_part_calibration
from slimnas.latency.protocol import needs_more, unsettled_reason
from slimnas.latency.validate import error_metrics, kendall_tau, validate_measured, validate_table, validation_archs
from slimnas.search_spaces.efficientformer import SearchSpace

from .conftest import FAST, fast_backend

TINY = SearchSpace.preset("tiny")


def test_kendall_tau_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 6, 30), rng.integers(0, 6, 30)
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_error_metrics_by_hand():
    m = error_metrics([11.0, 9.5, 10.0, 13.0], [10.0, 10.0, 10.0, 10.0])
    assert m["mape_pct"] == pytest.approx((10 + 5 + 0 + 30) / 4)
    assert m["max_abs_error_pct"] == pytest.approx(30.0)
    assert m["within_5pct"] == pytest.approx(0.5) and m["within_10pct"] == pytest.approx(0.75)


def test_validation_archs_are_distinct_and_include_contained_presets():
    l7 = SearchSpace.preset("l7")
    named = validation_archs(l7, 10, seed=3)
    assert [n for n, _ in named[:3]] == ["l1", "l3", "l7"]
    assert len({a.structure_key() for _, a in named}) == 13
    assert [n for n, _ in validation_archs(TINY, 4, 0)] == [f"random-{i}" for i in range(4)]


def test_calibration_recovers_known_corrections(tiny_table):
    rng = random.Random(0)
    archs = [TINY.sample(rng) for _ in range(40)]
    x = CalibratedPredictor(tiny_table).features(archs)
    truth = np.array([1.0, 1.2, 1.5, 0.8, 1.0, 1.1])
    measured = x @ truth + 0.05
    fitted = CalibratedPredictor(tiny_table).fit(archs, measured, ridge=1e-6)
    # a group every network has in the same amount (the stem, the head) is not identifiable apart from the intercept:
    # its coefficient trades against it (ridge pulls it towards the prior 1.0), so only the others are compared; a
    # group that varies little is nearly so (its coefficient measured 2.2-2.5% off on some timed tables): 5%
    varies = x.std(axis=0) > 1e-9 * np.abs(x).max()
    assert varies.sum() >= 4
    np.testing.assert_allclose(np.array(list(fitted.coef.values()))[varies], truth[varies], rtol=0.05)
    np.testing.assert_allclose(fitted.predict_many(archs), measured, rtol=1e-3)


def test_part_calibration_recovers_per_part_corrections_that_groups_cannot(tiny_table, tmp_path):
    """Each part runs inside networks at its own factor of its entry (as ONNX Runtime's parts do): the per-part fit
    predicts held-out networks exactly, the per-group fit on the same networks cannot, and the table stores and
    reloads it with predict, predict_many and contributions agreeing."""
    rng = random.Random(1)
    archs = list({a.structure_key(): a for a in (TINY.sample(rng) for _ in range(400))}.values())[:300]
    factor = {p: 0.8 + 0.45 * random.Random(str(p)).random() for p in tiny_table.entries}
    measured = np.array([sum(v * factor[p] for p, v in tiny_table.contributions(a)[0]) + 0.02 for a in archs])
    fit, held = slice(0, 250), slice(250, 300)
    cal = fit_part_calibration(tiny_table, archs[fit], measured[fit], ridge=1e-9) | {"networks": 250}
    table = tiny_table.with_meta(calibration=cal)
    np.testing.assert_allclose(table.predict_many(archs[held]), measured[held], rtol=1e-3)
    groups = CalibratedPredictor(tiny_table).fit(archs[fit], measured[fit], ridge=1e-6)
    assert np.mean(np.abs(groups.predict_many(archs[held]) / measured[held] - 1)) > 0.01
    assert {tuple(r[:4]) for r in cal["parts"]} == {(p.kind, p.stage, p.c_in, p.c_out) for a in archs[fit]
                                                    for p in tiny_table.parts(a)}
    table.save(tmp_path / "per-part.parquet")
    again = LatencyTable.load(tmp_path / "per-part.parquet")
    assert again.meta.calibration == cal and "calibrated per part on 250 networks" in again.meta.describe()
    for arch in archs[held][:5]:
        parts, constant = again.contributions(arch)
        assert again.predict(arch) == pytest.approx(sum(v for _, v in parts) + constant)
        assert again.predict(arch) == pytest.approx(float(table.predict_many([arch])[0]))
    with pytest.raises(ValueError, match="calibrated already"):
        fit_part_calibration(table, archs[fit], measured[fit])


def test_calibration_save_load_is_tied_to_its_table(tiny_table, tmp_path):
    cal = CalibratedPredictor(tiny_table, {"mb4d": 1.3}, 0.1)
    path = cal.save(tmp_path / "cal.json")
    again = CalibratedPredictor.load(path, tiny_table)
    assert again.coef == cal.coef and again.predict(TINY.max_arch()) == pytest.approx(cal.predict(TINY.max_arch()))
    with pytest.raises(InputError, match="other settings"):
        CalibratedPredictor.load(path, tiny_table.with_meta(batch=8))


def test_validate_table_end_to_end_writes_csv_png_json(tiny_table, tmp_path):
    report = validate_table(tiny_table, fast_backend(), num_archs=8, seed=0, calibrate_fraction=0.5, protocol=FAST)
    assert report.summary["plain_all"]["n"] == 8
    assert {r.split for r in report.rows} == {"fit", "holdout"}
    assert report.calibration is not None and report.summary["calibrated_holdout"]["n"] == 4
    for r in report.rows:
        assert r.predicted_ms == pytest.approx(tiny_table.predict(r.arch))
        m = r.measured
        assert r.measured_ms == pytest.approx(m.timing.median / m.speed) and m.raw == m.timing.median > 0
        # one speed for the session; real timings on a shared host (the table was built with 2 passes of 3 calls,
        # and a CI host once read 0.47 here while another job ran), so only a sanity bound
        assert m.speed == report.summary["measurement"]["speed_factor"] and 0.2 < m.speed < 5
        assert m.passes + m.disturbed >= 2
        low, high = r.measured.pass_range()
        assert low <= high
    paths = report.write(tmp_path / "v")
    csv_lines = paths["csv"].read_text().splitlines()
    assert csv_lines[0].startswith("name,split,predicted_ms,calibrated_ms,measured_median_ms") and len(csv_lines) == 9
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["calibration"].is_file()


def test_validate_refuses_another_backend_or_thread_count(tiny_table):
    from slimnas.latency.backends import ONNXRuntimeBackend

    with pytest.raises(InputError, match="measured with 'torch-cpu'"):
        validate_table(tiny_table, ONNXRuntimeBackend(), num_archs=1)
    with pytest.raises(InputError, match="threads"):
        validate_table(tiny_table, fast_backend().__class__(threads=2), num_archs=1)
    assert tiny_table.meta.options == {"allocator": "tuned"}
    with pytest.raises(InputError, match="allocator"):
        validate_table(tiny_table, fast_backend().__class__(threads=1, allocator="default"), num_archs=1)


def test_an_onnxruntime_table_is_measured_in_the_layout_it_was_built_in():
    from slimnas.latency.backends import ONNXRuntimeBackend, table_options
    from slimnas.latency.table import TableMeta
    from slimnas.latency.validate import backend_for, check_backend_matches

    def table(backend) -> LatencyTable:  # an empty table's metadata as a build on ``backend`` records it
        return LatencyTable({}, TableMeta(backend=backend.name, device="cpu", batch=1, dtype="float32", img_size=64,
                                          threads=1, space=SearchSpace.preset("tiny").to_dict(), form="eager",
                                          options=table_options(backend)))

    blocked = table(ONNXRuntimeBackend(threads=1, layout="blocked"))
    assert blocked.meta.options == {"provider": "cpu", "layout": "blocked"}
    assert backend_for(blocked).layout == "blocked"
    with pytest.raises(InputError, match="layout: the table was measured with layout 'blocked', the backend has "
                                         "'plain'"):
        check_backend_matches(blocked, ONNXRuntimeBackend(threads=1))
    # a table from before the setting records no layout, and was timed in the plain one
    old = table(ONNXRuntimeBackend(threads=1))
    old.meta.options.pop("layout")
    assert backend_for(old).layout == "plain"
    check_backend_matches(old, ONNXRuntimeBackend(threads=1))


def test_validate_measured_without_calibration(tiny_table):
    rng = random.Random(2)
    archs = [TINY.sample(rng) for _ in range(5)]
    measured = [(f"random-{i}", a, Timing.from_samples([tiny_table.predict(a) * 1.05] * 3))
                for i, a in enumerate(archs)]
    report = validate_measured(tiny_table, measured)
    assert report.calibration is None  # too few networks to hold some out
    assert report.summary["plain_all"]["within_5pct"] == pytest.approx(1.0)
    assert isinstance(tiny_table, LatencyTable)


def test_compare_tables_reports_repeatability(tiny_table):
    from slimnas.latency.validate import compare_tables

    same = compare_tables(tiny_table, tiny_table, num_archs=30, seed=1)
    assert same["archs"] == 30 and same["mape_pct"] == 0 and same["kendall_tau"] == pytest.approx(1.0)
    slower = LatencyTable({p: Timing(**{**t.to_dict(), "median": t.median * 1.05}) for p, t in
                           tiny_table.entries.items()}, tiny_table.meta.__class__(**{**tiny_table.meta.to_dict(),
                                                                                      "overhead_ms": 0.0}))
    off = compare_tables(slower, tiny_table.with_meta(overhead_ms=0.0), num_archs=30, seed=1)
    assert off["mape_pct"] == pytest.approx(5.0) and off["within_10pct"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="different search spaces"):
        compare_tables(tiny_table, tiny_table.with_meta(space=SearchSpace.preset("l1").to_dict()))


def test_validation_refuses_a_protocol_with_another_statistic(tiny_table):
    with pytest.raises(InputError, match="predicts the median"):
        validate_table(tiny_table, fast_backend(), num_archs=1, protocol=FAST.replace(statistic="p10"))
    with pytest.raises(InputError, match="num_archs"):
        validate_table(tiny_table, fast_backend(), num_archs=-1)


class _SpellBackend(type(fast_backend())):
    """Real networks, made-up timings: the first ``spell`` calls alternate 1 ms and ``slow`` ms, every later call
    takes 1 ms. With 1.5 ms the machine is disturbed for the whole session (no pass agrees with the item's median);
    with 1.12 ms every pass is within the 10% tolerance of its item's median, so none is disturbed, but each item's
    passes spread by 12%."""

    def __init__(self, spell: int, slow: float = 1.5) -> None:
        super().__init__(threads=1)
        self.spell, self.slow, self.calls = spell, slow, 0

    def sample(self, module, example, protocol):
        self.calls += 1
        return [self.slow if self.calls <= self.spell and self.calls % 2 == 0 else 1.0] * protocol.samples


def test_a_session_disturbed_throughout_is_measured_again(tiny_table, monkeypatch):
    import slimnas.latency.validate as validate

    monkeypatch.setattr(validate, "SETTLE_PAUSE_S", 0.0)
    archs = [a for _, a in validation_archs(TINY, 3, seed=0)][:3]
    protocol = FAST.replace(passes=4, extra_passes=2, reference_networks=0)
    session = 3 * (4 + 2)  # every network gets its two extra passes and is still unsettled
    measured = validate.measure_networks(tiny_table, _SpellBackend(session), archs, protocol)
    assert [m.attempts for m in measured] == [2] * 3 and [m.value for m in measured] == [1.0] * 3
    assert [m.unsettled for m in measured] == [""] * 3  # the retry was settled
    assert not any(needs_more(m) for m in measured)
    # without retries the disturbed session stands, and says so
    alone = validate.measure_networks(tiny_table, _SpellBackend(session), archs, protocol.replace(settle_retries=0))
    assert [m.attempts for m in alone] == [1] * 3 and all(needs_more(m) for m in alone)
    assert unsettled_reason(alone) == "3 of 3 still had over a quarter of their passes disturbed after the extra passes"
    # disturbed in every attempt: the first of the equally bad attempts is kept, after two retries
    spell = _SpellBackend(10 * session)
    always = validate.measure_networks(tiny_table, spell, archs, protocol)
    assert spell.calls == 3 * session and [m.attempts for m in always] == [3] * 3
    report = validate_measured(tiny_table, [(f"n{i}", a, m) for i, (a, m) in enumerate(zip(archs, always))], 0.0)
    assert report.summary["measurement"]["attempts"] == 3
    # and the kept attempt says it was still disturbed, so that what reports it can say so
    reason = "3 of 3 still had over a quarter of their passes disturbed after the extra passes"
    assert [m.unsettled for m in always] == [reason] * 3 and report.summary["measurement"]["unsettled"] == reason
    assert report.summary["measurement"]["unsettled_networks"] == 3


def test_a_session_whose_passes_spread_wider_than_its_machine_usually_does_is_measured_again(tiny_table, monkeypatch):
    import slimnas.latency.validate as validate
    from slimnas.latency.protocol import session_spread, spread_limit, unsettled

    monkeypatch.setattr(validate, "SETTLE_PAUSE_S", 0.0)
    archs = [a for _, a in validation_archs(TINY, 3, seed=0)][:3]
    protocol = FAST.replace(passes=4, extra_passes=2, reference_networks=0)
    session = 3 * 4  # no pass is disturbed, so no extra passes
    # a table whose build saw whole networks' passes spread by 5%: the limit is the tolerance, 10%
    table = tiny_table.with_meta(notes={**tiny_table.meta.notes, "network_pass_spread": 0.05})
    assert spread_limit(protocol, 0.05) == pytest.approx(0.10) and spread_limit(protocol, 0.10) == pytest.approx(0.15)
    once = protocol.replace(settle_retries=0)
    alone = validate.measure_networks(table, _SpellBackend(session, slow=1.12), archs, once)
    assert not any(needs_more(m) for m in alone) and session_spread(alone) == pytest.approx(0.12)
    assert unsettled(alone, protocol, 0.05) and not unsettled(alone) and not unsettled(alone, protocol, 0.10)
    assert unsettled_reason(alone, protocol, 0.05) == ("their passes spread by 12.0% at the median, beyond 10.0% "
                                                       "(1.5 times the 5.0% of the table's build)")
    report = validate_measured(table, [(f"n{i}", a, m) for i, (a, m) in enumerate(zip(archs, alone))], 0.0)
    assert report.summary["measurement"]["median_pass_spread_pct"] == pytest.approx(12.0)
    wide = _SpellBackend(session, slow=1.12)
    again = validate.measure_networks(table, wide, archs, protocol)
    assert wide.calls == 2 * session and [m.attempts for m in again] == [2] * 3  # the settled second attempt kept
    assert session_spread(again) == 0 and [m.value for m in again] == [1.0] * 3
    # on a machine whose passes usually spread by 10%, 12% is its normal; a table without the note is not judged by
    # its spread; nor is a protocol of too few passes to judge a spread by (the suite's fast protocol)
    assert "network_pass_spread" not in tiny_table.meta.notes  # parts timed alone, no whole network timed
    for other, passes in ((tiny_table.with_meta(notes={"network_pass_spread": 0.10}), 4), (tiny_table, 4),
                          (table, 2)):
        calls = 3 * passes
        backend = _SpellBackend(calls, slow=1.12)
        measured = validate.measure_networks(other, backend, archs, protocol.replace(passes=passes))
        assert backend.calls == calls and [m.attempts for m in measured] == [1] * 3
