"""``slimnas train-supernet`` and ``slimnas train-arch``: train from a YAML config, with progress output."""

from __future__ import annotations

import argparse
import json
import sys


def _handler(kind: str):
    def run(args: argparse.Namespace) -> int:
        from slimnas.config import load_config
        from slimnas.platform.runtime.preflight import check_output_dir, check_ray_address, check_tracking_uri
        from slimnas.platform.stages.training import check_inputs, run_training
        from slimnas.trainers import ArchTrainConfig, SupernetTrainConfig

        cfg = load_config(SupernetTrainConfig if kind == "supernet" else ArchTrainConfig, args.config)
        if cfg.distributed.enabled:
            check_ray_address(cfg.distributed.address, "distributed.address")
        if cfg.tracking.enabled and cfg.tracking.tracking_uri:
            check_tracking_uri(cfg.tracking.tracking_uri, "tracking.tracking_uri")
        check_output_dir(cfg.run.out_dir, "run.out_dir")
        if args.check:
            num_classes = check_inputs(cfg)
            print(f"config OK: {args.config} ({cfg.data.kind} data, {num_classes} classes)")
            return 0
        try:
            result = run_training(cfg)
        except (RuntimeError, ArithmeticError) as exc:  # a failed Ray job, a diverged loss: one line, exit 1
            if type(exc).__name__ not in ("TrainingFailed", "FloatingPointError"):
                raise
            print(f"slimnas train-{kind}: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        summary = {"checkpoint": str(result.checkpoint), "epochs": result.epochs, "metrics": result.metrics}
        print(json.dumps(summary, indent=2))
        return 0

    return run


def register(sub) -> None:
    for kind, text in (("supernet", "train the supernet (Gumbel sampling, the paper's recipe)"),
                       ("arch", "retrain one arch, from scratch or from a supernet checkpoint")):
        p = sub.add_parser(f"train-{kind}", help=text)
        p.add_argument("--config", required=True, help="YAML config file")
        p.add_argument("--check", action="store_true", help="validate the config and its inputs, then exit")
        p.set_defaults(func=_handler(kind))
