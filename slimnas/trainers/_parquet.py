"""Image classification data in Parquet shards, read with PyArrow from a local path or any filesystem it opens.

A data set is a folder (or one file) of ``*.parquet`` shards with an image column (encoded bytes: ``binary``, or a
struct with a ``bytes`` field as Hugging Face ``datasets`` writes it) and an integer label column. Paths may be local
or URIs: PyArrow's own filesystems first (``file://``, ``s3://``, ``gs://``, ``hdfs://``), then any fsspec protocol
through ``pyarrow.fs.FSSpecHandler``. Opening reads only the shards' footers and label columns; images are read one
row group at a time when first needed (a small per-process cache), and :meth:`ParquetImageDataset.row_groups` lets
the sampler shuffle row groups first so that a process reads each row group once per epoch.

Missing paths, non-Parquet files, missing or mistyped columns, out-of-range labels and undecodable images raise
:class:`~slimnas.errors.InputError` naming the shard.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image
from torch.utils.data import Dataset

from slimnas.errors import InputError

__all__ = ["ParquetImageDataset", "resolve_filesystem", "list_shards", "write_parquet_shards"]


def resolve_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` for a local path or a URI (PyArrow's filesystems, then fsspec's)."""
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    try:
        return pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    try:
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path)
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing driver, bad URI: one line
        raise InputError(f"data.path: cannot open {path} ({type(exc).__name__}: {exc})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def list_shards(path: str, what: str = "data.path") -> tuple[pafs.FileSystem, list[str]]:
    """The ``*.parquet`` files at ``path`` (a file, or a folder searched recursively), sorted."""
    fs, inner = resolve_filesystem(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{what}: no such file or directory {path}")
    if info.type == pafs.FileType.File:
        return fs, [inner]
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    shards = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    if not shards:
        raise InputError(f"{what}: no *.parquet shards under {path}")
    return fs, shards


def _image_bytes(column: pa.Array | pa.ChunkedArray) -> list[bytes | None]:
    if pa.types.is_struct(column.type):
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        column = column.field("bytes")
    return column.to_pylist()


def _check_image_type(dtype: pa.DataType) -> bool:
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return True
    return pa.types.is_struct(dtype) and dtype.get_field_index("bytes") >= 0


class ParquetImageDataset(Dataset):
    """Map-style data set over Parquet shards; items are ``(transform(PIL image), label)``.

    Args:
        path: a shard, or a folder of shards (local path or URI).
        image_column, label_column: column names.
        transform: applied to the decoded RGB PIL image.
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        what: the config field named in error messages.
    """

    def __init__(self, path: str, image_column: str = "image", label_column: str = "label",
                 transform: Callable[[Image.Image], Any] | None = None, num_classes: int | None = None,
                 what: str = "data.path", cache_row_groups: int = 2) -> None:
        self.path, self.image_column, self.label_column = path, image_column, label_column
        self.transform, self.what, self.cache_size = transform, what, cache_row_groups
        self._fs, self.shards = list_shards(path, what)
        groups, labels = [], []
        for s, shard in enumerate(self.shards):
            pfile = self._parquet(shard)
            meta, schema = pfile.metadata, pfile.schema_arrow
            for column in (image_column, label_column):
                if column not in schema.names:
                    raise InputError(f"{what}: shard {shard} has no column {column!r} (columns: {schema.names})")
            if not _check_image_type(schema.field(image_column).type):
                raise InputError(f"{what}: shard {shard} column {image_column!r} must hold encoded image bytes, "
                                 f"got {schema.field(image_column).type}")
            if not pa.types.is_integer(schema.field(label_column).type):
                raise InputError(f"{what}: shard {shard} column {label_column!r} must be integer class indices, "
                                 f"got {schema.field(label_column).type}")
            table = pfile.read(columns=[label_column])
            shard_labels = table.column(label_column)
            if shard_labels.null_count:
                raise InputError(f"{what}: shard {shard} has missing labels")
            labels.append(shard_labels.to_numpy())
            groups.extend((s, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups))
        self.labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
        if len(self.labels) == 0:
            raise InputError(f"{what}: the shards under {path} hold no rows")
        if self.labels.min() < 0 or (num_classes is not None and self.labels.max() >= num_classes):
            raise InputError(f"{what}: labels under {path} outside [0, {num_classes}) "
                             f"(min {self.labels.min()}, max {self.labels.max()})")
        self._groups = groups  # (shard index, row group, rows)
        self._starts = np.cumsum([0] + [n for _, _, n in groups])
        self._cache: OrderedDict[int, list[bytes | None]] = OrderedDict()
        self._files: dict[int, pq.ParquetFile] = {}

    # -------------------------------------------------------------- reading
    def _parquet(self, shard: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self._fs.open_input_file(shard))
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{self.what}: shard {shard} is not a readable Parquet file ({exc})") from None

    def _row_group(self, g: int) -> list[bytes | None]:
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        s, rg, _ = self._groups[g]
        if s not in self._files:
            self._files[s] = self._parquet(self.shards[s])
        table = self._files[s].read_row_group(rg, columns=[self.image_column])
        data = _image_bytes(table.column(self.image_column))
        self._cache[g] = data
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return data

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own files
        state = dict(self.__dict__)
        state["_files"], state["_cache"] = {}, OrderedDict()
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def row_groups(self) -> np.ndarray:
        """The row group of every item (for locality-aware shuffling)."""
        return np.repeat(np.arange(len(self._groups)), [n for _, _, n in self._groups])

    def __getitem__(self, index: int):
        g = int(np.searchsorted(self._starts, index, side="right") - 1)
        raw = self._row_group(g)[index - self._starts[g]]
        shard = self.shards[self._groups[g][0]]
        if raw is None:
            raise InputError(f"{self.what}: shard {shard} row {index - self._starts[g]} has no image bytes")
        try:
            image = Image.open(io.BytesIO(raw)).convert("RGB")
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
            raise InputError(f"{self.what}: shard {shard} row group {self._groups[g][1]} holds an undecodable "
                             f"image ({type(exc).__name__})") from None
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def write_parquet_shards(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[int], path: str,
                         shard_size: int = 1000, row_group_size: int = 256, image_format: str = "PNG") -> list[str]:
    """Write ``uint8`` HxW(x3) images as encoded bytes with integer labels into ``path/part-NNNNN.parquet``."""
    fs, root = resolve_filesystem(path)
    fs.create_dir(root, recursive=True)
    written = []
    for start in range(0, len(labels), shard_size):
        encoded = []
        for image in images[start:start + shard_size]:
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format=image_format)
            encoded.append(buffer.getvalue())
        table = pa.table({"image": pa.array(encoded, type=pa.binary()),
                          "label": pa.array([int(v) for v in labels[start:start + shard_size]], type=pa.int64())})
        name = f"{root}/part-{start // shard_size:05d}.parquet"
        with fs.open_output_stream(name) as out:
            pq.write_table(table, out, row_group_size=row_group_size)
        written.append(name)
    return written
