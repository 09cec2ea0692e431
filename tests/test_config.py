from typing import Literal

import pytest

from slimnas.config import ConfigModel, atomic_write_text, load_config
from slimnas.errors import ConfigError, InputError


class Inner(ConfigModel):
    lr: float = 1e-3
    mode: Literal["soft", "hard"] = "soft"


class Outer(ConfigModel):
    name: str
    inner: Inner = Inner()


def test_valid_yaml_and_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninner:\n  lr: 0.5\n  mode: hard\n")
    cfg = load_config(Outer, path)
    assert cfg.inner.lr == 0.5 and cfg.inner.mode == "hard"
    assert load_config(Outer, {"job": {"name": "y"}}, section="job").name == "y"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "inner": {"lr": "fast"}}, "inner.lr: Input should be a valid number"),
        ({"name": "x", "inner": {"mode": "mixed"}}, "inner.mode:"),
        ({"name": "x", "extra": 1}, "extra: unknown field"),
        ({}, "name: Field required"),
    ],
)
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as err:
        load_config(Outer, data)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML at line"):
        load_config(Outer, bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Outer, bad)
    bad.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(InputError):  # yaml.safe_load refuses python tags
        load_config(Outer, bad)


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "out" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]
