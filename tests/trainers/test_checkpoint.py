import random

import numpy as np
import pytest
import torch

from slimnas.errors import InputError
from slimnas.trainers._checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    state = capture_rng()
    path = save_checkpoint({"model": {}, "rng": [state]}, tmp_path / "epoch_0001")
    expected = (torch.rand(3), random.random(), np.random.rand(2))
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    restore_rng(torch.load(path, weights_only=True)["rng"][0])
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1] and np.array_equal(expected[2], again[2])


def test_atomic_writes_latest_and_pruning(tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint({"model": {"w": torch.ones(2) * epoch}}, tmp_path / f"epoch_{epoch:04d}")
    (tmp_path / "epoch_0009").mkdir()  # no checkpoint inside: not a candidate
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch_0003" / "checkpoint.pt"
    assert [p.name for p in (tmp_path / "epoch_0003").iterdir()] == ["checkpoint.pt"]  # no temporary files left
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0002", "epoch_0003", "epoch_0009"]
    assert torch.equal(load_checkpoint(tmp_path / "epoch_0003")["model"]["w"], torch.full((2,), 3.0))
    assert latest_checkpoint(tmp_path / "nowhere") is None


def test_unreadable_or_foreign_checkpoints_name_the_file(tmp_path):
    with pytest.raises(InputError, match="resume: no such file .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt", "resume")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read .*junk.pt as a slimnas checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt is not a slimnas checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"model": {}, "format": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="cannot read .*evil.pt"):  # weights_only refuses pickled objects
        load_checkpoint(tmp_path / "evil.pt")
