"""A winner's files (slimnas.winners): the model card's JSON round trip, save and load, and bad folders named."""

import json
from dataclasses import replace

import pytest
import torch

import slimnas
from slimnas.errors import InputError
from slimnas.search_spaces.efficientformer import SearchSpace, SuperNet
from slimnas.trainers import recalibrate_bn
from slimnas.winners import CARD_FILE, WEIGHTS_FILE, ModelCard, load_winner, save_winner, winner_folder


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return SuperNet(SearchSpace.preset("tiny"), num_classes=10).eval()


def _card(arch, **changes) -> ModelCard:
    card = ModelCard(arch=arch, space="tiny", num_classes=10, in_chans=3, method="slimming", target_ms=1.5,
                     top1=0.9375, eval_images=64, calib_images=64, predicted_ms=1.42, measured_ms=None,
                     meets_target=None, supernet_checkpoint="/runs/sup/epoch_2/checkpoint.pt",
                     supernet_sha256="ab" * 32, latency_table="/runs/latency/torch-cpu-b1.parquet",
                     latency_backend="torch-cpu", latency_device="cpu: 2 cores", latency_table_created="2026-11-29",
                     slimnas_version=slimnas.__version__)
    return replace(card, **changes)


def test_the_card_round_trips_through_json_and_says_what_rebuilds_the_network(supernet, tmp_path):
    arch = supernet.space.sample(3)
    card = _card(arch, measured_ms=1.47, meets_target=True)
    data = json.loads(json.dumps(card.to_dict()))
    assert ModelCard.from_dict(data) == card
    assert data["num_classes"] == 10 and data["in_chans"] == 3 and data["img_size"] == 64
    assert data["widths"] == list(arch.widths) and data["family"] == "efficientformer" and data["space"] == "tiny"
    assert card.save(tmp_path / CARD_FILE) and ModelCard.load(tmp_path / CARD_FILE) == card
    assert ModelCard.from_dict({**data, "top1": 1}).top1 == 1.0  # JSON writes 1.0 as 1 in some tools


def test_a_saved_winner_loads_as_the_same_network(supernet, tmp_path):
    arch = supernet.space.sample(1)
    model = supernet.extract(arch).eval()
    recalibrate_bn(model, [torch.randn(16, 3, 64, 64) for _ in range(2)])
    folder = save_winner(winner_folder(tmp_path / "job", "slimming", 1.5), model.state_dict(), _card(arch))
    assert folder == tmp_path / "job" / "winners" / "slimming@1.5ms"
    assert sorted(p.name for p in folder.iterdir()) == ["arch.json", "model.json", "weights.pt"]
    loaded, card = slimnas.load_winner(folder)
    assert card == _card(arch) and not loaded.training
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_bad_folder_is_one_line_naming_the_file(supernet, tmp_path):
    arch = supernet.space.sample(2)
    good = save_winner(tmp_path / "good", supernet.extract(arch).state_dict(), _card(arch))

    def copy(name: str):
        folder = tmp_path / name
        folder.mkdir()
        for f in good.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        return folder

    def error(folder) -> str:
        with pytest.raises(InputError) as info:
            load_winner(folder)
        message = str(info.value)
        assert "\n" not in message and "Traceback" not in message
        return message

    assert error(tmp_path / "none").startswith(f"{tmp_path / 'none'}: no such winner folder")
    no_card = copy("no-card")
    (no_card / CARD_FILE).unlink()
    assert error(no_card) == f"{no_card / CARD_FILE}: no such file"
    no_weights = copy("no-weights")
    (no_weights / WEIGHTS_FILE).unlink()
    assert error(no_weights) == f"{no_weights / WEIGHTS_FILE}: no such file"
    broken = copy("broken-card")
    (broken / CARD_FILE).write_text("{not json")
    assert error(broken).startswith(f"{broken / CARD_FILE}: not a JSON model card")
    for field, value, needle in (("num_classes", "10", "num_classes: expected int"),
                                 ("format", "model/0", "format: expected 'slimnas.model-card/1'"),
                                 ("arch", {"widths": [32]}, "arch: img_size: missing")):
        folder = copy(f"bad-{field}")
        data = json.loads((folder / CARD_FILE).read_text())
        data[field] = value
        (folder / CARD_FILE).write_text(json.dumps(data))
        assert error(folder).startswith(f"{folder / CARD_FILE}: {needle}"), error(folder)
    wrong = copy("wrong-classes")
    (wrong / CARD_FILE).write_text(json.dumps(_card(arch, num_classes=1000).to_dict()))
    assert error(wrong).startswith(f"{wrong / WEIGHTS_FILE}: does not fit the network of {wrong / CARD_FILE} "
                                   "(size mismatch")
    pickled = copy("pickled")
    torch.save({"model": supernet.extract(arch)}, pickled / WEIGHTS_FILE)  # a pickled module: refused, never run
    assert error(pickled).startswith(f"{pickled / WEIGHTS_FILE}: not a state_dict torch loads with weights_only=True")
