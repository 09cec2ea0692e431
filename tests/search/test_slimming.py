import json
from dataclasses import FrozenInstanceError

import pytest

from slimnas.search import SlimmingSearch
from slimnas.search.slimming import Action, RoundCandidate, RoundEntry, TrajectoryStep
from slimnas.search_spaces.efficientformer import Arch
from slimnas.testing import TOY_SPACE as TOY
from slimnas.testing import run_search as run
from slimnas.testing import toy_accuracy, toy_latency

SCORES = [[5.0], [4.0], [1.0, 2.0], [3.0, 0.5]]


def make(targets=16.0, **kw):
    return SlimmingSearch(TOY, TOY.max_arch(), SCORES, toy_latency, targets, **kw)


def test_hand_computed_trajectory():
    # Start: widths 32,32,32,32 (8 ms) + 4 MB4D (8 ms) + 2 MB3D (6 ms) = 22 ms; accuracy 70 + 6 + 6 + 2 = 84.
    # Round 1 (paper): MetaPath 4.1 -> id (least important, 0.5): 19 ms, 81     -> drop 3 / 3 ms = 1.0
    #                  first MB3D (4.0) -> MB4D:                     21 ms, 82.5   -> 1.5 / 1 = 1.5
    #                  stage 3 width -16 (stage scores 5, 4, 3, 3.5): 21 ms, 83.75 -> 0.25 / 1 = 0.25   <- chosen
    # Round 2: stage 3 is at 16 (minimum), so the least important reducible stage is 4 (3.5): 20 ms, 83.5 <- chosen
    # Round 3: stage 2 (4) -> 19 ms. Round 4: stage 1 -> 18 ms.
    # Round 5: no width left; id 4.1 costs 3 / 3 = 1.0, MB3D -> MB4D 1.5 / 1 = 1.5: id chosen -> 15 ms <= 16: stop.
    search = run(make())
    steps = search.trajectory
    assert [s.latency_ms for s in steps] == [22, 21, 20, 19, 18, 15]
    assert [s.accuracy for s in steps] == [84, 83.75, 83.5, 83.25, 83.0, 80.0]
    assert [s.action and str(s.action) for s in steps] == [
        None, "stage 3 width -16", "stage 4 width -16", "stage 2 width -16", "stage 1 width -16",
        "MetaPath 4.1 -> identity"]
    first = {str(c.action): round(c.score, 6) for c in steps[1].candidates}
    assert first == {"MetaPath 4.1 -> identity": 1.0, "first MB3D (4.0) removed": 1.5, "stage 3 width -16": 0.25}
    assert search.evaluations == 1 + 4 * 3 + 2 and search.stop_reason == "target met"  # round 5: no width action
    final = steps[-1].arch
    assert final.widths == (16, 16, 16, 16) and final.blocks[3] == ("3d", "id")


def test_paper_mode_proposes_exactly_the_three_actions():
    search = make()
    actions = search.actions(TOY.max_arch())
    assert [a.kind for a in actions] == ["identity", "remove_mb3d", "width"]
    assert actions == [Action("identity", 3, 1), Action("remove_mb3d", 3, 0), Action("width", 2)]
    extended = make(mode="extended").actions(TOY.max_arch())
    assert len(extended) == 4 + 1 + 4  # 4 removable MetaPaths (stages 3-4), first MB3D, 4 widths
    # once no MB3D is left and every width is at its minimum, only the identity action remains
    arch = Arch(32, (16,) * 4, (("4d",), ("4d",), ("4d", "4d"), ("4d", "4d")))
    assert [a.kind for a in search.actions(arch)] == ["identity"]


def test_mb3d_removal_option_and_tie_breaking():
    search = make(mb3d_removal="to_identity")
    arch = search.apply(TOY.max_arch(), Action("remove_mb3d", 3, 0))
    assert arch.blocks[3] == ("id", "3d")
    to4d = make().apply(TOY.max_arch(), Action("remove_mb3d", 3, 0))
    assert to4d.blocks[3] == ("4d", "3d")
    # a flat accuracy makes every score 0: the first listed action wins (identity before MB3D before width)
    flat = run(make(), evaluate=lambda arch: 50.0)
    assert flat.trajectory[1].action.kind == "identity"


def test_a_sweep_from_one_trajectory_equals_separate_runs():
    targets = [21.0, 19.5, 18.0, 16.0]
    sweep = run(make(targets)).sweep()
    for target in targets:
        alone = run(make(target))
        expected = alone.trajectory[-1]
        got = sweep[target]
        assert got.arch == expected.arch and got.accuracy == expected.accuracy
        assert got.latency_ms <= target


def test_state_round_trip_mid_round_gives_the_same_result():
    reference = run(make())
    search = make()
    asked = search.ask()
    search.tell(asked[0].id, toy_accuracy(asked[0].arch))
    round1 = search.ask()
    search.tell(round1[0].id, toy_accuracy(round1[0].arch))  # one of three results in
    state = json.loads(json.dumps(search.state_dict()))  # JSON-ready
    resumed = make()
    resumed.load_state_dict(state)
    assert [c.id for c in resumed.outstanding()] == [c.id for c in round1[1:]]
    for candidate in resumed.outstanding():
        resumed.tell(candidate.id, toy_accuracy(candidate.arch))
    run(resumed)
    assert resumed.trajectory == reference.trajectory and resumed.evaluations == reference.evaluations


def test_trajectory_steps_and_round_entries_are_typed_records_with_a_json_round_trip():
    search = run(make(mode="extended"))
    for step in search.trajectory:
        assert isinstance(step, TrajectoryStep) and isinstance(step.arch, Arch)
        assert TrajectoryStep.from_dict(json.loads(json.dumps(step.to_dict()))) == step
    table = search.trajectory[1].candidates
    assert len(table) == 9 and all(isinstance(c, RoundCandidate) for c in table)
    assert min(table, key=lambda c: c.score).arch == search.trajectory[1].arch
    with pytest.raises(FrozenInstanceError):
        search.trajectory[0].latency_ms = 0.0
    mid = make()
    mid.tell(mid.ask()[0].id, 84.0)
    asked = mid.ask()  # round 1 asked, one result told: the round's entries are half filled
    mid.tell(asked[0].id, 83.0)
    state = json.loads(json.dumps(mid.state_dict()))
    entries = [RoundEntry.from_dict(e) for e in state["round_entries"]]
    assert [e.accuracy for e in entries] == [83.0, None, None] and entries[0].candidate_id == asked[0].id
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state


def test_stops_when_nothing_saves_latency_or_the_budget_ends():
    search = run(make(targets=1.0))
    assert search.stop_reason == "no action saves latency"
    assert search.trajectory[-1].latency_ms > 1.0 and search.answer(1.0) is None
    capped = run(make(budget=7))
    assert capped.evaluations <= 7 and capped.stop_reason.startswith("budget exhausted")


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        make(mode="greedy")
    with pytest.raises(ValueError, match="importance"):
        SlimmingSearch(TOY, TOY.max_arch(), [[1.0]], toy_latency, 10.0)
    with pytest.raises(ValueError, match="targets"):
        make(targets=[])
    with pytest.raises(ValueError, match="candidate_id"):
        make().tell(99, 1.0)


def test_start_arch_reads_the_mb3d_split_from_alpha():
    from slimnas.search import start_arch
    from slimnas.search_spaces.efficientformer import importance_from_alphas

    # stage 4 (2 slots): slot 0 prefers 3d, slot 1 prefers 3d -> both MB3D; stage 3: slot 0 4d, slot 1 3d -> 4d 3d
    alphas = [[[0.0, 0.0]], [[0.0, 0.0]], [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 3.0, 0.0], [0.0, 2.0, 0.0]]]
    imp = importance_from_alphas(TOY.kinds, alphas)
    arch = start_arch(TOY, imp)
    assert arch.blocks == (("4d",), ("4d",), ("4d", "3d"), ("3d", "3d")) and arch.widths == TOY.max_widths
    # a 3d-then-4d preference cannot be a valid arch: the best valid split is chosen
    alphas[2] = [[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]]
    assert start_arch(TOY, importance_from_alphas(TOY.kinds, alphas)).blocks[2] in (("4d", "4d"), ("3d", "3d"))
    assert start_arch(TOY, imp, start="max") == TOY.max_arch()


def test_paper_mode_skips_a_least_important_stage_whose_cut_saves_nothing():
    def flat_stage3(archs):  # stage 3's width costs nothing in this table (a non-monotonic, noisy table)
        return [t - archs[i].widths[2] // 16 for i, t in enumerate(toy_latency(archs))]

    search = SlimmingSearch(TOY, TOY.max_arch(), SCORES, flat_stage3, 16.0)
    actions = search.actions(TOY.max_arch(), flat_stage3([TOY.max_arch()])[0])
    assert Action("width", 3) in actions and Action("width", 2) not in actions  # stage 4 is next least important
    assert [a.kind for a in search.actions(TOY.max_arch())] == ["identity", "remove_mb3d", "width"]
