"""``slimnas search`` and ``slimnas sweep``."""

from __future__ import annotations

import argparse
import sys

from slimnas.errors import ConfigError, InputError, shorten


def _load(args: argparse.Namespace):
    from slimnas.config import load_config, load_yaml
    from slimnas.platform.stages.search_config import SearchJobConfig

    data = load_yaml(args.config)
    if isinstance(data, dict) and "search" in data:
        data = data["search"]
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping (optionally under a 'search' key)")
    if getattr(args, "targets", None) is not None:
        try:
            data["targets"] = [float(t) for t in args.targets.split(",") if t.strip()]
        except ValueError:
            raise InputError(f"--targets: expected comma-separated milliseconds, got {shorten(repr(args.targets))}") \
                from None
        if not data["targets"]:
            raise InputError("--targets: give at least one latency target in ms")
        data.pop("targets_reference", None)  # the command line's milliseconds replace the relative ones
    if getattr(args, "methods", None):
        data["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    return load_config(SearchJobConfig, data, section=None)


def _search(args: argparse.Namespace) -> int:
    from slimnas.platform.runtime.preflight import check_search_job
    from slimnas.platform.stages.search import finished_job, run_search_job

    cfg = _load(args)
    check_search_job(cfg)  # addresses, output folder, table, calibration: before anything starts
    if args.restore and (done := finished_job(cfg)) is not None:
        print(f"search job '{cfg.name}' had finished: nothing to restore ({done.job_dir}/results.json unchanged)")
        return 0
    job = run_search_job(cfg, restore=args.restore, echo=lambda line: print(line, file=sys.stderr, flush=True))
    print(job.table_text())
    print(f"\nresults: {job.job_dir}/results.csv   Pareto plot: {job.job_dir}/pareto.png   "
          f"report: {job.job_dir}/report.md")
    if job.mlflow_run_id:
        print(f"MLflow parent run {job.mlflow_run_id}; compare candidates with `slimnas ui`")
    return 0


def register(sub) -> None:
    for name, helptext in (("search", "run slimming and baselines on a supernet at latency targets"),
                           ("sweep", "the same, at the latency targets given on the command line")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--config", required=True, help="search job YAML (see configs/search-*.yaml)")
        if name == "sweep":
            p.add_argument("--targets", required=True, help="comma-separated latency targets in ms, e.g. 1,1.5,2")
        p.add_argument("--methods", default=None, help="comma-separated subset of methods (overrides the config)")
        p.add_argument("--restore", action="store_true",
                       help="continue a killed run of this job in a new process (a finished job: nothing to do)")
        p.set_defaults(func=_search)
