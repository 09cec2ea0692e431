"""The pipeline's retrain stage on a real (smallest) quickstart: slimming's winner fine-tuned with ``train_arch``, its
top-1 measured on the search's own images, saved so that ``slimnas.load_winner`` loads it, reused, forced, resumed.

Every test reads the session's ``finished_run`` (whose quickstart config retrains slimming's winner for one epoch) or
works on a copy of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from slimnas.platform.cli import main
from slimnas.platform.commands.pipeline import apply_overrides, quickstart_source
from slimnas.platform.pipeline.config import load_pipeline
from slimnas.platform.pipeline.run import run_pipeline
from slimnas.platform.stages.retrain import choose_winners
from slimnas.platform.stages.search import MethodResult
from slimnas.trainers import count_correct, evaluation_data
from slimnas.winners import ModelCard, load_winner

ROOT = Path("runs") / "quickstart"


def _state(cwd: Path) -> dict:
    return json.loads((cwd / ROOT / "pipeline.json").read_text())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "weights.pt", weights_only=True)


def _pairs(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i in range(1, len(argv), 2)]


def test_the_quickstart_fine_tunes_slimmings_winner_and_records_its_top1(finished_run, tmp_path):
    cwd = finished_run.cwd
    state = _state(cwd)
    record = state["stages"]["retrain"]
    assert record["status"] == "ran" and record["wall_s"] > 0 and record["notes"] == []
    [model] = record["models"]
    target = state["stages"]["search"]["targets"][0]
    assert (model["method"], model["target_ms"], model["status"]) == ("slimming", target, "ran")
    assert model["init"] == "supernet" and model["epochs"] == 1
    folder = cwd / model["folder"]
    assert folder == cwd / ROOT / "search" / "retrained" / f"slimming@{target:g}ms"
    assert sorted(p.name for p in folder.iterdir()) == ["arch.json", "model.json", "retrain.json", "weights.pt"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # nothing staged left behind

    net, card = load_winner(folder)
    winner = cwd / ROOT / "search" / "winners" / folder.name
    searched = ModelCard.load(winner / "model.json")
    assert card.arch == searched.arch and card.top1 == searched.top1 == model["top1"]
    assert (card.retrained_top1, card.retrain_init, card.retrain_epochs) == (model["retrained_top1"], "supernet", 1)
    # a real training loop ran: two steps (train.run.max_steps_per_epoch) changed the winner's weights
    info = json.loads((folder / "retrain.json").read_text())
    assert [h["steps"] for h in info["history"]] == [2.0]
    before, after = _weights(winner), net.state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith(".weight"))
    # retrained top-1: what the saved network scores on the search's own validation images
    job = json.loads((cwd / ROOT / "search" / "results.json").read_text())["config"]
    images = evaluation_data(job["data"], card.img_size, job["eval_images"])
    correct, total = count_correct(net, images.val)
    assert correct / total == card.retrained_top1 and total == card.eval_images == model["images"]
    # logged on the pipeline's MLflow run next to the supernet-weight top-1 (read from a copy of the store)
    shutil.copy(cwd / "mlflow.db", tmp_path / "mlflow.db")
    metrics = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(state["mlflow_run_id"]).data.metrics
    assert metrics[f"retrained_top1/slimming/{target:g}ms"] == card.retrained_top1
    assert metrics[f"supernet_top1/slimming/{target:g}ms"] == card.top1 and metrics["retrain_wall_s"] > 0


def test_a_killed_retraining_resumes_and_force_retrains(finished_run, run_copy, capsys):
    """(A second run with the same inputs reuses the retrained winners and writes nothing: test_history.py's
    ``test_a_finished_job_run_again_or_restored_is_a_no_op_that_says_so``.)"""
    [folder] = (run_copy / ROOT / "search" / "retrained").iterdir()
    card_bytes = (folder / "model.json").read_bytes()
    # two epochs now (other inputs): Ctrl-C once epoch 1's checkpoint is written, then the same run again
    pairs = _pairs(finished_run.argv) + ["retrain.epochs=2", "tracking.enabled=false"]
    cfg = load_pipeline(apply_overrides(quickstart_source(), pairs))

    def interrupt(line: str) -> None:
        if line.startswith("[retrain] epoch 1/2 done"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, echo=interrupt)
    staging = folder.with_name(folder.name + ".staging")
    assert (folder / "model.json").read_bytes() == card_bytes  # the earlier retrained winner stays whole
    assert (staging / folder.name / "checkpoints" / "epoch_0001" / "checkpoint.pt").is_file()
    assert _state(run_copy)["attempts"][-1]["status"] == "failed"
    lines: list[str] = []
    run_pipeline(cfg, echo=lines.append)
    assert any("resuming after epoch 1" in line for line in lines), lines
    assert ModelCard.load(folder / "model.json").retrain_epochs == 2 and not staging.exists()
    assert len(json.loads((folder / "retrain.json").read_text())["history"]) == 2
    resumed = _weights(folder)

    # --force retrain: the same two epochs uninterrupted give the same network
    assert main(finished_run.argv + [a for pair in pairs[-2:] for a in ("--set", pair)] + ["--force", "retrain"]) == 0
    out, err = capsys.readouterr()
    assert "[quickstart 4/4] retrain: done, 1 winner(s) retrained, 0 reused" in err
    assert "retrained (fine-tuned from the winners' networks; top-1 on" in out and folder.name in out
    last = _state(run_copy)["attempts"][-1]
    assert last["force"] == ["retrain"] and last["status"] == "finished"
    assert [last["stages"][s]["status"] for s in ("train", "table", "search", "retrain")] == [
        "reused", "reused", "reused", "ran"]
    again = _weights(folder)
    assert all(torch.equal(resumed[k], again[k]) for k in resumed)


def _result(method: str, target: float, top1: float | None, meets: bool | None = True) -> MethodResult:
    arch = None if top1 is None else {"method": method}
    return MethodResult(method, target, arch, 1.0, top1, 5, 1.0, meets_target=meets, images=100)


def test_the_winners_chosen_best_per_target_or_per_method():
    results = [_result("slimming", 2.0, 0.90), _result("random", 2.0, 0.95), _result("tpe", 2.0, 0.95),
               _result("slimming", 1.5, 0.80), _result("random", 1.5, 0.99, meets=False),
               _result("slimming", 1.0, None), _result("random", 1.0, 0.70, meets=False)]
    chosen, notes = choose_winners(results, None)  # best: highest top-1 meeting the target, first on a tie
    assert [(r.method, r.target_ms) for r in chosen] == [("random", 2.0), ("slimming", 1.5)]
    assert notes == ["1 ms: no answer meets the target"]
    chosen, notes = choose_winners(results, ["slimming"])
    assert [(r.method, r.target_ms) for r in chosen] == [("slimming", 2.0), ("slimming", 1.5)]
    assert notes == ["slimming@1ms: no answer"]


def test_retraining_on_ray_train_saves_a_winner_that_scores_what_its_card_says(finished_run, run_copy, capsys,
                                                                               monkeypatch):
    import slimnas.trainers.ray_train as ray_train

    [folder] = (run_copy / ROOT / "search" / "retrained").iterdir()
    winner = run_copy / ROOT / "search" / "winners" / folder.name
    fits = []  # the real Ray Train fit, seen on its way through (the workers train: TorchTrainer on local Ray)

    def seen(cfg, kind="supernet", *args, **kwargs):
        fits.append((kind, cfg.distributed.num_workers))
        return fit(cfg, kind, *args, **kwargs)

    fit = ray_train.fit_on_ray
    monkeypatch.setattr(ray_train, "fit_on_ray", seen)
    extra = ["retrain.ray=true", "tracking.enabled=false"]
    assert main(finished_run.argv + [a for pair in extra for a in ("--set", pair)] + ["--force", "retrain"]) == 0
    assert fits == [("arch", 2)]
    _, err = capsys.readouterr()
    assert "fine-tuned from the search's networks, 1 epoch(s) each on Ray Train" in err
    assert "[quickstart 4/4] retrain: done, 1 winner(s) retrained, 0 reused" in err
    info = json.loads((folder / "retrain.json").read_text())
    assert info["settings"]["train"]["distributed"] == {"enabled": True, "num_workers": 2}
    assert [h["steps"] for h in info["history"]] == [2.0]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # nothing staged left behind
    net, card = load_winner(folder)
    before, after = _weights(winner), net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith(".weight"))
    job = json.loads((run_copy / ROOT / "search" / "results.json").read_text())["config"]
    images = evaluation_data(job["data"], card.img_size, job["eval_images"])
    correct, total = count_correct(net, images.val)
    assert correct / total == card.retrained_top1 and total == card.eval_images
    last = _state(run_copy)["attempts"][-1]
    assert last["status"] == "finished" and last["stages"]["retrain"]["status"] == "ran"
