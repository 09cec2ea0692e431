import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from slimnas.errors import InputError
from slimnas.trainers import DataConfig, ParquetImageDataset, build_data, check_data, write_parquet_shards
from slimnas.trainers._config import AugmentConfig
from slimnas.trainers._data import ShardedSampler, digits_arrays, digits_split, train_transform


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


def _write_digits_shards(root, n=120, classes=10):
    images, labels = digits_arrays(32)
    keep = np.arange(n)
    write_parquet_shards(images[keep], labels[keep] % classes, f"{root}/train", shard_size=50, row_group_size=16)
    write_parquet_shards(images[keep[:40]], labels[keep[:40]] % classes, f"{root}/val", shard_size=50)
    return images[keep], labels[keep]


def test_parquet_shards_round_trip_locally_and_by_uri(tmp_path):
    images, labels = _write_digits_shards(tmp_path)
    for root in (str(tmp_path), f"file://{tmp_path}"):
        ds = ParquetImageDataset(f"{root}/train")
        assert len(ds.shards) == 3 and len(ds) == 120 and np.array_equal(ds.labels, labels)
        image, label = ds[77]
        assert label == labels[77] and np.array_equal(np.asarray(image), images[77])
    cfg = DataConfig(kind="parquet", path=str(tmp_path), batch_size=8, calib_images=20)
    assert check_data(cfg) == 10
    bundle = build_data(cfg, _aug("parquet", recipe="small"), 32)
    x, y = next(iter(bundle.train))
    assert x.shape == (8, 3, 32, 32) and bundle.num_classes == 10
    assert sum(len(b[0]) for b in bundle.calib) == 20


def test_parquet_through_an_fsspec_filesystem(tmp_path):
    import fsspec

    images, labels = digits_arrays(32)
    fs = fsspec.filesystem("memory")
    buffer = io.BytesIO()
    Image.fromarray(images[3]).save(buffer, format="PNG")
    table = pa.table({"img": [{"bytes": buffer.getvalue(), "path": None}] * 4, "y": pa.array([1, 2, 3, 4])})
    with fs.open("/slimnas-test/train/a.parquet", "wb") as out:
        pq.write_table(table, out)
    ds = ParquetImageDataset("memory://slimnas-test/train", image_column="img", label_column="y")
    image, label = ds[2]
    assert label == 3 and np.array_equal(np.asarray(image), images[3])
    fs.rm("/slimnas-test", recursive=True)


def test_bad_parquet_inputs_name_the_shard(tmp_path):
    with pytest.raises(InputError, match="data.path: no such file or directory .*missing"):
        check_data(DataConfig(kind="parquet", path=str(tmp_path / "missing")))
    (tmp_path / "train").mkdir()
    with pytest.raises(InputError, match="no \\*.parquet shards"):
        check_data(DataConfig(kind="parquet", path=str(tmp_path)))
    bad = tmp_path / "train" / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(InputError, match="shard .*bad.parquet is not a readable Parquet file"):
        check_data(DataConfig(kind="parquet", path=str(tmp_path)))
    pq.write_table(pa.table({"image": [b"x"], "target": [1]}), bad)
    with pytest.raises(InputError, match="bad.parquet has no column 'label'"):
        check_data(DataConfig(kind="parquet", path=str(tmp_path)))
    pq.write_table(pa.table({"image": ["text"], "label": [1]}), bad)
    with pytest.raises(InputError, match="column 'image' must hold encoded image bytes"):
        check_data(DataConfig(kind="parquet", path=str(tmp_path)))
    pq.write_table(pa.table({"image": [b"not an image"], "label": [1]}), bad)
    ds = ParquetImageDataset(str(tmp_path / "train"))
    with pytest.raises(InputError, match="bad.parquet row group 0 holds an undecodable image"):
        ds[0]
    with pytest.raises(InputError, match="labels .* outside \\[0, 1\\)"):
        ParquetImageDataset(str(tmp_path / "train"), num_classes=1)


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
