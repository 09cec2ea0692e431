import platform

import pytest
import torch

from slimnas.errors import InputError
from slimnas.latency import Part
from slimnas.latency.backends import (
    BACKENDS,
    BackendUnavailable,
    CoreMLBackend,
    ONNXRuntimeBackend,
    TorchCPUBackend,
    TorchCUDABackend,
    backend_class,
    backend_options,
    export_onnx,
    get_backend,
    table_options,
)
from slimnas.latency.modules import network_module, part_module
from slimnas.search_spaces.efficientformer import Arch

from .conftest import FAST, fast_backend


def test_torch_cpu_times_a_block_and_restores_threads():
    threads = torch.get_num_threads()
    backend = fast_backend()
    module, example = part_module(Part("mb4d", 1, 64, 64), img_size=64)
    measured = backend.measure(module, example, FAST)
    timing = measured.timing
    assert timing.count == 3 * measured.passes and 0 < timing.p10 <= timing.median <= timing.p90 < 1000
    assert measured.value == timing.median and len(measured.pass_values) == measured.passes + measured.disturbed >= 2
    assert torch.get_num_threads() == threads
    assert torch.get_num_threads() == threads
    info = backend.describe()
    assert info["threads"] == 1 and info["backend"] == "torch-cpu" and "logical cores" in info["device"]


def test_allocator_option_is_recorded_and_process_wide():
    from slimnas.latency.backends import TorchCPUBackend, allocator_state

    backend = fast_backend()
    backend.measure(*part_module(Part("to_grid", 2, 16, 16), img_size=64), FAST)
    assert backend.options() == {"allocator": "tuned"} and allocator_state() == "tuned"
    untuned = TorchCPUBackend(threads=1, allocator="default")
    with pytest.raises(BackendUnavailable, match="cannot be undone"):
        untuned.check()
    with pytest.raises(ValueError, match="allocator"):
        TorchCPUBackend(allocator="jemalloc")


@pytest.mark.parametrize("form", ["fused", "eager"])
def test_every_part_kind_runs_in_both_forms(form):
    for part in [Part("stem", 0, 3, 32), Part("downsample", 2, 32, 48), Part("mb4d", 0, 16, 16),
                 Part("mb3d", 3, 64, 64), Part("to_tokens", 2, 32, 32), Part("to_grid", 2, 32, 32),
                 Part("head", 3, 64, 10)]:
        module, example = part_module(part, img_size=64, batch=2, form=form)
        with torch.no_grad():
            out = module(example)
        assert out.shape[0] == 2, part


def test_onnxruntime_times_one_block():
    backend = ONNXRuntimeBackend(threads=1)
    assert backend.unavailable_reason() is None
    module, example = part_module(Part("mb3d", 3, 32, 32), img_size=64, form=backend.default_form)
    timing = backend.measure(module, example, FAST).timing
    assert timing.count >= 3 and timing.median > 0
    assert backend.versions()["provider"] == "CPUExecutionProvider"
    # the exported model computes what the module computes
    session = backend.session(export_onnx(module, example))
    out = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    assert abs(out - module(example).detach().numpy()).max() < 1e-4


def test_coreml_converts_one_block_here_and_says_why_it_cannot_time():
    backend = CoreMLBackend(compute_units="cpu_only")
    module, example = part_module(Part("mb4d", 2, 32, 32), img_size=64, form="eager")
    model = backend.convert(module, example)
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == ["input"]
    if platform.system() != "Darwin":
        reason = backend.unavailable_reason()
        assert "needs macOS" in reason and "\n" not in reason
        with pytest.raises(BackendUnavailable, match="backend coreml: timing Core ML models needs macOS"):
            backend.measure(module, example, FAST)


def test_unknown_and_unavailable_backends_say_so_in_one_line():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        get_backend("tpu")
    cuda = get_backend("torch-cuda")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="no CUDA device"):
            cuda.check()
    with pytest.raises(ValueError, match="provider"):
        ONNXRuntimeBackend(provider="tpu")
    with pytest.raises(ValueError, match="compute_units"):
        CoreMLBackend(compute_units="npu")
    with pytest.raises(ValueError, match="threads: Input should be greater than or equal to 1"):
        get_backend("torch-cpu", threads=0)


def test_whole_network_module_matches_the_arch():
    arch = Arch.preset("l1", img_size=64, slots=None)
    module, example = network_module(arch, batch=2, form="fused", num_classes=10)
    assert module(example).shape == (2, 10)


def test_onnxruntime_rotates_sessions_and_exports_each_structure_once():
    from slimnas.latency.modules import Rotation

    backend = ONNXRuntimeBackend(threads=1)
    module, example = part_module(Part("mb4d", 2, 32, 32), img_size=64, form="eager", rotation_mb=1.0)
    assert isinstance(module, Rotation) and len(module.copies) > 1
    run = backend.prepare(module, example)
    outs = [run()[0] for _ in range(len(module.copies) + 1)]
    assert all(o.shape == tuple(module.copies[0](example).shape) for o in outs)
    assert len(backend._exports) == 1  # the copies share one export (timing does not depend on weight values)


def test_context_sampling_times_every_module_of_a_running_network():
    from slimnas.latency import parts_of
    from slimnas.latency.modules import network_parts

    arch = Arch(64, (16, 32, 32, 48), (("4d",), ("4d", "id"), ("4d", "3d", "id", "id"), ("3d", "id", "id")))
    network, modules, example = network_parts(arch, num_classes=10)
    assert len(modules) == len(parts_of(arch, 10))
    record = fast_backend().sample_context(network, modules, example, FAST)
    assert len(record.network) >= 3 and len(record.parts) == len(modules)
    assert all(len(times) == len(record.network) and min(times) > 0 for times in record.parts)
    # the instrumented calls compute the network: their parts add up to about a whole call
    inside = sum(sorted(t)[len(t) // 2] for t in record.parts)
    whole = sorted(record.network)[len(record.network) // 2]
    assert 0.5 * whole < inside < 2.0 * whole
    with pytest.raises(BackendUnavailable, match="cannot time parts inside a running network"):
        ONNXRuntimeBackend(threads=1).sample_context(network, modules, example, FAST)


# ---------------------------------------------------------------------------------------------------- the registry
BUILTINS = {"torch-cpu": TorchCPUBackend, "torch-cuda": TorchCUDABackend, "onnxruntime": ONNXRuntimeBackend,
            "coreml": CoreMLBackend}


def test_the_registry_lists_the_four_builtins_and_pyproject_declares_exactly_them():
    from pathlib import Path

    import tomllib

    assert set(BACKENDS.builtins) == set(BUILTINS) and set(BUILTINS) <= set(BACKENDS.names())
    assert all(backend_class(name) is cls and cls.name == name for name, cls in BUILTINS.items())
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["slimnas.backends"] == BACKENDS.builtins


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_each_builtin_settings_model_round_trips(name):
    cls = BUILTINS[name]
    defaults = cls.Settings()
    assert cls.Settings.model_validate_json(defaults.model_dump_json()) == defaults
    assert all(f.description for f in cls.Settings.model_fields.values())  # every flag has its help
    backend = get_backend(name, **defaults.model_dump())
    assert backend.settings == defaults and backend.dtype == defaults.dtype
    # what a table records gives the same backend back (validation and search jobs rebuild it so)
    options = table_options(backend, rotation_mb=4.0)
    assert options["rotation_mb"] == 4.0 and backend_options(options) == backend.options()
    again = get_backend(name, threads=backend.threads, dtype=backend.dtype, **backend_options(options))
    assert (again.threads, again.dtype, again.options()) == (backend.threads, backend.dtype, backend.options())
    with pytest.raises(InputError, match=f"^bogus: not a setting of backend {name}"):
        get_backend(name, bogus=1)


def test_the_cli_flags_are_derived_from_the_settings_model(capsys):
    """A setting added to a backend's model is a flag of ``slimnas lut build``, typed and ranged by the model."""
    from pydantic import Field

    from slimnas.platform.cli import build_parser
    from slimnas.platform.commands._backend_flags import backend_settings

    class WarmCPU(TorchCPUBackend):
        name = "torch-cpu-warm"

        class Settings(TorchCPUBackend.Settings):
            preheat_s: float = Field(0.5, ge=0, le=60, description="run the CPU this long before timing")

    BACKENDS.register(WarmCPU.name, WarmCPU)
    try:
        argv = ["lut", "build", "--space", "tiny", "--out", "t.parquet", "--backend", WarmCPU.name]
        args = build_parser().parse_args([*argv, "--preheat-s", "2", "--threads", "3", "--allocator", "default"])
        assert backend_settings(args) == {"preheat_s": 2.0, "threads": 3, "allocator": "default"}
        assert backend_settings(build_parser().parse_args(argv)) == {}  # unset: the model's defaults
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--preheat-s", "99"])
        assert "argument --preheat-s: Input should be less than or equal to 60" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
        assert "run the CPU this long before timing (default: 0.5)" in " ".join(capsys.readouterr().out.split())
    finally:
        BACKENDS.unregister(WarmCPU.name)


class _CountingBuilder(TorchCPUBackend):
    """torch-cpu whose construction context counts how often it is entered (and builds on the CPU)."""

    entered = 0

    def building(self):
        type(self).entered += 1
        return torch.device("cpu")


def test_the_networks_a_backend_times_are_constructed_in_its_building_context(tmp_path):
    from slimnas.latency import build_table
    from slimnas.latency.context import covering_archs
    from slimnas.latency.validate import measure_networks, validation_archs

    from .conftest import MICRO

    backend = _CountingBuilder(threads=1)
    protocol = FAST.replace(reference_networks=1)
    table = build_table(MICRO, backend, tmp_path / "micro.parquet", protocol=protocol, harness="context",
                        calibrate_networks=0)
    # every covering network in every pass (at least two), and the reference networks once
    assert _CountingBuilder.entered >= 1 + 2 * len(covering_archs(MICRO)) >= 5
    _CountingBuilder.entered = 0
    archs = [a for _, a in validation_archs(MICRO, 2, 0)][-2:]
    measured = measure_networks(table, backend, archs, protocol)
    assert len(measured) == 2 and all(m.value > 0 for m in measured)
    assert _CountingBuilder.entered == 1  # the validated networks and the references, constructed together


def test_torch_cuda_constructs_on_its_gpu():
    with TorchCUDABackend(device="cuda:1").building():  # needs no GPU to enter: nothing is allocated
        assert torch.get_default_device() == torch.device("cuda:1")
    assert torch.get_default_device() == torch.device("cpu")
    with TorchCPUBackend(threads=1).building():
        assert torch.get_default_device() == torch.device("cpu")


@pytest.mark.parametrize("form", ["fused", "eager"])
def test_networks_are_constructed_wholly_on_the_default_device(form):
    """A GPU backend constructs on its device (``building``): a tensor pinned to the CPU anywhere in a network's
    construction would break its timing there. The meta device shows it without a GPU."""
    from slimnas.latency.modules import network_parts
    from slimnas.search_spaces.efficientformer import SearchSpace

    space = SearchSpace.preset("l7")
    for arch in (space.max_arch(), Arch.preset("l1", img_size=224, slots=space.slots)):
        with torch.device("meta"):
            network, modules, example = network_parts(arch, 2, form, 1000, 3)
            whole, example2 = network_module(arch, 2, form, 1000, 3)
        tensors = [example, example2, *whole.parameters(), *whole.buffers(), *network.parameters(),
                   *network.buffers(), *(t for m in modules for t in (*m.parameters(), *m.buffers()))]
        assert {t.device.type for t in tensors} == {"meta"}
        with torch.inference_mode():
            x = example
            for module in modules:
                x = module(x)
            assert network(example).shape == x.shape == (2, 1000)
