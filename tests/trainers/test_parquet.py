import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from slimnas.errors import InputError
from slimnas.trainers import DataConfig, ParquetImageDataset, build_data, check_data, write_parquet_shards
from slimnas.trainers._config import AugmentConfig
from slimnas.trainers._data import digits_arrays


def _aug(kind: str, **over) -> dict:
    return AugmentConfig(**over).resolve(kind)


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
