"""Retraining a found arch (``train_arch``), from scratch and fine-tuned from the supernet's weights."""

import pytest
import torch

from slimnas.errors import InputError
from slimnas.search_spaces.efficientformer import Arch
from slimnas.trainers import ArchTrainConfig, load_checkpoint, model_from_checkpoint, train_arch
from slimnas.trainers._train import _model_from_supernet

ARCH = {"img_size": 64, "widths": [32, 48, 64, 96],
        "blocks": [["4d", "4d"], ["4d", "id"], ["4d", "4d", "id", "id"], ["4d", "3d", "3d"]]}


def _config(tmp_path, name, **extra):
    return {"arch": ARCH, "data": {"batch_size": 16}, "optim": {"lr": 0.05, "warmup_epochs": 0},
            "run": {"name": name, "out_dir": str(tmp_path), "epochs": 1, "max_steps_per_epoch": 3}, **extra}


def test_train_arch_from_scratch(tmp_path):
    result = train_arch(_config(tmp_path, "scratch"))
    assert result.model.arch == Arch.from_dict(ARCH) and 0 <= result.history[0]["val_top1"] <= 1
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["kind"] == "arch" and ckpt["arch"] == ARCH and ckpt["alpha_optimizer"] is None
    again = model_from_checkpoint(result.checkpoint)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(again(x), result.model.eval()(x))


def test_fine_tune_starts_from_the_supernet_weights(tmp_path, trained_supernet):
    supernet, _ = trained_supernet
    cfg = ArchTrainConfig.model_validate(_config(tmp_path, "fine", init="supernet",
                                                 supernet_checkpoint=str(supernet.checkpoint)))
    arch = Arch.from_dict(ARCH)
    model, space = _model_from_supernet(cfg, arch, 10)
    expected = supernet.model.extract(arch).state_dict()
    assert space.name == "tiny" and all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    scratch = train_arch(_config(tmp_path, "scratch-cmp"))
    result = train_arch(cfg)
    assert load_checkpoint(result.checkpoint)["space"]["name"] == "tiny"
    # 3 steps from the supernet's weights beat 3 steps from scratch by far
    assert result.history[0]["val_top1"] > scratch.history[0]["val_top1"] + 0.1


def test_fine_tune_refuses_archs_outside_the_space_and_wrong_checkpoints(tmp_path, trained_supernet):
    supernet, _ = trained_supernet
    wide = {**ARCH, "widths": [32, 48, 64, 144]}
    with pytest.raises(InputError, match="arch: not in the supernet's space"):
        train_arch(_config(tmp_path, "x", arch=wide, init="supernet", supernet_checkpoint=str(supernet.checkpoint)))
    scratch = train_arch(_config(tmp_path, "y"))
    with pytest.raises(InputError, match="supernet_checkpoint: .* is not a supernet checkpoint"):
        train_arch(_config(tmp_path, "z", init="supernet", supernet_checkpoint=str(scratch.checkpoint)))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="supernet_checkpoint: cannot read .*bad.pt"):
        train_arch(_config(tmp_path, "w", init="supernet", supernet_checkpoint=str(bad)))
