from pathlib import Path

import pytest

from slimnas.config import load_config
from slimnas.errors import ConfigError, InputError
from slimnas.trainers import ArchTrainConfig, SupernetTrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_are_the_papers_recipe():
    cfg = SupernetTrainConfig()
    assert (cfg.optim.opt, cfg.optim.lr, cfg.optim.lr_ref_batch) == ("adamw", 1e-3, 1024)
    assert (cfg.optim.weight_decay, cfg.optim.warmup_epochs, cfg.optim.min_lr) == (0.025, 5.0, 1e-5)
    assert (cfg.alpha.opt, cfg.alpha.lr, cfg.alpha.betas, cfg.alpha.weight_decay) == ("adam", 3e-4, (0.5, 0.999), 1e-3)
    assert cfg.alpha.update == "same_batch" and cfg.gumbel.mode == "soft" and cfg.gumbel.schedule == "exponential"
    assert cfg.run.epochs == 300 and cfg.data.calib_images == 2000
    deit = cfg.augment.resolve("imagefolder")
    assert deit["recipe"] == "deit" and deit["auto_augment"].startswith("rand-m9") and deit["re_prob"] == 0.25
    assert (deit["mixup"], deit["cutmix"], deit["smoothing"]) == (0.8, 1.0, 0.1)
    small = cfg.augment.resolve("digits")
    assert small["recipe"] == "small" and small["hflip"] == 0.0 and small["mixup"] == 0.0


def test_augment_overrides_survive_a_json_round_trip():
    cfg = SupernetTrainConfig.model_validate({"augment": {"mixup": 0.2, "auto_augment": ""}})
    again = SupernetTrainConfig.model_validate(cfg.model_dump(mode="json"))
    for c in (cfg, again):
        aug = c.augment.resolve("digits")
        assert aug["mixup"] == 0.2 and aug["auto_augment"] == "" and aug["re_prob"] == 0.1


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("supernet-*.yaml")))
def test_shipped_supernet_configs_validate(path):
    assert isinstance(load_config(SupernetTrainConfig, path), SupernetTrainConfig)


def test_shipped_arch_config_validates():
    cfg = load_config(ArchTrainConfig, CONFIGS / "arch-digits.yaml")
    assert cfg.init == "supernet" and cfg.arch["widths"] == [32, 64, 64, 96]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"data": {"kind": "mnist"}}, "data.kind: Input should be"),
        ({"data": {"kind": "parquet"}}, "data.path: Value error, required for kind 'parquet'"),
        ({"data": {"batch_size": 0}}, "data.batch_size: Input should be greater than or equal to 1"),
        ({"optim": {"lr": -1}}, "optim.lr: Input should be greater than 0"),
        ({"optim": {"lr": "fast"}}, "optim.lr: Input should be a valid number"),
        ({"gumbel": {"mode": "mixed"}}, "gumbel.mode: Input should be 'soft' or 'hard'"),
        ({"alpha": {"update": "bilevel"}}, "alpha.update: Input should be 'same_batch' or 'separate_split'"),
        ({"space": "huge"}, "space: Value error, space: unknown preset 'huge'"),
        ({"run": {"epochs": 0}}, "run.epochs: Input should be greater than or equal to 1"),
        ({"run": {"name": "a/b"}}, "run.name: Value error, must be a plain directory name"),
        ({"distributed": {"accelerator_type": "A100", "label_selector": {"gpu": "A100"}}},
         "distributed: Value error, give accelerator_type or label_selector"),
        ({"data": {"kind": "imagefolder", "path": "/x", "batch_size": 3}},
         "config: Value error, data.batch_size: mixup/cutmix need an even batch size"),
        ({"optimizer": {}}, "optimizer: unknown field"),
    ],
)
def test_bad_supernet_configs_name_the_field(data, message):
    with pytest.raises(ConfigError) as err:
        load_config(SupernetTrainConfig, data)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "arch: Field required"),
        ({"arch": "/no/such/arch.json"}, "arch: Value error, no such file /no/such/arch.json"),
        ({"arch": {"img_size": 64, "widths": [24, 32, 32, 32], "blocks": [["4d"]] * 4}}, "arch: Value error, widths"),
        ({"arch": "l1", "init": "supernet"}, "supernet_checkpoint: Value error, required when init is 'supernet'"),
    ],
)
def test_bad_arch_configs_name_the_field(data, message):
    with pytest.raises(ConfigError) as err:
        load_config(ArchTrainConfig, data)
    assert str(err.value).startswith(message), str(err.value)


def test_arch_file_is_read_into_the_config(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text('{"img_size": 64, "widths": [16, 32, 48, 64], "blocks": [["4d"], ["4d"], ["4d"], ["3d"]]}')
    cfg = load_config(ArchTrainConfig, {"arch": str(path)})
    assert cfg.arch["widths"] == [16, 32, 48, 64]
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="arch: Value error, .* is not valid JSON"):
        load_config(ArchTrainConfig, {"arch": str(path)})
    assert load_config(ArchTrainConfig, {"arch": "l1"}).arch["img_size"] == 224


def test_missing_yaml_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_config(SupernetTrainConfig, tmp_path / "nope.yaml")
