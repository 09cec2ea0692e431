import pytest

from slimnas.latency import build_table
from slimnas.latency.backends import TorchCPUBackend
from slimnas.search_spaces.efficientformer import SearchSpace

#: A 1-slot space at 32 px: 14 parts, for tests that convert or measure every part.
MICRO = SearchSpace(name="micro", img_size=32, max_widths=(16, 16, 16, 32), slots=(1, 1, 1, 2))


def fast_backend(**kwargs) -> TorchCPUBackend:
    return TorchCPUBackend(threads=1, repeats=3, warmup_ms=5.0, min_sample_ms=0.5, **kwargs)


@pytest.fixture(scope="session")
def tiny_table(tmp_path_factory):
    """A complete table for the `tiny` space, measured on torch-cpu inside the suite."""
    out = tmp_path_factory.mktemp("lut") / "tiny.parquet"
    return build_table(SearchSpace.preset("tiny"), fast_backend(), out)
