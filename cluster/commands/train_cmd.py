"""`recsys train two-tower|ranker`, `recsys index build`, `recsys eval`, `recsys review`,
`recsys quality-gate`, `recsys batch-score`, `recsys fallback-lists`, `recsys analyze-experiment`.

Thin shortcuts for the training jobs. With a cluster address (``--address``, else
``$RAY_DASHBOARD_ADDRESS``, else an ``http://`` ``$RAY_ADDRESS``) the job is submitted through
the Ray Jobs API with the repository as working dir and ``RECSYS_HOME`` set to it, so relative
storage paths still point at this checkout; otherwise it runs in this process.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from cluster.ui import CliError

REPO_ROOT = Path(__file__).resolve().parents[2]
JOBS = {
    ("train", "two-tower"): ("training.two_tower", "configs/train/two_tower.yaml"),
    ("train", "ranker"): ("training.ranker", "configs/train/ranker.yaml"),
    ("index", "build"): ("training.build_index", "configs/train/build_index.yaml"),
    ("eval", None): ("training.evaluate", "configs/train/evaluate.yaml"),
    ("review", None): ("training.review", "configs/train/pipeline.yaml"),
    ("quality-gate", None): ("training.quality_gate", "configs/train/quality_gate.yaml"),
    ("batch-score", None): ("training.batch_score", "configs/train/batch_score.yaml"),
    ("fallback-lists", None): ("training.fallback_lists", "configs/train/fallback_lists.yaml"),
    ("analyze-experiment", None): ("training.analyze_experiment", "configs/train/analyze_experiment.yaml"),
}
EXCLUDES = [".venv", ".git", "var", "**/__pycache__", "benchmarks/results"]


def _common(p: argparse.ArgumentParser, module: str, config: str) -> None:
    p.add_argument("--config", default=config)
    p.add_argument("--tenant")
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--address", help="Ray dashboard URL to submit to (default: run in-process)")
    p.add_argument("--no-wait", action="store_true", help="submit and return the job id")
    p.set_defaults(func=run_job, job_module=module)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a model (Ray Train job)")
    tsub = train.add_subparsers(dest="train_command", required=True)
    for (group, name), (module, config) in JOBS.items():
        if group == "train":
            p = tsub.add_parser(name, help=f"python -m {module}")
            _common(p, module, config)
            p.add_argument("--resume", action="store_true", help="continue the latest run")
            p.add_argument("--allow-bad-data", metavar="REASON",
                           help="train although the data-quality gate fails (the reason goes in the lineage)")
    index = subparsers.add_parser("index", help="item embeddings and the ANN index")
    isub = index.add_subparsers(dest="index_command", required=True)
    _common(isub.add_parser("build", help="python -m training.build_index"), *JOBS[("index", "build")])
    _common(subparsers.add_parser("eval", help="offline evaluation report"), *JOBS[("eval", None)])
    for name, what in (("quality-gate", "data-quality gate over the events training reads"),
                       ("batch-score", "precompute slates with the production versions (batch_recs)"),
                       ("fallback-lists", "generate, validate and publish the safe fallback lists")):
        _common(subparsers.add_parser(name, help=f"{what}: python -m {JOBS[(name, None)][0]}"), *JOBS[(name, None)])
    readout = subparsers.add_parser("analyze-experiment", help="an experiment's readout: per-arm rates with "
                                    "intervals, guardrails: python -m training.analyze_experiment")  # fmt: skip
    _common(readout, *JOBS[("analyze-experiment", None)])
    readout.add_argument("--experiment", help="experiment id (default: the job config's)")
    readout.add_argument("--start", help="first decision date YYYY-MM-DD (default: the plan's start)")
    readout.add_argument("--end", help="last decision date (default: start + planned duration)")
    review = subparsers.add_parser("review", help="launch review of the candidates")
    _common(review, *JOBS[("review", None)])
    from core.promotion import CHECKLIST_ITEMS

    decision = review.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve if nothing is missing")
    decision.add_argument("--reject", action="store_true", help="record a rejection")
    review.add_argument("--sign-off", action="append", default=[], choices=CHECKLIST_ITEMS,
                        metavar="ITEM", help=f"record a checklist item as done (repeatable): "
                        f"{', '.join(CHECKLIST_ITEMS)}")  # fmt: skip
    review.add_argument("--kind", action="append", help="review only these kinds (repeatable)")
    review.add_argument("--actor", help="who reviews (default: $USER)")
    review.add_argument("--comment")


def job_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--config", args.config]
    if args.tenant:
        argv += ["--tenant", args.tenant]
    if args.smoke_test:
        argv.append("--smoke-test")
    if getattr(args, "resume", False):
        argv.append("--resume")
    if getattr(args, "allow_bad_data", None):
        argv += ["--allow-bad-data", args.allow_bad_data]
    if getattr(args, "approve", False) or getattr(args, "reject", False) or getattr(args, "sign_off", None):
        for item in args.sign_off:
            argv += ["--sign-off", item]
        argv += ["--approve"] if args.approve else ["--reject"] if args.reject else []
        argv += ["--actor", args.actor or os.environ.get("USER", "unknown")]
    for kind in getattr(args, "kind", None) or []:
        argv += ["--kind", kind]
    if getattr(args, "comment", None):
        argv += ["--comment", args.comment]
    for name in ("experiment", "start", "end"):
        if getattr(args, name, None):
            argv += [f"--{name}", getattr(args, name)]
    return argv


def job_command(module: str, argv: list[str], python: str = "python") -> str:
    """The shell command a job runs as: ``python -m module argv`` (what :func:`submit` sends,
    and what the KubeRay ``RayJob`` of the nightly pipeline runs, :mod:`cluster.kuberay`)."""
    return shlex.join([python, "-m", module, *argv])


def dashboard_address(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("RAY_DASHBOARD_ADDRESS"):
        return os.environ["RAY_DASHBOARD_ADDRESS"]
    address = os.environ.get("RAY_ADDRESS", "")
    return address if address.startswith("http") else None


def submit(
    address: str, module: str, argv: list[str], wait: bool = True, python: str | None = None
) -> tuple[str, str]:
    """Submit ``python -m module argv`` to the cluster; returns ``(job_id, final status)``.

    ``python``: the interpreter on the cluster (default ``$RECSYS_JOB_PYTHON``, else ``python``).
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    from cluster.ui import require_dashboard

    require_dashboard(address)
    client = JobSubmissionClient(address)
    env_vars = {"RECSYS_HOME": str(REPO_ROOT)}
    for name in ("RECSYS_CONFIG", "RECSYS_REGISTRY"):
        if os.environ.get(name):
            env_vars[name] = os.environ[name]
    job_id = client.submit_job(
        entrypoint=job_command(module, argv, python or os.environ.get("RECSYS_JOB_PYTHON", "python")),
        runtime_env={"working_dir": str(REPO_ROOT), "excludes": EXCLUDES, "env_vars": env_vars},
    )
    if not wait:
        return job_id, client.get_job_status(job_id).value
    import time

    done = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    shown = 0  # stream the job's output as it grows, so its progress bars are visible live
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        sys.stdout.write(logs[shown:])
        sys.stdout.flush()
        shown = len(logs)
        if status in done:
            return job_id, status.value
        time.sleep(1.0)


def check_job_args(args: argparse.Namespace) -> None:
    """The job's config file exists and ``--tenant`` (when given) is a tenant of the platform
    config the job will read; :class:`CliError` otherwise, before a cluster is involved."""
    import yaml

    from core.config import load_platform_config

    if not Path(args.config).is_file():
        raise CliError(f"--config {args.config}: no such file (the job configs are in configs/train/)")
    experiment = getattr(args, "experiment", None)
    if not args.tenant and not experiment:
        return
    job_config = yaml.safe_load(Path(args.config).read_text()) or {}
    platform_path = job_config.get("platform_config") if isinstance(job_config, dict) else None
    platform = load_platform_config(platform_path)
    tenants = [t.id for t in platform.tenants]
    if args.tenant and args.tenant not in tenants:
        raise CliError(f"unknown tenant {args.tenant!r}; the platform config has: {', '.join(tenants)}")
    ids = [e.id for e in platform.experiments]
    if experiment and experiment not in ids:
        raise CliError(f"unknown experiment {experiment!r}; the platform config has: {', '.join(ids) or 'none'}")


def run_job(args: argparse.Namespace) -> int:
    import importlib

    check_job_args(args)
    argv = job_argv(args)
    address = dashboard_address(args.address)
    if address:
        job_id, status = submit(address, args.job_module, argv, wait=not args.no_wait)
        print(f"job {job_id}: {status}")
        return 0 if status in ("SUCCEEDED", "PENDING", "RUNNING") else 1
    return importlib.import_module(args.job_module).main(argv)
