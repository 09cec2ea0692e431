"""``slimnas submit`` and ``slimnas jobs status | logs | stop``: pipeline jobs on a Ray cluster (Ray Jobs API)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _warn_local_paths(cfg) -> None:
    """Relative outputs of a submitted job land in its temporary working directory on the head: say so."""
    if not cfg.output_dir.is_absolute():
        _echo(f"note: output {cfg.output_dir} is relative: on the cluster it lands in the job's temporary working "
              f"directory; use a path on shared storage to keep it")
    uri = cfg.tracking.tracking_uri
    if cfg.tracking.enabled and (uri is None or (uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"))):
        import os

        if uri is None and os.environ.get("MLFLOW_TRACKING_URI"):
            return
        _echo("note: MLflow tracking goes to a SQLite file in the job's working directory; set tracking.tracking_uri "
              "(or MLFLOW_TRACKING_URI here) to your team's MLflow server")


def _submit(args: argparse.Namespace) -> int:
    from slimnas.platform.pipeline.config import load_pipeline
    from slimnas.platform.runtime.jobs import connect, submit, wait

    cfg = load_pipeline(args.config)  # bad configs fail here, before anything reaches the cluster
    client = connect(args.address)
    _warn_local_paths(cfg)
    run_args = [a for stage in args.force for a in ("--force", stage)] + (["--restore"] if args.restore else [])
    job_id = submit(client, args.config, working_dir=args.working_dir, run_args=run_args, ship_code=args.ship_code,
                    submission_id=args.job_id)
    print(job_id)
    where = args.address or "$RAY_API_SERVER_ADDRESS"
    _echo(f"submitted {job_id}; follow it with `slimnas jobs logs {job_id} --address {where}`")
    if not args.wait:
        return 0
    status = wait(client, job_id, echo=_echo)
    _echo(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _jobs(args: argparse.Namespace) -> int:
    from slimnas.platform.runtime.jobs import connect, job_logs, job_status, stop_job

    client = connect(args.address)
    if args.jobs_command == "status":
        print(json.dumps(job_status(client, args.job), indent=2, default=str))
    elif args.jobs_command == "logs":
        print(job_logs(client, args.job), end="")
    else:
        stopped = stop_job(client, args.job)
        print(f"job {args.job}: {'stop requested' if stopped else 'already ended'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("submit", help="run a pipeline config as a Ray job on a cluster (Ray Jobs API)")
    p.add_argument("--address", default=None, help="the head's dashboard, e.g. http://HEAD:8265 "
                   "(default $RAY_API_SERVER_ADDRESS); token from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / "
                   "~/.ray/auth_token")
    p.add_argument("--config", required=True, help="pipeline YAML; validated here before it is submitted")
    p.add_argument("--working-dir", default=None, help="folder uploaded as the job's working directory "
                   "(default: the config's folder; it must contain the config)")
    p.add_argument("--ship-code", action="store_true", help="also upload this machine's slimnas package")
    p.add_argument("--job-id", default=None, help="submission id (default: Ray's)")
    p.add_argument("--force", nargs="+", default=[], metavar="STAGE", help="passed to `slimnas run`")
    p.add_argument("--restore", action="store_true", help="passed to `slimnas run`")
    p.add_argument("--wait", action="store_true", help="follow the job's logs until it ends (exit 1 if it fails)")
    p.set_defaults(func=_submit)

    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=type(jobs))
    for name, text in (("status", "a job's status"), ("logs", "a job's logs"), ("stop", "stop a job")):
        q = jsub.add_parser(name, help=text)
        q.add_argument("job", help="the job's submission id")
        q.add_argument("--address", default=None, help="the head's dashboard (default $RAY_API_SERVER_ADDRESS)")
        q.set_defaults(func=_jobs, full_command=f"jobs {name}")
