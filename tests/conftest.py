"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


#: A folder laid out like site-packages with one outside plug-in installed (``slimnas_toyplugin``: a space family, a
#: latency backend and a search method, declared in its ``.dist-info/entry_points.txt``).
PLUGIN_SITE = Path(__file__).resolve().parent / "plugins" / "site"


@pytest.fixture
def toy_plugin(monkeypatch):
    """The toy plug-in installed for this test: its folder on ``sys.path`` (``importlib.metadata`` finds its entry
    points there) and on ``PYTHONPATH`` (for subprocesses and Ray workers)."""
    from slimnas.search_spaces import forget_family

    monkeypatch.syspath_prepend(str(PLUGIN_SITE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_SITE), os.environ.get("PYTHONPATH")])))
    from slimnas.registry import BACKENDS, METHODS, SPACES

    yield PLUGIN_SITE
    forget_family("toynet")
    for registry in (SPACES, BACKENDS, METHODS):
        for name in [n for n in registry._loaded if n not in registry.builtins]:
            registry.unregister(name)


@pytest.fixture(scope="session")
def tiny_winner(tmp_path_factory):
    """``(job folder, card)``: a search job's folder holding one saved winner, ``slimming@1.5ms``, of the ``tiny``
    space (64 px, 10 classes), written by ``save_winner`` as a job writes it: a subnet extracted from a supernet, its
    BatchNorm statistics re-estimated, with MB3D blocks in stages 3 and 4 (both reshapes). Its layer scales and head
    are made large so that every block and the logits (of order 10) weigh in an export's parity check."""
    import slimnas
    from slimnas.search_spaces.efficientformer import Arch, SearchSpace, SuperNet
    from slimnas.trainers import recalibrate_bn
    from slimnas.winners import ModelCard, save_winner, winner_folder

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    supernet = SuperNet(SearchSpace.preset("tiny"), num_classes=10).eval()
    arch = Arch(64, (32, 48, 64, 96), (("4d", "4d"), ("4d", "id"), ("4d", "4d", "3d", "id"), ("4d", "3d", "3d")))
    model = supernet.extract(arch).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                param.copy_(0.5 + 0.2 * torch.randn(param.shape, generator=generator))
            elif name.startswith("head"):
                param.copy_(torch.randn(param.shape, generator=generator))
    recalibrate_bn(model, [torch.randn(16, 3, 64, 64, generator=generator) for _ in range(2)])
    card = ModelCard(arch=arch, space="tiny", num_classes=10, in_chans=3, method="slimming", target_ms=1.5,
                     top1=0.5, eval_images=32, calib_images=32, predicted_ms=1.42, measured_ms=1.47,
                     meets_target=True, supernet_checkpoint="/runs/sup/checkpoint.pt", supernet_sha256="ab" * 32,
                     latency_table="/runs/latency/table.parquet", latency_backend="torch-cpu",
                     latency_device="cpu", latency_table_created="2026-11-29", slimnas_version=slimnas.__version__)
    job = tmp_path_factory.mktemp("job")
    save_winner(winner_folder(job, "slimming", 1.5), model.state_dict(), card)
    return job, card
