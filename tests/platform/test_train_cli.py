"""``slimnas train-supernet`` / ``train-arch``: progress output, a JSON summary, one-line errors with exit 2."""

import json
import subprocess
import sys

import pytest
import yaml

from slimnas.platform.cli import main
from slimnas.testing import tiny_train_config


def _write(tmp_path, name, data):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def supernet_run(tmp_path_factory):
    """``slimnas train-supernet`` as a user runs it, in a fresh interpreter."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg = tiny_train_config(tmp / "runs", "cli", run={"max_steps_per_epoch": 2, "log_every": 1})
    path = _write(tmp, "supernet", cfg)
    proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", "train-supernet", "--config", str(path)],
                          capture_output=True, text=True, timeout=300)
    return tmp, proc


def test_train_supernet_command(supernet_run):
    tmp, proc = supernet_run
    assert proc.returncode == 0, proc.stderr
    assert "[train-supernet] supernet run 'cli': space tiny; 1 epochs x 2 steps" in proc.stdout
    assert "[train-supernet]   step 2 (epoch 1.00) loss" in proc.stdout
    assert "[train-supernet] epoch 1/1 done | loss" in proc.stdout and "val top-1" in proc.stdout
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["epochs"] == 1 and summary["checkpoint"].endswith("cli/checkpoints/epoch_0001/checkpoint.pt")
    assert 0 <= summary["metrics"]["val_top1"] <= 1
    assert "Traceback" not in proc.stderr


def test_train_arch_command_fine_tunes_from_the_supernet(supernet_run, tmp_path, capsys):
    tmp, proc = supernet_run
    checkpoint = json.loads(proc.stdout[proc.stdout.index("{"):])["checkpoint"]
    arch = {"img_size": 64, "widths": [16, 32, 48, 64], "blocks": [["4d", "id"], ["4d", "id"],
                                                                   ["4d", "id", "id", "id"], ["4d", "3d", "id"]]}
    cfg = {"arch": arch, "init": "supernet", "supernet_checkpoint": checkpoint, "data": {"batch_size": 16},
           "optim": {"warmup_epochs": 0}, "run": {"name": "arch", "out_dir": str(tmp_path), "epochs": 1,
                                                  "max_steps_per_epoch": 2}}
    path = _write(tmp_path, "arch", cfg)
    assert main(["train-arch", "--config", str(path), "--check"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert main(["train-arch", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[train-arch] arch run 'arch'" in out and (tmp_path / "arch" / "checkpoints" / "epoch_0001").is_dir()


@pytest.mark.parametrize(
    "command, data, needle",
    [
        ("train-supernet", {"optim": {"lr": "fast"}}, "optim.lr: Input should be a valid number"),
        ("train-supernet", {"data": {"kind": "parquet", "path": "/no/shards"}},
         "data.path: no such file or directory /no/shards/train"),
        ("train-supernet", {"data": {"kind": "imagefolder", "path": "/no/images"}},
         "data.path: no such directory /no/images/train"),
        ("train-supernet", {"distill": {"enabled": True, "teacher_model": "test_resnet",
                                        "teacher_weights": "/no/teacher.pth"}},
         "distill.teacher_weights: no such file /no/teacher.pth"),
        ("train-supernet", {"model": {"timm_weights": "/no/l1.pth"}}, "model.timm_weights: no such file /no/l1.pth"),
        ("train-arch", {"arch": "l1", "init": "supernet", "supernet_checkpoint": "/no/ckpt.pt"},
         "supernet_checkpoint: no such file /no/ckpt.pt"),
        ("train-arch", {"arch": "l9"}, "arch: Value error, no such file l9"),
        ("train-supernet", None, "config: no such file"),
    ],
)
def test_bad_configs_and_paths_are_one_line_and_exit_2(command, data, needle, tmp_path, capsys):
    path = tmp_path / "missing.yaml" if data is None else _write(tmp_path, "bad", data)
    assert main([command, "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert err[0].startswith(f"slimnas {command}: error: ")
