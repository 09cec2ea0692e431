"""The printed comparison of a search job: top-1's Wilson interval and the best answer per target. Plain Python."""

import pytest
from scipy.stats import binomtest

from slimnas.platform.stages.comparison import Interval, best_marks, wilson_interval
from slimnas.platform.stages.search import MethodResult, SearchJobResult
from slimnas.testing import TOY_SPACE


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Stat. Med. 17:857, table I: the Wilson score interval
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (29, 29, 0.8830, 1.0),
])
def test_the_wilson_interval_matches_published_values(k, n, low, high):
    band = wilson_interval(k / n, n)
    assert band.low == pytest.approx(low, abs=1e-4) and band.high == pytest.approx(high, abs=1e-4)


def test_the_wilson_interval_matches_scipy_and_narrows_with_more_images():
    for n in (7, 64, 200, 256, 1000):
        for k in (0, 1, n // 3, n // 2, n - 1, n):
            ours = wilson_interval(k / n, n)
            theirs = binomtest(k, n).proportion_ci(0.95, method="wilson")
            assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=1e-9)
    assert wilson_interval(0.9, 1000).high - wilson_interval(0.9, 1000).low < \
        wilson_interval(0.9, 100).high - wilson_interval(0.9, 100).low
    for bad in ((0.5, 0), (1.5, 10), (-0.1, 10)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def _result(method, target, top1, meets=True, images=256):
    arch = TOY_SPACE.max_arch().to_dict()
    return MethodResult(method, target, arch, target * 0.95, top1, 12, 3.0, measured_ms=target * 0.97,
                        meets_target=meets, verification={True: "met", False: "not met", None: "off"}[meets],
                        images=images)


def test_the_best_per_target_is_marked_and_ties_within_noise_too():
    results = [
        _result("slimming", 2.0, 240 / 256),  # the best at 2.0
        _result("random", 2.0, 232 / 256),  # 8 images fewer: intervals overlap -> within noise
        _result("tpe", 2.0, 180 / 256),  # far below: no mark
        _result("nsga2", 2.0, 250 / 256, meets=False),  # higher, but misses the target: never the best
        _result("slimming", 1.5, 200 / 256),
        _result("random", 1.5, 200 / 256),  # a tie at the top: both best
        _result("tpe", 1.5, None),  # no answer
        _result("slimming", 1.0, 0.5, meets=None),  # not measured (verification off): judged by its prediction
        _result("random", 1.0, 0.7, meets=None),
    ]
    assert best_marks(results) == ["*", "~", "", "", "*", "*", "", "", "*"]
    band = results[0].top1_interval()
    assert isinstance(band, Interval) and band.overlaps(results[1].top1_interval())
    assert not band.overlaps(results[2].top1_interval())
    # without the image count there is no interval: the best is still marked, nothing is called within noise
    unknown = [_result("slimming", 2.0, 0.95, images=None), _result("random", 2.0, 0.94, images=None)]
    assert best_marks(unknown) == ["*", ""]


def test_the_table_gives_each_target_its_block_with_intervals_and_a_legend(tmp_path):
    results = [_result("slimming", 1.5, 200 / 256), _result("slimming", 2.0, 240 / 256),
               _result("random", 1.5, 190 / 256), _result("random", 2.0, 150 / 256, meets=False)]
    text = SearchJobResult({}, results, {}, {}, str(tmp_path)).table_text()
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:5] == ["method", "target", "pred", "ms", "meas"] and "95%" in header and "best" in header
    # the loosest target first, a blank line between targets, the methods in the job's order
    assert [line.split()[:2] for line in lines[1:6] if line] == [["slimming", "2.00"], ["random", "2.00"],
                                                                 ["slimming", "1.50"], ["random", "1.50"]]
    assert lines[3] == ""
    slim2 = lines[1]
    assert "[0.901, 0.961]" in slim2 and slim2.split()[slim2.split().index("[0.901,") + 2] == "*"
    assert " NO " in lines[2] and "*" not in lines[2].split()
    assert lines[5].split()[lines[5].split().index("[0.685,") + 2] == "~"  # 190 vs 200 of 256: within noise
    legend = lines[-1]
    assert legend.startswith("best: * the highest top-1") and "~ within noise" in legend
    assert "95% Wilson intervals of top-1 on 256 validation images overlap" in legend
