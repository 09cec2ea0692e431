"""slimnas.export: each format written, read back and run on its runtime against the network; the ONNX latency
backend's graph is the exported one; a failing exporter leaves nothing behind."""

import json

import numpy as np
import pytest
import torch

from slimnas.errors import ExportError, InputError
from slimnas.export import (
    CARD_KEY,
    EXPORT_KEY,
    ExportSource,
    check_export,
    export_winner,
    source_from_files,
    source_from_folder,
    timm_shape,
)
from slimnas.search_spaces.efficientformer import Arch, build_model
from slimnas.winners import winner_folder


@pytest.fixture(scope="module")
def source(tiny_winner):
    job, _ = tiny_winner
    return source_from_folder(winner_folder(job, "slimming", 1.5))


def _logits(model, x):
    with torch.no_grad():
        return model(x).numpy()


@pytest.fixture(scope="module")
def onnx_export(source, tmp_path_factory):
    return export_winner(source, "onnx", tmp_path_factory.mktemp("onnx") / "net.onnx")


def test_onnx_runs_in_onnxruntime_within_1e4_at_batch_8_and_any_batch_with_the_card(source, onnx_export):
    import onnx
    import onnxruntime as ort

    result = onnx_export
    assert result.path.name == "net.onnx" and result.form == "eager" and result.batch == "dynamic"
    assert result.check.max_abs_diff is not None and result.check.max_abs_diff <= 1e-4
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["net.onnx"]  # the staging folder is gone
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[CARD_KEY]) == source.card.to_dict()
    meta = json.loads(props[EXPORT_KEY])
    assert meta["num_classes"] == 10 and meta["input"]["shape"] == ["batch", 3, 64, 64] and meta["form"] == "eager"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for batch in (8, 3):
        x = torch.randn(batch, 3, 64, 64)
        want = _logits(source.model, x)
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == (batch, 10) and np.abs(want).max() > 1  # logits that weigh in the check
        assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("fmt, layout", [("onnx", "plain"), ("onnx-blocked", "blocked")])
def test_the_onnx_latency_backend_times_the_graph_that_export_writes(source, onnx_export, fmt, layout, tmp_path):
    import onnx

    from slimnas.latency.backends import ONNXRuntimeBackend

    exported = onnx_export if fmt == "onnx" else export_winner(source, fmt, tmp_path / "net.onnx")
    written = onnx.load(str(exported.path))
    backend = ONNXRuntimeBackend(threads=1, layout=layout)
    assert backend.default_form == exported.form and backend.options()["layout"] == layout
    timed = onnx.load_from_string(backend.exported(source.model, torch.randn(1, 3, 64, 64)))
    assert timed.graph == written.graph  # the same nodes, weights, names and dynamic batch dimension
    other = onnx.load(str(onnx_export.path)) if fmt != "onnx" else None
    if other is not None:  # and the two layouts are two graphs: the mixer has no Sub in the blocked one
        ops = {node.op_type for node in timed.graph.node}
        assert "Sub" in {node.op_type for node in other.graph.node} and "Sub" not in ops
        assert "BatchNormalization" in ops


def test_torch_export_program_loads_back_and_matches_at_any_batch(source, tmp_path):
    result = export_winner(source, "torch-export", tmp_path / "net.pt2")
    assert result.form == "fused" and result.check.max_abs_diff <= 1e-4
    program = torch.export.load(str(result.path))
    for batch in (8, 5):
        x = torch.randn(batch, 3, 64, 64)
        assert np.abs(_logits(program.module(), x) - _logits(source.model, x)).max() <= 1e-4


def test_torch_format_is_a_winner_folder_that_load_winner_reads(source, tmp_path):
    import slimnas

    result = export_winner(source, "torch", tmp_path / "out")
    assert set(result.files) == {"weights.pt", "arch.json", "model.json", "slimnas-export.json"}
    model, card = slimnas.load_winner(result.path)
    x = torch.randn(4, 3, 64, 64)
    assert card == source.card and np.array_equal(_logits(model, x), _logits(source.model, x))


def test_the_fused_form_converts_to_core_ml_and_says_it_cannot_run_here(source, tmp_path):
    import platform

    import coremltools as ct

    result = export_winner(source, "coreml", tmp_path / "net.mlpackage", form="fused")  # torch.lerp inside
    assert result.path.is_dir() and result.batch == "1"
    if platform.system() != "Darwin":
        assert result.check.max_abs_diff is None and result.check.note.startswith("Core ML prediction needs macOS")
        assert "\n" not in result.check.note
    spec = ct.utils.load_spec(str(result.path))
    assert json.loads(spec.description.metadata.userDefined[CARD_KEY]) == source.card.to_dict()
    assert [i.name for i in spec.description.input] == ["input"]


def test_a_timm_shaped_arch_exports_a_checkpoint_timm_loads(tmp_path):
    import timm

    arch = Arch(224, (16, 32, 48, 64), (("4d",), ("4d",), ("4d",), ("4d", "3d")))
    model = build_model(arch, num_classes=5).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "arch.json").write_text(arch.to_json())
    src = source_from_files(tmp_path / "arch.json", tmp_path / "w.pt")  # 5 classes, read from the weights
    assert src.num_classes == 5 and src.card is None
    result = export_winner(src, "timm", tmp_path / "timm")
    config = json.loads((result.path / "config.json").read_text())
    assert config["architecture"] == "efficientformer_l1"
    assert config["model_args"]["depths"] == [1, 1, 1, 2] and config["model_args"]["num_vit"] == 1
    loaded = timm.create_model("efficientformer_l1", num_classes=5, depths=(1, 1, 1, 2), embed_dims=(16, 32, 48, 64),
                               num_vit=1).eval()
    loaded.load_state_dict(torch.load(result.path / "pytorch_model.bin", weights_only=True))
    x = torch.randn(2, 3, 224, 224)
    assert np.abs(_logits(loaded, x) - _logits(model, x)).max() <= 1e-5
    assert timm_shape(Arch.preset("l1")) == ("efficientformer_l1", {})
    assert timm_shape(Arch.preset("l7")) == ("efficientformer_l7", {})


def test_an_arch_not_shaped_like_timm_is_one_line_before_any_work(source, tmp_path):
    with pytest.raises(InputError) as info:
        check_export("timm", tmp_path / "timm", source=source)
    message = str(info.value)
    assert "\n" not in message and "input is 64 px" in message and "export it as torch" in message
    assert not (tmp_path / "timm").exists()


class _Unexportable(torch.nn.Module):
    """A network with an op the ONNX exporter has no conversion for (``aten::special_i0`` at opset 17)."""

    def forward(self, x):
        return torch.special.i0(x).mean(dim=(2, 3))


def test_a_failing_exporter_is_an_error_and_leaves_nothing_behind(source, tmp_path):
    broken = ExportSource(_Unexportable(), source.arch, 3, 3, None, "a module the exporter cannot export")
    out = tmp_path / "deep" / "net.onnx"
    with pytest.raises(ExportError) as info:
        export_winner(broken, "onnx", out)
    assert str(info.value).startswith("ONNX export (torch.onnx.export, TorchScript exporter, opset 17) of "
                                      "_Unexportable failed")
    assert list(tmp_path.iterdir()) == []  # no file, no staging folder, not even the folder made for it


def test_bad_output_paths_are_refused_before_any_work(tmp_path):
    (tmp_path / "there.onnx").write_bytes(b"old")
    cases = {("onnx", "net.pt2"): "the onnx format writes a .onnx file; name it *.onnx",
             ("coreml", "net"): "writes a .mlpackage file", ("torch", "net.onnx"): "writes a folder of files",
             ("onnx", "there.onnx"): "exists; remove it",
             ("tflite", "net.tflite"): "--format: unknown format 'tflite' (known: torch, torch-export, onnx, "
                                       "onnx-blocked, coreml"}
    for (fmt, name), needle in cases.items():
        with pytest.raises(InputError) as info:
            check_export(fmt, tmp_path / name)
        assert needle in str(info.value), str(info.value)
    assert (tmp_path / "there.onnx").read_bytes() == b"old"
    assert check_export("onnx", tmp_path / "there.onnx", overwrite=True)[1] == tmp_path / "there.onnx"


def _reorders(model_bytes: bytes, tmp_path) -> int:
    """Layout reorders in ONNX Runtime's optimized CPU graph (one thread, every optimization, as the backend runs)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(options.optimized_model_filepath).graph.node
    return sum(node.op_type in ("ReorderInput", "ReorderOutput") for node in nodes)


def test_onnx_blocked_keeps_onnxruntimes_blocked_layout_through_mb4d_blocks(source, onnx_export, tmp_path):
    from slimnas.latency.backends import ONNXRuntimeBackend, export_onnx
    from slimnas.search_spaces import onnx_blocked_layout
    from slimnas.search_spaces.efficientformer._blocks import MB4D

    torch.manual_seed(0)
    arch = Arch(64, (32, 48, 64, 96), (("4d", "4d"), ("4d", "4d"), ("4d", "4d", "4d"), ("4d", "3d")))
    model = build_model(arch, num_classes=10).eval()
    example = torch.randn(1, 3, 64, 64)
    plain = export_onnx(model, example)  # the onnx format: as timm writes the mixer (what the tables time)
    with onnx_blocked_layout():
        blocked = export_onnx(model, example)
    blocks = sum(isinstance(m, MB4D) for m in model.modules())
    plain_reorders = _reorders(plain, tmp_path)
    if plain_reorders == 0:
        pytest.skip("this CPU's ONNX Runtime has no blocked NCHWc layout (no AVX2): nothing to keep")
    assert plain_reorders >= 4 * blocks - 2  # out of the layout and back in, twice per block
    assert _reorders(blocked, tmp_path) <= 2  # once into the layout at the stem, once out before the MB3D tokens
    # the format: the same network and checks as onnx (within 1e-4 at batch 8 and 1), the other graph
    result = export_winner(source, "onnx-blocked", tmp_path / "net.onnx")  # raises if its own check fails
    assert result.check.max_abs_diff is not None
    x = torch.randn(8, 3, 64, 64)
    session = ONNXRuntimeBackend(threads=1).session(result.path.read_bytes())
    want = _logits(source.model, x)
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - want).max() <= 1e-4
    assert _reorders(result.path.read_bytes(), tmp_path) < _reorders(onnx_export.path.read_bytes(), tmp_path)
