"""The dependency rule of docs/design.md, checked in fresh interpreters."""

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


BLOCK = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, _Blocker())
"""


def test_search_spaces_work_without_ray_and_mlflow():
    result = _run("BLOCKED = {'ray', 'mlflow'}" + BLOCK + """
import slimnas.search_spaces
from slimnas.search_spaces.efficientformer import Arch, SuperNet, build_model, fuse_for_inference
import torch
net = SuperNet('tiny', num_classes=10)
model = fuse_for_inference(net.extract(net.space.max_arch()).eval())
print(model(torch.randn(1, 3, 64, 64)).shape)
assert 'ray' not in sys.modules and 'mlflow' not in sys.modules
""")
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 10])" in result.stdout


def test_arch_encoding_is_plain_python():
    result = _run("BLOCKED = {'torch', 'timm', 'ray', 'mlflow', 'numpy'}" + BLOCK + """
from slimnas.search_spaces.efficientformer import Arch, SearchSpace, importance_from_alphas
space = SearchSpace.preset('l7')
arch = space.sample(0)
assert space.contains(arch) and Arch.from_json(arch.to_json()) == arch
print(importance_from_alphas(space.kinds, [[[0.0] * len(k)] * n for k, n in zip(space.kinds, space.slots)]).stages)
""")
    assert result.returncode == 0, result.stderr
    assert "6.0, 6.0, 36.0, 16.0" in result.stdout


def test_search_algorithms_run_without_torch_ray_and_mlflow():
    result = _run("BLOCKED = {'torch', 'timm', 'ray', 'mlflow'}" + BLOCK + """
from slimnas.search import SlimmingSearch, RandomSearch, TPESearch
from slimnas.search.verification import MeasurementCache, SlimmingRun, verify_slimming
from slimnas.testing import TOY_SPACE, run_search, toy_latency
search = run_search(SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), [[1.0]] * 2 + [[1.0, 2.0]] * 2, toy_latency, 16.0))
print(search.trajectory[-1].latency_ms, search.evaluations)
run_search(TPESearch(TOY_SPACE, toy_latency, 17.0, budget=5))
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] in ("15.0", "16.0")


def test_trainers_train_without_ray_and_mlflow(tmp_path):
    result = _run("BLOCKED = {'ray', 'mlflow'}" + BLOCK + f"""
import slimnas.trainers
from slimnas.trainers import train_supernet, evaluate_arch, Evaluator, ParquetImageDataset
from slimnas.testing import tiny_train_config
result = train_supernet(tiny_train_config({str(tmp_path)!r}, run={{"max_steps_per_epoch": 1}}))
print("steps", result.history[0]["steps"])
assert 'ray' not in sys.modules and 'mlflow' not in sys.modules and 'slimnas.platform' not in sys.modules
""")
    assert result.returncode == 0, result.stderr
    assert "steps 1.0" in result.stdout


def test_only_the_ray_adapter_imports_ray_and_nothing_imports_platform():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "slimnas"
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        tops = {name.split(".")[0] for name in names}
        if not rel.startswith("platform/"):
            assert not any(n.startswith("slimnas.platform") for n in names), rel
            assert "mlflow" not in tops, rel
        if rel.startswith(("trainers/", "search_spaces/", "latency/", "search/")) and \
                rel not in ("trainers/ray_train.py", "latency/actor.py"):
            assert "ray" not in tops, rel
        if rel.startswith("search/"):
            assert not tops & {"torch", "timm", "ray"}, rel


def test_no_package_imports_another_packages_private_modules():
    """``slimnas.<a>`` imports only public modules of ``slimnas.<b>`` (the root's own helpers, ``slimnas._io`` and
    ``slimnas._lazy``, serve every package)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "slimnas"
    offenders = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        own = parts[0] if len(parts) > 1 else None
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for module in modules:
                names = module.split(".")
                if names[0] != "slimnas" or len(names) < 3 or names[1] == own:
                    continue
                if any(n.startswith("_") for n in names[2:]):
                    offenders.append(f"{path.relative_to(root)}: {module}")
    assert not offenders, offenders
