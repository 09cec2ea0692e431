"""Data pipelines: digits, ImageFolder, Parquet shards and synthetic images, with timm's training transforms.

:func:`build_data` returns a :class:`DataBundle`: a training loader (this rank's share, reshuffled every epoch from
``seed + epoch`` so every rank agrees and a resumed run sees the same order), this rank's validation shard, the
BN-calibration batches (the same on every rank) and, for ``alpha.update: separate_split``, a loader over the
held-out alpha split.

- ``digits``: scikit-learn's bundled UCI digits (1797 8x8 images), upsampled to the space's input size, 3 channels,
  with a fixed split drawn from ``data.split_seed``: 360 validation, 180 calibration, 1257 training images.
- ``imagefolder``: ``<path>/<train_split>`` and ``<path>/<val_split>`` in torchvision's ImageFolder layout.
- ``parquet``: ``<path>/<train_split>`` and ``<path>/<val_split>`` folders of shards (:mod:`._parquet`).
- ``synthetic``: random images and labels, for throughput benchmarks only.

For imagefolder and parquet the calibration images are a fixed subset (``data.calib_images``, 2000 as in
Once-for-All) of the training images, with the evaluation transform.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from slimnas.errors import InputError

from ._config import DataConfig

__all__ = ["DataBundle", "ShardedSampler", "build_data", "check_data", "train_transform", "eval_transform"]

DIGITS_VAL, DIGITS_CALIB = 360, 180


class ShardedSampler(Sampler[int]):
    """This rank's share of ``indices``, reshuffled per epoch from ``(seed, epoch)`` alone.

    Training (``even=True``): every rank gets ``len // world_size`` items (the tail is dropped) so that all ranks run
    the same number of steps. Evaluation (``even=False``, no shuffle): rank ``r`` gets items ``r, r + world, ...``.
    ``groups`` (a locality group per item, e.g. Parquet row groups) shuffles group order then items within groups,
    and gives each rank a contiguous run, so a process reads each group about once per epoch.
    """

    def __init__(self, indices: Sequence[int] | int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 seed: int = 0, even: bool = True, groups: Sequence[int] | None = None) -> None:
        self.indices = np.arange(indices) if isinstance(indices, int) else np.asarray(indices, dtype=np.int64)
        self.rank, self.world_size, self.shuffle, self.seed, self.even = rank, world_size, shuffle, seed, even
        self.groups = None if groups is None else np.asarray(groups)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.groups is None:
            return self.indices[rng.permutation(len(self.indices))]
        group_rank = rng.permutation(int(self.groups.max()) + 1)[self.groups]
        return self.indices[np.lexsort((rng.random(len(self.indices)), group_rank))]

    def __iter__(self):
        order = self._order()
        if not self.even:
            return iter(order[self.rank::self.world_size].tolist())
        per = len(order) // self.world_size
        if self.groups is not None:
            return iter(order[self.rank * per:(self.rank + 1) * per].tolist())
        return iter(order[self.rank:per * self.world_size:self.world_size].tolist())

    def __len__(self) -> int:
        n = len(self.indices)
        if not self.even:
            return len(range(self.rank, n, self.world_size))
        return n // self.world_size


@dataclass
class DataBundle:
    train: DataLoader
    val: DataLoader
    calib: Iterable[Any]
    alpha: DataLoader | None
    num_classes: int
    num_train: int  # training images per epoch over all ranks (the weights' part)
    mixup: Any | None  # timm Mixup, or None
    augment: dict[str, Any]

    def set_epoch(self, epoch: int) -> None:
        for loader in (self.train, self.alpha):
            if loader is not None:
                loader.sampler.set_epoch(epoch)


def train_transform(aug: dict[str, Any], img_size: int):
    """timm's ``create_transform`` training pipeline for the resolved augmentation ``aug``."""
    from timm.data import create_transform

    if aug["recipe"] == "none":
        return eval_transform(aug, img_size)
    return create_transform(img_size, is_training=True, scale=tuple(aug["scale"]), hflip=aug["hflip"],
                            color_jitter=aug["color_jitter"], auto_augment=aug["auto_augment"] or None,
                            interpolation=aug["interpolation"], re_prob=aug["re_prob"], re_mode="pixel")


def eval_transform(aug: dict[str, Any], img_size: int):
    from timm.data import create_transform

    return create_transform(img_size, is_training=False, interpolation=aug["interpolation"],
                            crop_pct=aug["crop_pct"])


# ---------------------------------------------------------------------------------------------------- data sets
class ArrayImageDataset(Dataset):
    """``uint8`` HxWx3 arrays as PIL images through a transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


class SyntheticDataset(Dataset):
    """Random normalised images (a pool of at most 256, reused) and random labels. Throughput benchmarks only."""

    def __init__(self, n: int, num_classes: int, img_size: int, seed: int = 0, pool: int = 256) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(min(n, pool), 3, img_size, img_size, generator=gen)
        self.labels = torch.randint(0, num_classes, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index % len(self.images)], int(self.labels[index])


#: Where scikit-learn keeps the UCI digits, inside its package: 1797 rows of 64 pixel values (0-16) and a label.
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The UCI digits as scikit-learn ships them: ``float64`` N x 8 x 8 images (0-16) and ``int64`` labels, equal to
    ``sklearn.datasets.load_digits()``'s ``images`` and ``target``.

    Read from the file inside the scikit-learn package without importing it: importing ``sklearn.datasets`` pulls in
    SciPy's statistics and takes ~1.5 s on 2 cores, paid by every process that loads the digits (each evaluator of a
    search, each stage); the file takes ~20 ms. Where the file is not found (a scikit-learn that moved it) the digits
    come from ``load_digits()``, the same values."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root).joinpath(*DIGITS_FILE)
        if path.is_file():
            with gzip.open(path, "rt") as rows:
                data = np.loadtxt(rows, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def digits_arrays(img_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The UCI digits upsampled (bilinear) to ``img_size``, as ``uint8`` N x S x S x 3, and their labels."""
    import torch.nn.functional as F

    raw, labels = digits_raw()
    x = torch.tensor(raw, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False).clamp(0, 1)
    images = (x * 255).round().to(torch.uint8).squeeze(1).numpy()
    return np.repeat(images[..., None], 3, axis=-1), labels


def digits_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed (train, val, calib) index split of the digits."""
    order = np.random.RandomState(seed).permutation(n)
    return order[DIGITS_VAL + DIGITS_CALIB:], order[:DIGITS_VAL], order[DIGITS_VAL:DIGITS_VAL + DIGITS_CALIB]


def _split_dir(cfg: DataConfig, split: str) -> str:
    root = str(cfg.path)
    return f"{root.rstrip('/')}/{split}"


def _imagefolder(cfg: DataConfig, split: str, transform):
    from torchvision.datasets import ImageFolder

    folder = Path(_split_dir(cfg, split)).expanduser()
    if not folder.is_dir():
        raise InputError(f"data.path: no such directory {folder}")
    try:
        return ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise InputError(f"data.path: {folder}: {' '.join(str(exc).split())}") from None


def _parquet(cfg: DataConfig, split: str, transform, num_classes: int | None = None):
    from ._parquet import ParquetImageDataset

    return ParquetImageDataset(_split_dir(cfg, split), cfg.image_column, cfg.label_column, transform,
                               num_classes=num_classes)


def check_data(cfg: DataConfig) -> int:
    """Open the data set without loading images; raises ``InputError`` naming a bad path or shard.

    Returns the number of classes. Run it in the driver before any workers start.
    """
    if cfg.kind == "digits":
        return 10
    if cfg.kind == "synthetic":
        return cfg.num_classes or 1000
    if cfg.kind == "imagefolder":
        train, val = _imagefolder(cfg, cfg.train_split, None), _imagefolder(cfg, cfg.val_split, None)
        if train.classes != val.classes:
            raise InputError(f"data.path: {cfg.val_split} classes differ from {cfg.train_split} classes")
        return cfg.num_classes or len(train.classes)
    train = _parquet(cfg, cfg.train_split, None, cfg.num_classes)
    num_classes = cfg.num_classes or int(train.labels.max()) + 1
    _parquet(cfg, cfg.val_split, None, num_classes)
    return num_classes


def _subset_indices(n: int, k: int, seed: int, groups: np.ndarray | None) -> np.ndarray:
    """``k`` fixed indices of ``n``: random ones, or whole locality groups in random order."""
    rng = np.random.default_rng([seed, 17])
    if groups is None:
        return np.sort(rng.permutation(n)[:k])
    picked: list[np.ndarray] = []
    for g in rng.permutation(int(groups.max()) + 1):
        picked.append(np.flatnonzero(groups == g))
        if sum(len(p) for p in picked) >= k:
            break
    return np.sort(np.concatenate(picked)[:k])


def _datasets(cfg: DataConfig, aug: dict[str, Any], img_size: int):
    """``(train, val, calib, num_classes, groups)`` with transforms applied."""
    t_train, t_eval = train_transform(aug, img_size), eval_transform(aug, img_size)
    if cfg.kind == "digits":
        images, labels = digits_arrays(img_size)
        tr, va, ca = digits_split(len(labels), cfg.split_seed)
        ca = ca[:cfg.calib_images]
        return (ArrayImageDataset(images[tr], labels[tr], t_train), ArrayImageDataset(images[va], labels[va], t_eval),
                ArrayImageDataset(images[ca], labels[ca], t_eval), 10, None)
    if cfg.kind == "synthetic":
        k = cfg.num_classes or 1000
        train = SyntheticDataset(cfg.synthetic_images, k, img_size, cfg.split_seed)
        val = SyntheticDataset(min(cfg.synthetic_images, 256), k, img_size, cfg.split_seed + 1)
        return train, val, Subset(val, range(min(len(val), cfg.calib_images))), k, None
    if cfg.kind == "imagefolder":
        train, val = _imagefolder(cfg, cfg.train_split, t_train), _imagefolder(cfg, cfg.val_split, t_eval)
        calib_base, groups = _imagefolder(cfg, cfg.train_split, t_eval), None
        k = cfg.num_classes or len(train.classes)
    else:
        train = _parquet(cfg, cfg.train_split, t_train, cfg.num_classes)
        k = cfg.num_classes or int(train.labels.max()) + 1
        val = _parquet(cfg, cfg.val_split, t_eval, k)
        calib_base, groups = _parquet(cfg, cfg.train_split, t_eval, k), train.row_groups()
    calib = Subset(calib_base, _subset_indices(len(train), cfg.calib_images, cfg.split_seed, groups).tolist())
    return train, val, calib, k, groups


def build_data(cfg: DataConfig, aug: dict[str, Any], img_size: int, *, rank: int = 0, world_size: int = 1,
               seed: int = 0, alpha_fraction: float | None = None, pin_memory: bool = False) -> DataBundle:
    """Loaders for this rank. ``alpha_fraction``: hold out that part of the training images for alpha."""
    train, val, calib, num_classes, groups = _datasets(cfg, aug, img_size)
    indices = np.arange(len(train))
    alpha_loader = None
    common = {"num_workers": cfg.workers, "pin_memory": pin_memory}
    if alpha_fraction:
        rng = np.random.default_rng([cfg.split_seed, 29])
        held = rng.random(len(train)) < alpha_fraction
        alpha_idx, indices = indices[held], indices[~held]
        sampler = ShardedSampler(alpha_idx, rank, world_size, seed=seed + 7919,
                                 groups=None if groups is None else groups[alpha_idx])
        if len(sampler) < cfg.batch_size:
            raise InputError(f"alpha.split_fraction: leaves this worker {len(sampler)} images for alpha, "
                             f"fewer than data.batch_size {cfg.batch_size}")
        alpha_loader = DataLoader(train, cfg.batch_size, sampler=sampler, drop_last=True, **common)
    sampler = ShardedSampler(indices, rank, world_size, seed=seed, groups=None if groups is None else groups[indices])
    if len(sampler) < cfg.batch_size:
        raise InputError(f"data.batch_size: {cfg.batch_size} is more than this worker's {len(sampler)} "
                         f"training images")
    train_loader = DataLoader(train, cfg.batch_size, sampler=sampler, drop_last=True, **common)
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    val_loader = DataLoader(val, eval_bs, sampler=ShardedSampler(len(val), rank, world_size, False, even=False),
                            **common)
    calib_loader = DataLoader(calib, cfg.batch_size, shuffle=False, **common)
    mixup = None
    if aug["mixup"] > 0 or aug["cutmix"] > 0:
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=aug["mixup"], cutmix_alpha=aug["cutmix"], label_smoothing=aug["smoothing"],
                      num_classes=num_classes)
    num_train = len(sampler) // cfg.batch_size * cfg.batch_size * world_size
    return DataBundle(train_loader, val_loader, calib_loader, alpha_loader, num_classes, num_train, mixup, aug)
