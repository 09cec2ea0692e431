#!/usr/bin/env python
"""Prediction throughput of a latency table: in-process ``predict_many`` and through the Ray ``LatencyActor``.

    python benchmarks/bench_latency_service.py --lut PATH [--seconds 3]

Archs are random archs of the table's space (sampled once, up front). In-process: ``table.predict_many`` on batches
of 10,000, and the scalar ``table.predict`` loop. Through the actor (local ``ray.init``): ``LatencyClient.predict_many``
for batches of 1, 100 and 10,000 (one round trip each, sequential). Reports archs per second.
Writes ``benchmarks/results/bench_latency_service.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimnas.latency import LatencyTable  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def rate(fn, batch: int, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lut", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    table = LatencyTable.load(args.lut)
    rng = random.Random(0)
    archs = [table.space.sample(rng) for _ in range(10_000)]
    out: dict = {"table": table.meta.describe(), "space": table.space.name}
    out["in_process_predict_many_10000"] = rate(lambda: table.predict_many(archs), 10_000, args.seconds)
    out["in_process_predict_scalar"] = rate(lambda: [table.predict(a) for a in archs[:1000]], 1000, args.seconds)

    import ray

    from slimnas.latency.actor import LatencyClient, start_latency_actor

    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        client = LatencyClient(start_latency_actor({"t": table}, name="lut-bench", detached=False))
        for batch in (1, 100, 10_000):
            chunk = archs[:batch]
            client.predict_many(chunk)
            out[f"actor_batch_{batch}"] = rate(lambda chunk=chunk: client.predict_many(chunk), batch, args.seconds)
    finally:
        ray.shutdown()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "bench_latency_service.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, path)
    for key, value in out.items():
        print(f"{key:34s} {value:,.0f} archs/s" if isinstance(value, float) else f"{key:34s} {value}")


if __name__ == "__main__":
    main()
