"""Training configs: the paper's recipe as defaults (Li et al., NeurIPS 2022, Sec. 5.1), every choice a field.

A YAML file holds one :class:`SupernetTrainConfig` (``slimnas train-supernet``) or :class:`ArchTrainConfig`
(``slimnas train-arch``); :func:`slimnas.config.load_config` validates it and names the offending field on error.
Sections: ``data``, ``augment``, ``optim`` (weights), ``alpha`` and ``gumbel`` (supernet only), ``distill``, ``model``,
``run``, ``distributed`` (Ray Train) and ``tracking`` (MLflow; read by :mod:`slimnas.platform.tracking.store`, plain
data here). Where the paper is silent the default is a documented decision (see each field and the README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from slimnas.config import ConfigModel, plain_dir_name

__all__ = [
    "DataConfig", "AugmentConfig", "OptimConfig", "AlphaConfig", "GumbelConfig", "DistillConfig", "ModelConfig",
    "RunSettings", "DistributedConfig", "TrackingConfig", "SupernetTrainConfig", "ArchTrainConfig", "RECIPES",
]

DataKind = Literal["digits", "imagefolder", "parquet", "synthetic"]

#: Augmentation recipes. ``deit``: the DeiT recipe the paper trains with (timm RandAugment m9, random erasing 0.25,
#: mixup 0.8 / cutmix 1.0, label smoothing 0.1). ``small``: for small, centred images such as the upsampled digits
#: (no flips, which change a digit's meaning; milder crops and RandAugment; no mixup). ``none``: resize only.
RECIPES: dict[str, dict[str, Any]] = {
    "deit": {"auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "hflip": 0.5, "scale": (0.08, 1.0),
             "color_jitter": 0.4, "mixup": 0.8, "cutmix": 1.0, "smoothing": 0.1, "interpolation": "bicubic",
             "crop_pct": 0.875},
    "small": {"auto_augment": "rand-m6-mstd0.5-inc1", "re_prob": 0.1, "hflip": 0.0, "scale": (0.6, 1.0),
              "color_jitter": 0.0, "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.1, "interpolation": "bilinear",
              "crop_pct": 1.0},
    "none": {"auto_augment": None, "re_prob": 0.0, "hflip": 0.0, "scale": (1.0, 1.0), "color_jitter": 0.0,
             "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.0, "interpolation": "bilinear", "crop_pct": 1.0},
}


class DataConfig(ConfigModel):
    """Where images come from. ``batch_size`` is per worker; the learning rate scales with the global batch."""

    kind: DataKind = "digits"
    path: str | None = Field(None, validate_default=True)  # imagefolder/parquet root (parquet: any pyarrow/fsspec URI)
    train_split: str = "train"  # sub-folder of ``path`` with the training images / shards
    val_split: str = "val"  # sub-folder of ``path`` with the validation images / shards
    image_column: str = "image"  # parquet: encoded image bytes (binary, or a struct with a ``bytes`` field)
    label_column: str = "label"  # parquet: integer class index
    num_classes: int | None = Field(None, ge=1, le=1_000_000)  # default: from the data (synthetic: 1000)
    batch_size: int = Field(64, ge=1, le=65536)
    eval_batch_size: int | None = Field(None, ge=1, le=65536)  # default: 2 x batch_size
    workers: int = Field(0, ge=0, le=1024)  # DataLoader worker processes
    calib_images: int = Field(2000, ge=1, le=100_000_000)  # BN recalibration images (Once-for-All uses 2000)
    synthetic_images: int = Field(1024, ge=1, le=100_000_000)  # synthetic: images per epoch
    split_seed: int = Field(0, ge=0, le=2**32 - 1)  # the fixed digits split and the calibration / alpha subsets

    @field_validator("path")
    @classmethod
    def _path_needed(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind in ("imagefolder", "parquet") and not value:
            raise ValueError(f"required for kind {kind!r}")
        return value


class AugmentConfig(ConfigModel):
    """Training transforms (timm ``create_transform``) and mixup/cutmix (timm ``Mixup``).

    ``recipe: auto`` picks ``deit`` for imagefolder/parquet, ``small`` for digits and ``none`` for synthetic data; any
    field given a value here overrides the recipe's (``auto_augment: ""`` turns RandAugment off).
    """

    recipe: Literal["auto", "deit", "small", "none"] = "auto"
    auto_augment: str | None = None
    re_prob: float | None = Field(None, ge=0, le=1)
    hflip: float | None = Field(None, ge=0, le=1)
    scale: tuple[float, float] | None = None
    color_jitter: float | None = Field(None, ge=0)
    mixup: float | None = Field(None, ge=0)
    cutmix: float | None = Field(None, ge=0)
    smoothing: float | None = Field(None, ge=0, lt=1)
    interpolation: str | None = None
    crop_pct: float | None = Field(None, gt=0, le=1)

    def resolve(self, data_kind: str) -> dict[str, Any]:
        recipe = self.recipe
        if recipe == "auto":
            recipe = {"digits": "small", "synthetic": "none"}.get(data_kind, "deit")
        values = dict(RECIPES[recipe])
        for key in values:
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        values["recipe"] = recipe
        return values


class OptimConfig(ConfigModel):
    """Weights: timm's optimizer factory and cosine schedule (paper Sec. 5.1: AdamW, lr = 1e-3 x batch / 1024,
    5 warm-up epochs, minimum lr 1e-5; weight decay 0.025 as in the EfficientFormer training code)."""

    opt: str = "adamw"
    lr: float = Field(1e-3, gt=0)  # per ``lr_ref_batch`` images; the used lr is lr x global_batch / lr_ref_batch
    lr_ref_batch: int = Field(1024, ge=1)
    weight_decay: float = Field(0.025, ge=0)
    sched: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(5.0, ge=0)
    warmup_lr: float = Field(1e-6, ge=0)
    min_lr: float = Field(1e-5, ge=0)
    clip_grad: float | None = Field(5.0, gt=0)  # gradient clipping of the weights (None: off)
    clip_mode: Literal["norm", "value", "agc"] = "norm"


class AlphaConfig(ConfigModel):
    """Architecture parameters: their own optimizer (DARTS: Adam, lr 3e-4, betas (0.5, 0.999), weight decay 1e-3).

    ``update: same_batch`` (default, single-level: the paper trains weights and alpha "together") steps both from one
    backward pass; ``separate_split`` steps alpha on batches from a held-out part (``split_fraction``) of the
    training images (first-order DARTS). Alpha is frozen for the first ``warmup_epochs``.
    """

    opt: str = "adam"
    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = Field(1e-3, ge=0)
    warmup_epochs: int = Field(0, ge=0)
    update: Literal["same_batch", "separate_split"] = "same_batch"
    split_fraction: float = Field(0.5, gt=0, lt=1)


class GumbelConfig(ConfigModel):
    """Gumbel-softmax sampling (paper Eq. 8) and its temperature schedule (the paper gives none).

    ``exponential`` (default, FBNet/GDAS-style): ``tau = tau_max * (tau_min / tau_max) ** progress`` over training,
    ``progress`` = finished steps / total steps; ``linear`` and ``cosine`` interpolate; ``constant`` keeps tau_max.
    """

    mode: Literal["soft", "hard"] = "soft"
    noise: Literal["gumbel", "uniform"] = "gumbel"
    schedule: Literal["exponential", "linear", "cosine", "constant"] = "exponential"
    tau_max: float = Field(5.0, gt=0)
    tau_min: float = Field(0.5, gt=0)


class DistillConfig(ConfigModel):
    """Hard distillation from a timm teacher (DeiT; the paper distils from RegNetY-16GF).

    The teacher is ``timm.create_model(teacher_model)`` with the state_dict at ``teacher_weights``, or, without it,
    timm's pretrained weights when they are already in the local Hugging Face cache (nothing is downloaded).
    Loss: ``(1 - alpha) * loss(head, y) + alpha * CE(head_dist, argmax teacher(x))``.
    """

    enabled: bool = False
    teacher_model: str = "regnety_160"
    teacher_weights: str | None = None
    alpha: float = Field(0.5, ge=0, le=1)


class ModelConfig(ConfigModel):
    drop_rate: float = Field(0.0, ge=0, lt=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    timm_weights: str | None = None  # supernet: initialise from a local timm EfficientFormer state_dict


class RunSettings(ConfigModel):
    """One run: where it writes, how long, and the knobs for tests (``max_steps_per_epoch``)."""

    name: str = "run"
    out_dir: str = "runs"  # checkpoints go to <out_dir>/<name>/checkpoints/epoch_NNNN/checkpoint.pt
    epochs: int = Field(300, ge=1, le=1_000_000)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    max_steps_per_epoch: int | None = Field(None, ge=1, le=10**12)
    resume: bool = True  # continue from the latest checkpoint of this run when there is one
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(1, ge=1)  # validate every n epochs (and always after the last)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    channels_last: bool | None = None  # None: on GPU
    log_every: int = Field(50, ge=1)  # steps between progress events

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return plain_dir_name(value)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir).expanduser().resolve() / self.name


class DistributedConfig(ConfigModel):
    """Ray Train (``TorchTrainer``): DDP over ``num_workers`` workers; placement by accelerator type or labels."""

    enabled: bool = False
    address: str | None = None  # Ray cluster address (None: RAY_ADDRESS or a local Ray)
    num_workers: int = Field(2, ge=1, le=100_000)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    accelerator_type: str | None = None  # e.g. "A100" (training nodes) or "V100"
    label_selector: dict[str, str] | None = None  # node labels, e.g. {"gpu-type": "A100"}
    max_failures: int = Field(0, ge=-1)  # worker-group restarts before the job fails (-1: unlimited)
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    storage_path: str | None = None  # default: run.out_dir

    @model_validator(mode="after")
    def _placement(self) -> DistributedConfig:
        if self.accelerator_type and self.label_selector:
            raise ValueError("give accelerator_type or label_selector, not both")
        return self


class TrackingConfig(ConfigModel):
    """MLflow tracking (used by ``slimnas.platform.tracking.store``; the trainers never import MLflow)."""

    enabled: bool = False
    tracking_uri: str | None = None  # default: sqlite:///<working dir>/mlflow.db
    experiment: str = "slimnas"
    artifact_location: str | None = None  # for a new experiment (default: MLflow's)
    run_name: str | None = None  # default: run.name
    figure_every: int = Field(5, ge=1)  # epochs between alpha heatmaps
    log_checkpoint: bool = True


class _TrainConfig(ConfigModel):
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    distill: DistillConfig = DistillConfig()
    model: ModelConfig = ModelConfig()
    run: RunSettings = RunSettings()
    distributed: DistributedConfig = DistributedConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _mixup_needs_even_batches(self) -> _TrainConfig:
        aug = self.augment.resolve(self.data.kind)
        if (aug["mixup"] > 0 or aug["cutmix"] > 0) and self.data.batch_size % 2:
            raise ValueError(f"data.batch_size: mixup/cutmix need an even batch size, got {self.data.batch_size}")
        return self


def _resolve_space(value: Any) -> Any:
    from slimnas.search_spaces import SearchSpace

    return SearchSpace.resolve(value).to_dict() if isinstance(value, dict) else SearchSpace.preset(value).name


class SupernetTrainConfig(_TrainConfig):
    """``slimnas train-supernet``: the supernet of ``space`` trained with Gumbel sampling (paper Sec. 4.2, 5.1)."""

    space: str | dict[str, Any] = "tiny"
    alpha: AlphaConfig = AlphaConfig()
    gumbel: GumbelConfig = GumbelConfig()

    @field_validator("space")
    @classmethod
    def _space(cls, value: Any) -> Any:
        return _resolve_space(value)


class ArchTrainConfig(_TrainConfig):
    """``slimnas train-arch``: retrain one arch, from scratch or fine-tuned from a supernet checkpoint.

    ``arch`` is a preset name (``l1``), an arch dict, or a path to an arch JSON file (read when the config loads, so
    the stored config is self-contained). ``init``: ``scratch`` (random weights), ``supernet`` (the subnet extracted
    from ``supernet_checkpoint``, with the supernet's BatchNorm statistics) or ``weights`` (the state_dict file
    ``weights`` of exactly this arch's network, read with ``weights_only=True``: e.g. a search job's winner, whose
    BatchNorm statistics were recalibrated for the subnet; see :mod:`slimnas.winners`).
    """

    arch: str | dict[str, Any]
    init: Literal["scratch", "supernet", "weights"] = "scratch"
    supernet_checkpoint: str | None = Field(None, validate_default=True)
    weights: str | None = Field(None, validate_default=True)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: Any) -> dict[str, Any]:
        from slimnas.search_spaces import DEFAULT_FAMILY, Arch, get_family

        presets = get_family(DEFAULT_FAMILY).arch_presets
        if isinstance(value, dict):
            return Arch.from_dict(value).to_dict()
        if value.lower() in presets:
            return Arch.preset(value, slots=None).to_dict()
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"no such file {value} (and not a preset: {sorted(presets)})")
        try:
            return Arch.from_dict(json.loads(path.read_text())).to_dict()
        except json.JSONDecodeError as exc:
            raise ValueError(f"{value} is not valid JSON ({exc.msg})") from None

    @field_validator("supernet_checkpoint")
    @classmethod
    def _checkpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("init") == "supernet" and not value:
            raise ValueError("required when init is 'supernet'")
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("init") == "weights" and not value:
            raise ValueError("required when init is 'weights'")
        return value
