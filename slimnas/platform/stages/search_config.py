"""The configuration of a search job (``slimnas search`` / ``slimnas sweep``), validated before anything runs."""

from __future__ import annotations

from pathlib import Path
from string import Formatter
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from slimnas.config import ConfigModel
from slimnas.trainers import DataConfig

__all__ = ["SearchJobConfig", "TargetsReference", "MethodName", "DEFAULT_METHODS", "LatencySection", "SlimmingSection",
           "EarlyStopSection", "RaySection", "TrackingSection", "ModelTracking", "RegisterTemplate", "registered_name",
           "TargetMs", "Seed", "Budget", "MAX_TARGET_MS", "MAX_BUDGET"]


def _known_method(value: str) -> str:
    from slimnas.registry import METHODS

    if value not in METHODS:
        raise ValueError(f"unknown search method {value!r} (known: {', '.join(METHODS.names())})")
    return value


#: A search method's name, as :data:`slimnas.registry.METHODS` knows it (built-ins, entry points, registered ones).
MethodName = Annotated[str, AfterValidator(_known_method)]
#: The methods a job compares when its config names none: the paper's slimming and three baselines.
DEFAULT_METHODS = ("slimming", "random", "tpe", "nsga2")

#: A latency target above this (100 s per inference) is refused as absurd.
MAX_TARGET_MS = 100_000.0
#: Evaluations per baseline and target.
MAX_BUDGET = 1_000_000


def _budget_in_range(value: int | str) -> int | str:
    if isinstance(value, int) and not 1 <= value <= MAX_BUDGET:
        raise ValueError(f"budget must be from 1 to {MAX_BUDGET} evaluations")
    return value


#: Evaluations per baseline and target, or ``auto`` (what slimming used).
Budget = Annotated[int | Literal["auto"], AfterValidator(_budget_in_range)]

#: A latency target in milliseconds: positive, finite, at most :data:`MAX_TARGET_MS`.
TargetMs = Annotated[float, Field(gt=0, le=MAX_TARGET_MS)]
#: A random seed (NumPy's generators take 0 .. 2**32 - 1).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
#: Resource amounts (Ray): finite and not negative.
Amount = Annotated[float, Field(ge=0, le=1e6)]


class LatencySection(ConfigModel):
    table: str  # a latency table (Parquet) of the supernet's space
    calibration: str | None = None  # a calibrated predictor fitted by `slimnas lut validate` (calibration.json)
    # verify each winning arch end to end on the table's backend at the end (slimnas.search.verification); false:
    # nothing is measured and meets_target stays empty
    measure_final: bool = True
    # a winner measured over target * (1 + tolerance_pct/100) fails it
    tolerance_pct: float = Field(2.0, ge=0, le=1000)
    max_extra_steps: int = Field(5, ge=0, le=1000)  # slimming steps past the end of a run's trajectory, per run


class SlimmingSection(ConfigModel):
    mb3d_removal: Literal["to_4d", "to_identity"] = "to_4d"


class EarlyStopSection(ConfigModel):
    enabled: bool = True
    rule: Literal["exact", "confident"] = "confident"
    z: float = Field(3.0, gt=0, le=100)


class RaySection(ConfigModel):
    address: str | None = None  # a cluster address ("auto", "ray://host:10001", "host:6379"); None: local ray.init()
    num_cpus: int | None = Field(None, ge=1, le=100_000)  # local Ray only
    object_store_mb: int = Field(256, ge=64, le=64 * 2**20)  # local Ray only (MiB)
    cpus_per_trial: float = Field(1.0, gt=0, le=1024)
    gpus_per_trial: float = Field(0.0, ge=0, le=64)
    max_concurrent: int | None = Field(None, ge=1, le=100_000)
    # where the latency actor goes, e.g. {"accelerator_type:V100": 0.01}
    latency_resources: dict[str, Amount] | None = None


#: The fields a ``tracking.registered_model`` template may name.
REGISTER_FIELDS = ("job", "experiment", "target", "method")


def registered_name(template: str, *, job: str, experiment: str, target: float, method: str) -> str:
    """The model-registry name ``template`` gives a winner: its ``{job}``, ``{experiment}``, ``{target}`` (the target
    in ms, a float: ``{target}`` writes ``1.64``, format specs such as ``{target:.1f}`` apply) and ``{method}``
    filled in. ``ValueError`` naming the problem when the template names another field or the name is not one the
    registry takes (empty, ``/`` or ``:``, over 200 characters)."""
    try:
        fields = [f for _, f, _, _ in Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"not a name template ({exc})") from None
    unknown = next((f for f in fields if f not in REGISTER_FIELDS), None)
    if unknown is not None:
        raise ValueError(f"unknown field {{{unknown}}} (known: {', '.join('{' + f + '}' for f in REGISTER_FIELDS)})")
    try:
        name = template.format(job=job, experiment=experiment, target=_Ms(target), method=method)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"not a name template ({exc})") from None
    if not name.strip() or "/" in name or ":" in name or len(name) > 200 or name != name.strip():
        raise ValueError(f"gives the name {name!r}: a registered model's name is 1 to 200 characters, without '/' "
                         "or ':' or surrounding spaces")
    return name


class _Ms(float):
    """A target in ms: ``{target}`` writes it as ``%g`` does (1.64, not 1.6400000000000001)."""

    def __format__(self, spec: str) -> str:
        return format(float(self), spec or "g")


def _register_template(value: str | None) -> str | None:
    if value is not None:
        registered_name(value, job="job", experiment="experiment", target=1.5, method="slimming")
    return value


#: A ``tracking.registered_model`` name template (:func:`registered_name`), checked when the config is read.
RegisterTemplate = Annotated[str | None, AfterValidator(_register_template)]


class ModelTracking(ConfigModel):
    """The tracking fields about MLflow models (:mod:`slimnas.platform.tracking.model`), shared by a search job's
    and a pipeline's ``tracking`` sections."""

    # which winners are logged as MLflow models on their child runs (pytorch flavour: a torch.export program, with
    # a signature and an input example; about 2-4 s each on 2 cores): all of them, the best per target (the
    # comparison's *), or none
    models: Literal["all", "best", "none"] = "all"
    # also log each of those winners as an MLflow model of the onnx flavour (``model-onnx``: the file
    # ``slimnas export --format onnx`` writes, checked in ONNX Runtime; served by mlflow's onnx flavour with ONNX
    # Runtime): about 0.5-1 s more per network
    onnx_models: bool = False
    # the logged winners registered in the model registry under this name template (registered_name: {job},
    # {experiment}, {target}, {method}); without {method} only the best winner per target is registered. Winners
    # whose names coincide are versions of one registered model (loosest target first). None: nothing registered
    registered_model: RegisterTemplate = None

    @model_validator(mode="after")
    def _registering_needs_models(self) -> ModelTracking:
        if self.registered_model is not None and self.models == "none":
            error = PydanticCustomError("registered_model", "registers logged models, and tracking.models is 'none'")
            raise ValidationError.from_exception_data(type(self).__name__, [
                {"type": error, "loc": ("registered_model",), "input": self.registered_model}])
        return self


class TrackingSection(ModelTracking):
    enabled: bool = True
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<output>/../mlflow.db
    experiment: str = Field("slimnas-search", min_length=1, max_length=500)
    job: str | None = Field(None, min_length=1, max_length=200)  # the {job} of registered_model (None: the job name)


class TargetsReference(ConfigModel):
    """Where a job's targets came from when they were given relative (``targets_relative``): the arch slimming
    starts from, its predicted latency, and the fractions of it. Written by whoever resolved them
    (:func:`slimnas.platform.stages.targets.resolve_relative_targets`); the job records it (``results.json``'s
    ``config``, MLflow params, the printed comparison) and checks that ``targets`` are those fractions of it."""

    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(..., min_length=1, max_length=1000)
    start: Literal["alpha", "max"] = "alpha"  # how the reference arch was chosen (slimnas.search.start)
    arch: dict[str, Any]  # the reference arch (Arch.to_dict)
    predicted_ms: float = Field(..., gt=0, le=MAX_TARGET_MS)  # its predicted latency
    predictor: Literal["table", "calibrated"] = "table"  # what predicted it

    def targets_ms(self) -> list[float]:
        """The targets in milliseconds, loosest first (each fraction of ``predicted_ms``, rounded to 0.1 us)."""
        return sorted({round(f * self.predicted_ms, 4) for f in self.fractions}, reverse=True)


class SearchJobConfig(ConfigModel):
    """One search job: the methods compared at each latency target, on one supernet and one latency table."""

    name: str = "search"
    supernet: str  # a supernet checkpoint (file, or a run's checkpoints folder: its latest)
    data: DataConfig = DataConfig()
    eval_images: int | None = Field(None, ge=1, le=100_000_000)  # validation images per evaluation (None: all)
    latency: LatencySection
    methods: list[MethodName] = list(DEFAULT_METHODS)  # names in slimnas.registry.METHODS
    targets: list[TargetMs] = Field(..., min_length=1, max_length=1000)  # latency targets (ms), a sweep when several
    # set when the targets were given as fractions of the slimming start arch's latency (the pipeline's
    # search.targets_relative): the reference they were resolved from, recorded with the results
    targets_reference: TargetsReference | None = None
    budget: Budget = "auto"  # evaluations per baseline and target; auto: what slimming used
    slimming: SlimmingSection = SlimmingSection()
    early_stop: EarlyStopSection = EarlyStopSection()
    seed: Seed = 0
    output: str = "runs/search"  # results go to <output>/<name>/
    ray: RaySection = RaySection()
    tracking: TrackingSection = TrackingSection()

    @field_validator("targets")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(t <= 0 for t in value):
            raise ValueError("targets must be positive latencies in ms")
        return sorted(set(value), reverse=True)

    @model_validator(mode="after")
    def _targets_from_reference(self) -> SearchJobConfig:
        ref = self.targets_reference
        if ref is not None and ref.targets_ms() != self.targets:  # an error naming targets, not the whole config
            error = PydanticCustomError("targets_reference", "not the fractions {fractions} of targets_reference's "
                                        "{ms} ms", {"fractions": ref.fractions, "ms": f"{ref.predicted_ms:g}"})
            raise ValidationError.from_exception_data(type(self).__name__, [
                {"type": error, "loc": ("targets",), "input": self.targets}])
        return self

    @field_validator("methods")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one method")
        return list(dict.fromkeys(value))

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        from slimnas.config import plain_dir_name

        return plain_dir_name(value)

    def job_dir(self) -> Path:
        return Path(self.output) / self.name
