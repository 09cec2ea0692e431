import pytest

from slimnas.latency import build_table
from slimnas.latency.backends import TorchCPUBackend
from slimnas.latency.protocol import Protocol
from slimnas.search_spaces.efficientformer import SearchSpace

#: A 1-slot space at 32 px: 14 parts, for tests that convert or measure every part.
MICRO = SearchSpace(name="micro", img_size=32, max_widths=(16, 16, 16, 32), slots=(1, 1, 1, 2))


#: A fast protocol for tests: 2 passes of 3 single-call samples (the numbers are real, just few).
FAST = Protocol(passes=2, samples=3, pass_ms=0.0, warmup_ms=1.0, extra_passes=1)


def fast_backend(**kwargs) -> TorchCPUBackend:
    return TorchCPUBackend(threads=1, **kwargs)


@pytest.fixture(scope="session")
def tiny_table(tmp_path_factory):
    """A complete table for the `tiny` space, its parts timed alone on torch-cpu inside the suite."""
    out = tmp_path_factory.mktemp("lut") / "tiny.parquet"
    return build_table(SearchSpace.preset("tiny"), fast_backend(), out, protocol=FAST, harness="isolated",
                       calibrate_networks=0)
