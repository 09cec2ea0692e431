
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimnas.errors import InputError
from slimnas.trainers import DataConfig, _data, build_data, check_data
from slimnas.trainers._config import AugmentConfig
from slimnas.trainers._data import ShardedSampler, digits_arrays, digits_raw, digits_split, train_transform


def _aug(kind: str, **over) -> dict:
    return AugmentConfig(**over).resolve(kind)


def test_digits_split_is_fixed_disjoint_and_complete():
    train, val, calib = digits_split(1797, 0)
    assert (len(train), len(val), len(calib)) == (1257, 360, 180)
    assert len(set(train) | set(val) | set(calib)) == 1797
    again = digits_split(1797, 0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, calib), again))
    images, labels = digits_arrays(64)
    assert images.shape == (1797, 64, 64, 3) and images.dtype == np.uint8 and set(labels) == set(range(10))


def test_digits_raw_equals_load_digits_without_importing_sklearn(monkeypatch):
    from sklearn.datasets import load_digits

    expected = load_digits()
    images, labels = digits_raw()
    assert images.shape == (1797, 8, 8) and labels.dtype == np.int64
    assert np.array_equal(images, expected.images) and np.array_equal(labels, expected.target)
    # read from the file, in a process that never imports scikit-learn
    code = ("import sys; from slimnas.trainers._data import digits_raw; images, labels = digits_raw(); "
            "print(images.shape[0], 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["1797", "False"]
    # a scikit-learn without the file: load_digits, the same values
    monkeypatch.setattr(_data, "DIGITS_FILE", ("datasets", "data", "no-such-digits.csv.gz"))
    images, labels = digits_raw()
    assert np.array_equal(images, expected.images) and np.array_equal(labels, expected.target)


def test_digits_bundle():
    bundle = build_data(DataConfig(batch_size=32), _aug("digits"), 64)
    x, y = next(iter(bundle.train))
    assert x.shape == (32, 3, 64, 64) and y.shape == (32,) and x.dtype == torch.float32
    assert bundle.num_classes == 10 and bundle.num_train == 1257 // 32 * 32 and bundle.mixup is None
    assert sum(len(b[1]) for b in bundle.val) == 360
    assert sum(len(b[0]) for b in bundle.calib) == 180
    assert bundle.alpha is None


def test_alpha_split_is_held_out():
    bundle = build_data(DataConfig(batch_size=32), _aug("digits"), 64, alpha_fraction=0.5)
    weights = set(bundle.train.sampler.indices.tolist())
    alpha = set(bundle.alpha.sampler.indices.tolist())
    assert not weights & alpha and len(weights | alpha) == 1257 and 500 < len(alpha) < 757


def test_deit_transform_and_mixup():
    aug = _aug("imagefolder")
    text = repr(train_transform(aug, 224))
    assert "RandAugment" in text and "RandomErasing" in text and "RandomResizedCrop" in text
    bundle = build_data(DataConfig(kind="synthetic", num_classes=7, batch_size=8, synthetic_images=64),
                        _aug("imagefolder"), 32)
    x, y = next(iter(bundle.train))
    mixed, soft = bundle.mixup(x, y)
    assert soft.shape == (8, 7) and torch.allclose(soft.sum(1), torch.ones(8))


@pytest.mark.parametrize("groups", [None, np.repeat(np.arange(10), 10)])
def test_sampler_shards_evenly_and_reshuffles_per_epoch(groups):
    shards = [ShardedSampler(100, r, 3, seed=5, groups=groups) for r in range(3)]
    seen = [list(s) for s in shards]
    assert [len(s) for s in seen] == [33, 33, 33] and len(set(sum(seen, []))) == 99
    assert seen == [list(ShardedSampler(100, r, 3, seed=5, groups=groups)) for r in range(3)]
    for s in shards:
        s.set_epoch(1)
    assert [list(s) for s in shards] != seen
    if groups is not None:  # a rank's run covers few row groups, each contiguously
        runs = np.diff(groups[seen[0]]) != 0
        assert runs.sum() <= 4
    evaluation = [list(ShardedSampler(10, r, 3, shuffle=False, even=False)) for r in range(3)]
    assert evaluation == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_imagefolder(tmp_path):
    images, labels = digits_arrays(32)
    for split, n in (("train", 12), ("val", 6)):
        for i in range(n):
            folder = tmp_path / split / f"class{labels[i] % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i}.png")
    cfg = DataConfig(kind="imagefolder", path=str(tmp_path), batch_size=4, calib_images=5)
    assert check_data(cfg) == 3
    bundle = build_data(cfg, _aug("imagefolder"), 32)
    x, _ = next(iter(bundle.train))
    assert x.shape == (4, 3, 32, 32) and sum(len(b[0]) for b in bundle.calib) == 5
    with pytest.raises(InputError, match="data.path: no such directory .*nowhere/train"):
        check_data(DataConfig(kind="imagefolder", path=str(tmp_path / "nowhere")))
    (tmp_path / "val" / "class9").mkdir()
    with pytest.raises(InputError, match="data.path: .*val"):
        check_data(cfg)


def test_too_few_images_for_a_batch():
    with pytest.raises(InputError, match="data.batch_size: 2000 is more than"):
        build_data(DataConfig(batch_size=2000), _aug("digits"), 64)
