"""Shared fixture: one supernet trained on the digits for a few steps (evaluation and fine-tuning tests)."""

from __future__ import annotations

import pytest

from slimnas.testing import tiny_train_config


@pytest.fixture(scope="session")
def trained_supernet(tmp_path_factory):
    """The tiny supernet after 12 hard-mode steps of 64 digits (val top-1 around 0.5-0.7): ``(result, config)``."""
    from slimnas.trainers import SupernetTrainConfig, train_supernet

    tmp = tmp_path_factory.mktemp("supernet")
    cfg = SupernetTrainConfig.model_validate(tiny_train_config(
        tmp, "trained", data={"batch_size": 64}, gumbel={"mode": "hard"},
        optim={"lr": 0.05, "warmup_epochs": 0.2}, run={"max_steps_per_epoch": 12}))
    return train_supernet(cfg), cfg
