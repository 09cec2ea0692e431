"""Ray Train: two DDP workers on the digits, an injected worker crash, a whole-job restart, identical alpha."""

import functools

import pytest
import ray
import torch

from slimnas.testing import FailOnce, RankRecorder, tiny_train_config
from slimnas.trainers import SupernetTrainConfig, load_checkpoint
from slimnas.trainers.ray_train import TrainingFailed, fit_on_ray, run_config, scaling_config


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False)
    yield
    ray.shutdown()


def test_scaling_and_run_config_come_from_the_config(tmp_path):
    cfg = SupernetTrainConfig.model_validate({"run": {"name": "r", "out_dir": str(tmp_path)}, "distributed": {
        "num_workers": 4, "use_gpu": True, "cpus_per_worker": 6, "accelerator_type": "A100", "max_failures": 3}})
    scaling = scaling_config(cfg.distributed)
    assert (scaling.num_workers, scaling.use_gpu, scaling.accelerator_type) == (4, True, "A100")
    assert scaling.resources_per_worker == {"CPU": 6, "GPU": 1}
    labelled = cfg.distributed.model_copy(update={"accelerator_type": None, "label_selector": {"gpu-type": "V100"}})
    assert scaling_config(labelled).label_selector == {"gpu-type": "V100"}
    run = run_config(cfg)
    assert (run.name, run.storage_path, run.failure_config.max_failures) == ("r", str(tmp_path), 3)
    assert run.checkpoint_config.num_to_keep == cfg.run.keep_checkpoints


@pytest.mark.slow
def test_two_workers_resume_after_failures_and_end_with_identical_alpha(tmp_path, local_ray):
    cfg = tiny_train_config(
        tmp_path / "storage", "job", gumbel={"mode": "hard"}, alpha={"lr": 0.05},
        run={"epochs": 3, "log_every": 1, "eval_every": 3, "keep_checkpoints": 3},
        distributed={"enabled": True, "num_workers": 2, "max_failures": 1})
    record = str(tmp_path / "record")
    crash_rank1_after_epoch1 = functools.partial(FailOnce, 1, str(tmp_path / "m1"), rank=1, hard=True)
    raise_rank0_after_epoch2 = functools.partial(FailOnce, 2, str(tmp_path / "m2"), rank=0)
    recorder = functools.partial(RankRecorder, record)
    # The worker crash after epoch 1 is retried (max_failures=1); the failure after epoch 2 ends the job.
    with pytest.raises(TrainingFailed, match="injected failure after epoch 2 on rank 0"):
        fit_on_ray(cfg, "supernet", [crash_rank1_after_epoch1, raise_rank0_after_epoch2, recorder])
    stored = load_checkpoint(tmp_path / "storage" / "job" / "epoch_0002")  # checkpoints live in the run's storage
    assert stored["epoch"] == 2 and stored["global_step"] == 6 and len(stored["rng"]) == 2
    # Running the same job again continues at epoch 3.
    result = fit_on_ray(cfg, "supernet", [recorder])
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0] and result.epochs == 3
    assert "val_top1" in result.history[-1]
    for rank in (0, 1):  # fresh start, resume after the worker crash, resume after the job restart
        assert (tmp_path / "record" / f"starts-rank{rank}.txt").read_text().split() == ["0", "1", "2"]
    ends = {int(p.name[4]): torch.load(p, weights_only=False) for p in (tmp_path / "record").glob("rank*-*.pt")}
    assert sorted(ends) == [0, 1]
    assert ends[0]["stored_checkpoint"] == str(tmp_path / "storage" / "job" / "epoch_0003" / "checkpoint.pt")
    assert ends[0]["stored_checkpoint"] == str(result.checkpoint)
    alpha0, alpha1 = ends[0]["alpha"], ends[1]["alpha"]
    assert all(torch.equal(a, b) for a, b in zip(alpha0, alpha1))  # bitwise identical on both ranks
    assert any(a.abs().max() > 1e-3 for a in alpha0)  # and alpha did train
    assert all(torch.equal(v, ends[1]["weights"][k]) for k, v in ends[0]["weights"].items())
    assert ends[0]["samples"] == ends[1]["samples"]  # the same paths at every step
    sampled = [kind for _, sample in ends[0]["samples"] for stage in sample for kind in stage]
    assert {"4d", "id"} <= set(sampled)
    final = [a.detach() for a in result.model.arch_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(final, alpha0))
