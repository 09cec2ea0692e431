"""The pipeline config (``slimnas run`` / ``slimnas quickstart`` / ``slimnas submit``): train -> table -> search
(-> retrain).

One YAML file holds the whole job, validated before anything runs (unknown keys and wrong types are errors naming
the field). Sections:

- ``name`` and ``output`` (default ``runs/<name>``): everything the job writes goes under ``output``.
- ``train``: a :class:`~slimnas.trainers.SupernetTrainConfig`; ``run.out_dir`` defaults to ``output`` and
  ``run.name`` to ``supernet``. Its ``tracking`` is filled from the pipeline's ``tracking`` section.
- ``latency``: the lookup table of the supernet's space (``train.space``): backend and its settings, where the table
  goes (default ``<output>/latency/<backend>-b<batch>.parquet``), where it is measured (``resources``: in this process,
  or a Ray task placed on e.g. a V100 node) and its validation against measured whole networks.
- ``search``: the fields of a search job (:class:`~slimnas.platform.stages.search_config.SearchJobConfig`) except those
  the pipeline fills in (the supernet checkpoint, the table, name, output, ray, tracking). Targets are milliseconds
  (``targets``) or fractions of the predicted latency of the arch slimming starts from (``targets_relative``; read
  from the trained supernet's alpha, whether or not slimming is among the methods: see
  :mod:`slimnas.platform.stages.targets`), which keeps a config portable across machines whose speeds differ; every
  fraction below 1 is a target that needs slimming steps. The resolved milliseconds and the reference arch are recorded
  (``targets_reference`` in the search job's config, ``results.json``, ``pipeline.json`` and MLflow) and printed.
- ``retrain`` (:class:`RetrainSection`, off unless ``enabled``): the search job's winners chosen by ``winners``
  trained again with :func:`slimnas.trainers.train_arch` (fine-tuned from the winner's saved weights, or from
  scratch), here or on Ray Train; see :mod:`slimnas.platform.stages.retrain`.
- ``ray`` (:class:`~slimnas.platform.stages.search_config.RaySection`) and ``tracking``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from slimnas.config import ConfigModel, DirName, load_config, load_yaml
from slimnas.errors import ConfigError
from slimnas.platform.stages.search_config import (
    DEFAULT_METHODS,
    Budget,
    EarlyStopSection,
    MethodName,
    ModelTracking,
    RaySection,
    SearchJobConfig,
    Seed,
    SlimmingSection,
    TargetMs,
    TargetsReference,
)
from slimnas.trainers import ArchTrainConfig, DataConfig, OptimConfig, SupernetTrainConfig

__all__ = ["PipelineConfig", "PipelineLatencySection", "PipelineSearchSection", "PipelineTrackingSection",
           "RetrainSection", "ValidateSection", "ProtocolSection", "load_pipeline", "STAGES", "FINE_TUNE_LR_FACTOR"]

#: The stages, in order (``--force`` names them; ``retrain`` runs only when ``retrain.enabled``).
STAGES = ("train", "table", "search", "retrain")

#: The search job's name: its folder is ``<output>/search``.
SEARCH_JOB = "search"

#: Fields of ``train.tracking`` that the pipeline's ``tracking`` section owns.
_OWNED_TRACKING = ("enabled", "tracking_uri", "experiment", "artifact_location")


class ValidateSection(ConfigModel):
    """Validation of the table against end-to-end measurements (``num_archs: 0`` skips it), under the table's own
    measurement protocol (the statistic the table predicts)."""

    num_archs: int = Field(20, ge=0, le=100_000)  # random archs (plus the space's presets that it contains)
    seed: Seed = 0
    calibrate_fraction: float = Field(0.3, ge=0, lt=1)  # share of the random archs fitting the calibrated predictor


class ProtocolSection(ConfigModel):
    """The measurement protocol (:class:`slimnas.latency.protocol.Protocol`; its defaults when a field is unset)."""

    statistic: Literal["median", "mean", "p25", "p10", "min"] = "median"
    passes: int = Field(8, ge=1, le=1000)
    samples: int = Field(5, ge=1, le=1_000_000)
    pass_ms: float = Field(40.0, ge=0, le=600_000)
    warmup_ms: float = Field(20.0, ge=0, le=600_000)
    tolerance: float = Field(0.10, gt=0, le=10)
    extra_passes: int = Field(4, ge=0, le=1000)
    quiet_passes: int = Field(3, ge=0, le=1000)
    settle_retries: int = Field(2, ge=0, le=10)
    reference_networks: int = Field(4, ge=0, le=16)
    reference_every_s: float = Field(5.0, gt=0, le=86_400)

    def protocol(self):
        from slimnas.latency.protocol import Protocol

        return Protocol(**self.model_dump())


class PipelineLatencySection(ConfigModel):
    """How the lookup table is measured (see ``slimnas lut build``), and where.

    ``backend`` names a latency backend (:data:`slimnas.registry.BACKENDS`: a built-in or a plug-in's); its settings
    are keys of this section too (``threads``, ``dtype``, ``allocator`` for ``torch-cpu``; ``provider`` for
    ``onnxruntime``; ``device`` for ``torch-cuda``; a plug-in's own), validated by that backend's ``Settings`` model:
    a key that is neither this section's nor the backend's is an error naming it. ``threads`` defaults to 1 here
    (one thread measures repeatably on a shared machine) for a backend that has it.
    """

    backend: str = "torch-cpu"
    table: str | None = None  # default: <output>/latency/<backend>-b<batch>.parquet
    batch: int = Field(1, ge=1, le=65536)
    form: Literal["fused", "eager"] | None = None  # default: the backend's
    protocol: ProtocolSection = ProtocolSection()  # how anything is timed (slimnas.latency.protocol)
    harness: Literal["context", "isolated"] | None = None  # where parts are timed; default: context where possible
    cover: int = Field(2, ge=1, le=100_000)  # context: each part in this many covering networks
    max_networks: int = Field(96, ge=1, le=100_000)  # context: at most this many covering networks
    fill: Literal["fitted", "isolated"] = "fitted"  # context: entries of parts no covering network holds
    # default for parts timed alone: 1.4 per part up to 300 parts, else 24 (slimnas.latency.builder); in context 0
    calibrate_networks: int | None = Field(None, ge=0, le=100_000)
    rotation_mb: float | Literal["auto"] = "auto"  # parts timed alone: MiB of rotating weight copies
    # None: measure in this process. A mapping: measure in a Ray task with these resources (e.g. {"GPU": 1,
    # "accelerator_type:V100": 0.01}), on the device the table is for; the table comes back to the driver.
    resources: dict[str, Annotated[float, Field(ge=0, le=1e6)]] | None = None
    validate_: ValidateSection = Field(ValidateSection(), alias="validate")

    # the backend's settings are the extra keys, checked by its own model (_backend_settings)
    model_config = {**ConfigModel.model_config, "populate_by_name": True, "extra": "allow"}

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from slimnas.registry import BACKENDS

        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r} (known: {', '.join(BACKENDS.names())})")
        return value

    @field_validator("rotation_mb")
    @classmethod
    def _rotation(cls, value: float | str) -> float | str:
        if value != "auto" and not 0 <= float(value) <= 65536:
            raise ValueError("rotation_mb: 'auto' or MiB from 0 to 65536")
        return value

    @model_validator(mode="after")
    def _backend_settings(self) -> PipelineLatencySection:
        """The extra keys, validated by the backend's settings model (errors name ``latency.<key>``)."""
        model = self.settings_model()
        try:
            model.model_validate(self.model_extra or {})
        except ValidationError as exc:
            error = exc.errors()[0]
            if error["type"] != "extra_forbidden":
                raise
            unknown = PydanticCustomError("unknown_setting", "unknown field (the settings of backend {backend}: "
                                          "{settings})", {"backend": self.backend,
                                                          "settings": ", ".join(model.model_fields)})
            raise ValidationError.from_exception_data(type(self).__name__, [
                {"type": unknown, "loc": error["loc"], "input": error["input"]}]) from None
        return self

    def settings_model(self):
        """The backend's settings model (its class's ``Settings``; imports the backend's module)."""
        from slimnas.latency.backends import backend_class

        return backend_class(self.backend).Settings

    def backend_settings(self) -> dict[str, Any]:
        """The ``get_backend`` settings: the section's keys for the backend (``threads`` 1 unless set)."""
        settings = self.settings_model().model_validate(self.model_extra or {}).model_dump(exclude_unset=True)
        if "threads" in self.settings_model().model_fields:
            settings.setdefault("threads", _DEFAULT_THREADS)
        return settings


#: The pipeline's ``latency.threads`` when unset, for a backend that has threads.
_DEFAULT_THREADS = 1


class PipelineSearchSection(ConfigModel):
    """The search job's fields that are the user's (see :class:`SearchJobConfig`)."""

    data: DataConfig | None = None  # evaluation data; default: the train section's
    eval_images: int | None = Field(None, ge=1, le=100_000_000)
    methods: list[MethodName] = Field(list(DEFAULT_METHODS), min_length=1)
    targets: list[TargetMs] | None = Field(None, min_length=1, max_length=1000)  # milliseconds
    # fractions of the predicted latency of slimming's start arch (the supernet's alpha), e.g. [0.9, 0.75, 0.6]
    targets_relative: list[float] | None = Field(None, min_length=1, max_length=1000)
    predictor: Literal["table", "calibrated"] = "table"  # calibrated: the validation's fitted predictor
    budget: Budget = "auto"
    slimming: SlimmingSection = SlimmingSection()
    early_stop: EarlyStopSection = EarlyStopSection()
    seed: Seed = 0
    measure_final: bool = True  # verify the winners on the table's backend (see SearchJobConfig.latency)
    tolerance_pct: float = Field(2.0, ge=0, le=1000)
    max_extra_steps: int = Field(5, ge=0, le=1000)

    @field_validator("targets_relative")
    @classmethod
    def _fractions(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(not 0 < t <= 1 for t in value):
            raise ValueError("fractions of the slimming start arch's predicted latency must lie in (0, 1]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSearchSection:
        if (self.targets is None) == (self.targets_relative is None):
            raise ValueError("give targets (ms) or targets_relative (fractions of the slimming start arch's predicted "
                             "latency)")
        if self.budget == "auto":
            from slimnas.search.methods import auto_budget_problem

            problem = auto_budget_problem(self.methods)
            if problem:
                raise ValueError(f"budget {problem}")
        return self


#: ``retrain.init: supernet`` without ``retrain.optim.lr``: the train section's learning rate times this.
FINE_TUNE_LR_FACTOR = 0.1


class RetrainSection(ConfigModel):
    """Retraining of the search job's winners (the stage :mod:`slimnas.platform.stages.retrain`), after the search.

    - ``enabled`` (default ``false``: retraining costs training time, so a job asks for it);
    - ``winners``: ``best`` (default: per target, the best answer that meets it, as the comparison marks it), a
      method's name (its winners at every target, e.g. ``slimming``) or a list of methods; every method named must be
      among ``search.methods``;
    - ``init``: ``supernet`` (default: fine-tune the winner's saved network, i.e. the supernet's weights with the
      BatchNorm statistics recalibrated for the subnet, exactly what the search evaluated) or ``scratch`` (random
      weights, the paper's retraining);
    - ``epochs``: default a tenth of ``train.run.epochs`` (at least 1) for ``supernet``, all of them for ``scratch``;
      ``max_steps_per_epoch`` and ``seed``: default the train section's;
    - ``optim``: the train section's ``optim`` with these keys replacing its own; for ``supernet`` the defaults are a
      tenth of its learning rate (:data:`FINE_TUNE_LR_FACTOR`) and no warm-up (the weights are trained already);
    - ``ray``: ``false`` (default) trains in this process, one winner after another; ``true`` on Ray Train with the
      workers and placement of ``train.distributed`` (``num_workers``, ``use_gpu``, ``accelerator_type``...), on the
      pipeline's Ray (``ray.address``); the job's output folder must then be on a file system the workers share.

    The data, augmentation, distillation and model (drop rates) are the train section's.
    """

    enabled: bool = False
    winners: str | list[str] = "best"
    init: Literal["supernet", "scratch"] = "supernet"
    epochs: int | None = Field(None, ge=1, le=1_000_000)
    max_steps_per_epoch: int | None = Field(None, ge=1, le=10**12)
    seed: Seed | None = None
    optim: OptimConfig = OptimConfig()  # filled from the train section's (PipelineConfig._fill_retrain)
    ray: bool = False

    @field_validator("winners")
    @classmethod
    def _winners(cls, value: str | list[str]) -> str | list[str]:
        from slimnas.registry import METHODS

        names = [value] if isinstance(value, str) else value
        if isinstance(value, list) and not value:
            raise ValueError("an empty list; give best, a method or a list of methods")
        for name in names:
            if name == "best" and isinstance(value, list):
                raise ValueError("best stands alone (the best answer per target), not in a list of methods")
            if name != "best" and name not in METHODS:
                raise ValueError(f"{name!r} is neither best nor a search method (known: "
                                 f"{', '.join(METHODS.names())})")
        return value

    def methods(self) -> list[str] | None:
        """The methods whose winners are retrained (``None``: the best per target)."""
        if self.winners == "best":
            return None
        return [self.winners] if isinstance(self.winners, str) else list(dict.fromkeys(self.winners))


class PipelineTrackingSection(ModelTracking):  # models, onnx_models, registered_model: the winners as MLflow models
    enabled: bool = True
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<working dir>/mlflow.db
    experiment: str = Field("slimnas", min_length=1, max_length=500)


class PipelineConfig(ConfigModel):
    """A whole pipeline job (see the module docstring)."""

    name: DirName = "pipeline"
    output: str | None = None  # default: runs/<name>
    # torch intra-op threads of this process while it trains (local training); None: torch's default. On a shared
    # machine, more threads than free cores collapse: each parallel op waits for its slowest thread.
    threads: int | None = Field(None, ge=1, le=4096)
    train: SupernetTrainConfig
    latency: PipelineLatencySection = PipelineLatencySection()
    search: PipelineSearchSection
    retrain: RetrainSection = RetrainSection()
    ray: RaySection = RaySection()
    tracking: PipelineTrackingSection = PipelineTrackingSection()

    @model_validator(mode="before")
    @classmethod
    def _fill_retrain(cls, data: Any) -> Any:
        """``retrain.optim``: the train section's optim, fine-tuning defaults (``init: supernet``: a tenth of the
        learning rate, no warm-up), then the keys the retrain section gives."""
        if not isinstance(data, dict) or not isinstance(data.get("retrain"), dict):
            return data
        retrain = dict(data["retrain"])
        given = retrain.get("optim", {})
        if not isinstance(given, dict):
            return data  # validation names retrain.optim
        train = data.get("train")
        base = train.get("optim") if isinstance(train, dict) else None
        optim = dict(base) if isinstance(base, dict) else {}
        if retrain.get("init", "supernet") == "supernet":
            lr = optim.get("lr", OptimConfig.model_fields["lr"].default)
            if isinstance(lr, (int, float)) and not isinstance(lr, bool):
                optim["lr"] = lr * FINE_TUNE_LR_FACTOR
            optim["warmup_epochs"] = 0
        retrain["optim"] = {**optim, **given}
        return {**data, "retrain": retrain}

    @model_validator(mode="after")
    def _retrained_methods_searched(self) -> PipelineConfig:
        for name in (self.retrain.methods() or ()) if self.retrain.enabled else ():
            if name not in self.search.methods:
                problem = PydanticCustomError("not_searched", "{name} is not among search.methods ({methods})",
                                              {"name": repr(name), "methods": ", ".join(self.search.methods)})
                raise ValidationError.from_exception_data(type(self).__name__, [
                    {"type": problem, "loc": ("retrain", "winners"), "input": self.retrain.winners}]) from None
        return self

    @model_validator(mode="before")
    @classmethod
    def _fill_train(cls, data: Any) -> Any:
        """``train.run`` under ``output``; ``train.tracking`` and ``train.distributed.address`` from the pipeline."""
        if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
            return data
        data = dict(data)
        train = {k: dict(v) if isinstance(v, dict) else v for k, v in data["train"].items()}
        output = data.get("output") or f"runs/{data.get('name') or 'pipeline'}"
        run = train.setdefault("run", {})
        if isinstance(run, dict):
            run.setdefault("out_dir", str(output))
            run.setdefault("name", "supernet")
        distributed, ray = train.get("distributed"), data.get("ray")
        if isinstance(distributed, dict) and isinstance(ray, dict) and ray.get("address"):
            distributed.setdefault("address", ray["address"])
        data["train"] = train
        return data

    # ------------------------------------------------------------------ derived paths
    @property
    def output_dir(self) -> Path:
        return Path(self.output or f"runs/{self.name}").expanduser()

    @property
    def table_path(self) -> Path:
        lat = self.latency
        return Path(lat.table).expanduser() if lat.table else \
            self.output_dir / "latency" / f"{lat.backend}-b{lat.batch}.parquet"

    @property
    def validation_dir(self) -> Path:
        return self.table_path.with_name(self.table_path.stem + "-validation")

    def tracking_uri(self) -> str:
        from slimnas.platform.tracking.store import default_tracking_uri

        return default_tracking_uri(self.tracking.tracking_uri)

    @property
    def search_dir(self) -> Path:
        """The search job's folder (``<output>/search``): its results, winners and retrained winners."""
        return self.output_dir / SEARCH_JOB

    @property
    def retrain_epochs(self) -> int:
        """``retrain.epochs``, or its default (see :class:`RetrainSection`)."""
        r, epochs = self.retrain, self.train.run.epochs
        return r.epochs or (max(1, epochs // 10) if r.init == "supernet" else epochs)

    # ------------------------------------------------------------------ the stages' own configs
    def retrain_config(self, arch: dict[str, Any], weights: str, run_dir: Path) -> ArchTrainConfig:
        """The :class:`~slimnas.trainers.ArchTrainConfig` that retrains ``arch`` (see :class:`RetrainSection`):
        from the winner's saved network ``weights`` (``init: supernet``) or from scratch, the train section's data,
        augmentation, distillation and drop rates, checkpoints under ``run_dir`` (resumed when a run was killed), no
        MLflow run of its own (the pipeline's run records the result)."""
        r, t = self.retrain, self.train
        distributed = t.distributed.model_dump()
        distributed.update(enabled=r.ray, address=t.distributed.address or self.ray.address,
                           storage_path=str(run_dir.parent))
        data = {
            "arch": arch, "init": "weights" if r.init == "supernet" else "scratch",
            "weights": weights if r.init == "supernet" else None,
            "data": t.data.model_dump(), "augment": t.augment.model_dump(), "optim": r.optim.model_dump(),
            "distill": t.distill.model_dump(),
            "model": {"drop_rate": t.model.drop_rate, "drop_path_rate": t.model.drop_path_rate},
            "run": {"name": run_dir.name, "out_dir": str(run_dir.parent), "epochs": self.retrain_epochs,
                    "seed": t.run.seed if r.seed is None else r.seed,
                    "max_steps_per_epoch": r.max_steps_per_epoch or t.run.max_steps_per_epoch, "resume": True,
                    "keep_checkpoints": 1, "eval_every": t.run.eval_every, "device": t.run.device,
                    "precision": t.run.precision, "channels_last": t.run.channels_last, "log_every": t.run.log_every},
            "distributed": distributed,
        }
        return load_config(ArchTrainConfig, data)

    def train_config(self) -> SupernetTrainConfig:
        """The train section with the pipeline's tracking filled in."""
        tracking = self.train.tracking.model_copy(update={"enabled": self.tracking.enabled,
                                                         "tracking_uri": self.tracking_uri(),
                                                         "experiment": self.tracking.experiment})
        return self.train.model_copy(update={"tracking": tracking})

    def search_job(self, supernet: str, table: str, targets: list[float], calibration: str | None = None,
                   reference: TargetsReference | None = None) -> SearchJobConfig:
        """The search job of this pipeline, given the earlier stages' outputs; ``reference``: what relative targets
        were resolved from (recorded in the job's config)."""
        s = self.search
        data = {
            "name": SEARCH_JOB, "output": str(self.output_dir), "supernet": supernet,
            "data": (s.data or self.train.data).model_dump(), "eval_images": s.eval_images,
            "latency": {"table": table, "calibration": calibration, "measure_final": s.measure_final,
                        "tolerance_pct": s.tolerance_pct,
                        "max_extra_steps": s.max_extra_steps},
            "methods": list(s.methods), "targets": targets, "budget": s.budget,
            "targets_reference": None if reference is None else reference.model_dump(mode="json"),
            "slimming": s.slimming.model_dump(), "early_stop": s.early_stop.model_dump(), "seed": s.seed,
            "ray": self.ray.model_dump(),
            "tracking": {"enabled": self.tracking.enabled, "tracking_uri": self.tracking_uri(),
                         "experiment": self.tracking.experiment, "models": self.tracking.models,
                         "onnx_models": self.tracking.onnx_models,
                         "registered_model": self.tracking.registered_model, "job": self.name},
        }
        return load_config(SearchJobConfig, data, section=None)



def load_pipeline(source: str | os.PathLike | Mapping[str, Any]) -> PipelineConfig:
    """Validate a pipeline config (YAML path or mapping); a bad field raises ``ConfigError`` naming it."""
    data = source if isinstance(source, Mapping) else load_yaml(source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping, got {type(data).__name__}")
    train = data.get("train")
    tracking = train.get("tracking") if isinstance(train, Mapping) else None
    if isinstance(tracking, Mapping):
        for key in _OWNED_TRACKING:
            if key in tracking:
                raise ConfigError(f"train.tracking.{key}: set by the pipeline's tracking section")
    return load_config(PipelineConfig, data)
