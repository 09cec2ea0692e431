"""The training loop in one process on the digits: one epoch, exact resume, alpha warm-up, refusing a wrong resume."""

import pytest
import torch

from slimnas.errors import InputError
from slimnas.search_spaces.efficientformer._channels import channel_groups, channel_importance
from slimnas.testing import FailOnce, tiny_train_config
from slimnas.trainers import CHECKPOINT_FILE, SupernetTrainConfig, train_supernet
from slimnas.trainers._schedule import gumbel_tau


def test_one_epoch_on_digits(tmp_path):
    cfg = SupernetTrainConfig.model_validate(tiny_train_config(
        tmp_path, "one", data={"batch_size": 64}, optim={"lr": 0.05, "warmup_epochs": 0.2},
        run={"max_steps_per_epoch": None}))
    result = train_supernet(cfg)
    (metrics,) = result.history
    assert metrics["steps"] == 1257 // 64 and metrics["images_per_s"] > 0
    assert metrics["val_top1"] > 0.3  # chance is 0.1
    assert metrics["train_loss"] < 2.3 and metrics["tau"] < 5.0
    assert 0 < metrics["alpha_entropy"] < 1.0
    assert result.checkpoint == tmp_path / "one" / "checkpoints" / "epoch_0001" / CHECKPOINT_FILE
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)  # no pickled objects
    assert ckpt["kind"] == "supernet" and ckpt["epoch"] == 1 and ckpt["global_step"] == 19
    assert ckpt["config"] == cfg.model_dump(mode="json") and ckpt["space"]["name"] == "tiny"
    assert ckpt["channels_sorted"] is True and ckpt["history"] == result.history
    (rng,) = ckpt["rng"]
    assert isinstance(rng["torch"], torch.Tensor) and len(rng["python"][1]) == 625 and len(rng["numpy"][1]) == 624
    assert ckpt["scheduler"]["base_values"] == pytest.approx([0.05 * 64 / 1024] * 2)  # lr = base x batch / 1024
    assert [g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]] == [0.025, 0.0]
    (alpha_group,) = ckpt["alpha_optimizer"]["param_groups"]
    assert alpha_group["betas"] == (0.5, 0.999) and alpha_group["weight_decay"] == 1e-3
    for group in channel_groups(result.model)[:3]:  # channels sorted by importance after training
        score = channel_importance(group)
        assert torch.all(score[:-1] >= score[1:] - 1e-9), group.name


def _exact_config(tmp_path, name):
    return tiny_train_config(tmp_path, name, gumbel={"mode": "hard"}, augment={"mixup": 0.5},
                             alpha={"update": "separate_split", "lr": 0.05},
                             optim={"lr": 0.05, "warmup_epochs": 0.5}, run={"epochs": 2})


def test_resume_after_a_crash_continues_exactly(tmp_path):
    straight = train_supernet(_exact_config(tmp_path, "straight"))
    with pytest.raises(RuntimeError, match="injected failure after epoch 1"):
        train_supernet(_exact_config(tmp_path, "resumed"), [FailOnce(1, str(tmp_path / "marker"))])
    resumed = train_supernet(_exact_config(tmp_path, "resumed"))
    assert resumed.resumed_from == 1 and straight.resumed_from == 0
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert any(alpha.abs().max() > 1e-3 for alpha in resumed.model.arch_parameters())  # alpha did train
    timing = {"images_per_s", "epoch_time_s"}
    clean = lambda h: [{k: v for k, v in m.items() if k not in timing} for m in h]
    assert clean(straight.history) == clean(resumed.history)
    total = 6  # two epochs of three steps; tau is set before each step from the finished fraction
    assert straight.history[0]["tau"] == pytest.approx(gumbel_tau(2 / total, 5.0, 0.5))
    assert straight.history[1]["tau"] == pytest.approx(gumbel_tau(5 / total, 5.0, 0.5))


def test_alpha_is_frozen_during_its_warmup(tmp_path):
    frozen = train_supernet(tiny_train_config(tmp_path, "frozen", alpha={"warmup_epochs": 1, "lr": 0.05}))
    moving = train_supernet(tiny_train_config(tmp_path, "moving", alpha={"warmup_epochs": 0, "lr": 0.05}))
    assert all(torch.count_nonzero(a) == 0 for a in frozen.model.arch_parameters())
    assert all(torch.count_nonzero(a) > 0 for a in moving.model.arch_parameters())


def test_resume_refuses_a_checkpoint_of_another_space(tmp_path):
    train_supernet(tiny_train_config(tmp_path, "space"))
    other = {"name": "tiny", "img_size": 64, "max_widths": [32, 64, 96, 112], "slots": [2, 2, 4, 3]}
    with pytest.raises(InputError, match="space: differs from the space of"):
        train_supernet(tiny_train_config(tmp_path, "space", space=other, run={"epochs": 2}))


def test_the_gpu_settings_run_on_cpu_too(tmp_path):
    """bf16 autocast and channels_last (the GPU defaults) through the whole loop, here on the CPU."""
    result = train_supernet(tiny_train_config(tmp_path, "bf16", gumbel={"mode": "hard"},
                                              run={"precision": "bf16", "channels_last": True,
                                                   "max_steps_per_epoch": 2}))
    metrics = result.history[0]
    assert torch.isfinite(torch.tensor(metrics["train_loss"])) and 0 <= metrics["val_top1"] <= 1
    assert next(result.model.parameters()).dtype == torch.float32  # autocast, not a bf16 model
