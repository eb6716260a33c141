"""The readout of an experiment, as a job: per-arm exposures and click/like/hide rates with
confidence intervals, each treatment against control, guardrail verdicts.

    python -m training.analyze_experiment --config configs/train/analyze_experiment.yaml \
        [--experiment ID] [--tenant T] [--start YYYY-MM-DD] [--end YYYY-MM-DD]

Ray Data reads the tenant's decision log (one JSON record per served request) and keeps the
experiment's exposures (request id, user, arm); it reads the click, like and hide events of
the event log, and joins the two by request id (one group-by over both sides: each
exposure with whether its slate got a click, a like, a hide; an exposure without events has
no outcomes; events of other requests are dropped). Exposures are summed per (arm, user) and users per
arm into a few moments, from which :mod:`training.experiment_stats` computes per-user
delta-method intervals. The plan (control, primary metric, guardrails, weights) is the
experiment's own (``configs/platform.yaml``). Writes ``<work_dir>/<tenant>/experiments/
<id>.json`` and prints a table. Exit status 0 = the readout ran (whatever it found), 2 = the
experiment or its data is missing.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.config import ExperimentConfig, load_platform_config, resolve_uri
from core.train_config import AnalyzeExperimentConfig
from training import common
from training.experiment_stats import OUTCOME, ArmMoments, analyze

DEFAULT_CONFIG = "configs/train/analyze_experiment.yaml"
OUTCOMES = ("clicked", "liked", "hid")
EVENT_OUTCOME = {"click": "clicked", "like": "liked", "hide": "hid"}


# ---------------------------------------------------------------- per-batch steps (pure)


TAGGED = pa.schema([("request_id", pa.string()), ("user_id", pa.string()), ("arm", pa.string()),
                    ("fallback", pa.int64()), ("exposure", pa.int64()),
                    ("clicked", pa.int64()), ("liked", pa.int64()), ("hid", pa.int64())])  # fmt: skip
"""One row per exposure (``exposure`` 1, outcomes 0) or per event (``exposure`` 0, the
event's outcome 1): the two sides of the join by request id, in one schema."""


def exposures_from_lines(batch: dict[str, np.ndarray], experiment_id: str) -> pa.Table:
    """Decision-log lines (``text``) → the experiment's exposures as :data:`TAGGED` rows
    (``arm``, ``user_id``, ``fallback`` 1 if the request was served a fallback)."""
    cols: dict[str, list] = {"request_id": [], "user_id": [], "arm": [], "fallback": []}
    for line in batch["text"]:
        if not line or not line.strip():
            continue
        rec = json.loads(line)
        exp = rec.get("experiment") or {}
        if exp.get("id") != experiment_id:
            continue
        cols["request_id"].append(rec["request_id"])
        cols["user_id"].append(rec["user_id"])
        cols["arm"].append(exp.get("arm", ""))
        cols["fallback"].append(int(bool(rec.get("fallback"))))
    n = len(cols["request_id"])
    zeros = [0] * n
    return pa.table({**cols, "exposure": [1] * n, "clicked": zeros, "liked": zeros, "hid": zeros}, schema=TAGGED)


def outcome_flags(batch: pa.Table) -> pa.Table:
    """Events (``request_id``, ``event_type``) → :data:`TAGGED` rows with 0/1 ``clicked``/
    ``liked``/``hid``; events without a request id cannot be attributed and are dropped."""
    import pyarrow.compute as pc

    batch = batch.filter(pc.is_valid(batch["request_id"]))
    n = batch.num_rows
    out = {"request_id": batch["request_id"], "user_id": pa.nulls(n, pa.string()),
           "arm": pa.nulls(n, pa.string()), "fallback": pa.array(np.zeros(n, dtype=np.int64)),
           "exposure": pa.array(np.zeros(n, dtype=np.int64))}  # fmt: skip
    for event_type, outcome in EVENT_OUTCOME.items():
        out[outcome] = pc.cast(pc.equal(batch["event_type"], event_type), pa.int64())
    return pa.table(out, schema=TAGGED)


def attribute_outcomes(group: pa.Table) -> pa.Table:
    """All :data:`TAGGED` rows of one request id → its exposure with each outcome 0/1 (a slate
    clicked twice was clicked; one without events has none), or no row when the request is
    not an exposure of the experiment (events answering other requests)."""
    # A group is a few rows (a request and its events): plain Python over them costs a third
    # of a compute kernel call per column, and this runs once per request.
    cols = group.select(TAGGED.names).to_pydict()
    try:
        first = cols["exposure"].index(1)
    except ValueError:
        return TAGGED.empty_table()
    row = {c: [cols[c][first]] for c in ("request_id", "user_id", "arm", "fallback")}
    row["exposure"] = [1]
    for outcome in OUTCOMES:
        row[outcome] = [int(max((v or 0) for v in cols[outcome]))]
    return pa.table(row, schema=TAGGED)


def user_moments(batch: pa.Table) -> pa.Table:
    """Per-(arm, user) sums → the per-user products :class:`ArmMoments` sums over users."""
    n = batch["sum(exposure)"].to_numpy().astype(np.float64)
    out = {"arm": batch["arm"], "users": pa.array(np.ones(len(n), dtype=np.int64)),
           "fallback": batch["sum(fallback)"], "n": n, "nn": n * n}  # fmt: skip
    for outcome in OUTCOMES:
        y = batch[f"sum({outcome})"].to_numpy().astype(np.float64)
        out[f"y_{outcome}"], out[f"yy_{outcome}"], out[f"ny_{outcome}"] = y, y * y, n * y
    return pa.table(out)


MOMENT_COLUMNS = ["users", "fallback", "n", "nn"] + [
    f"{p}_{o}" for o in OUTCOMES for p in ("y", "yy", "ny")
]


def arm_moments(rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, ArmMoments]], dict[str, dict]]:
    """Per-arm sums (``sum(<column>)``) → :func:`training.experiment_stats.analyze`'s inputs."""
    moments, exposures = {}, {}
    for row in rows:
        s = {c: float(row[f"sum({c})"]) for c in MOMENT_COLUMNS}
        arm = row["arm"]
        exposures[arm] = {"users": int(s["users"]), "exposures": int(s["n"]),
                          "fallback_exposures": int(s["fallback"])}  # fmt: skip
        moments[arm] = {
            metric: ArmMoments(users=int(s["users"]), sum_n=s["n"], sum_nn=s["nn"],
                               sum_y=s[f"y_{o}"], sum_yy=s[f"yy_{o}"], sum_ny=s[f"ny_{o}"])
            for metric, o in OUTCOME.items()
        }  # fmt: skip
    return moments, exposures


# ---------------------------------------------------------------- the job


def plan_of(exp: ExperimentConfig) -> dict[str, Any]:
    return {
        "control": exp.control,
        "primary_metric": exp.primary_metric or "click_rate",
        "guardrails": [g.model_dump() for g in exp.guardrails],
        "weights": {v.name: v.weight for v in exp.variants},
    }


def window(exp: ExperimentConfig, start: str | None, end: str | None) -> tuple[str | None, str | None]:
    """Decision dates to read: the arguments, else the plan's start and duration (inclusive)."""
    lo = start or (exp.start.isoformat() if exp.start else None)
    hi = end
    if hi is None and lo is not None and exp.planned_duration_days:
        hi = (date.fromisoformat(lo) + timedelta(days=exp.planned_duration_days - 1)).isoformat()
    return lo, hi


def decision_files(root: str, tenant: str, start: str | None, end: str | None) -> tuple[Any, list[str]]:
    """The tenant's decision-log files whose date partition is within ``[start, end]``."""
    from core.storage import Storage

    store = Storage(root)
    base = store.path(f"tenant_id={tenant}")
    out = []
    for info in store.ls(base, recursive=True):
        parts = info.path[len(base):].strip("/").split("/")
        if len(parts) != 2 or not parts[0].startswith("date=") or not parts[1].endswith(".jsonl"):
            continue
        if parts[1][0] in "._":
            continue
        day = parts[0].removeprefix("date=")
        if (start is None or day >= start) and (end is None or day <= end):
            out.append(info.path)
    return store.fs, sorted(out)


def run(cfg: AnalyzeExperimentConfig, num_partitions: int) -> dict[str, Any]:
    import ray.data

    from core.eventlog import EventLog

    platform = load_platform_config(cfg.platform_config)
    exp = next((e for e in platform.experiments if e.id == cfg.experiment), None)
    if exp is None or exp.tenant != cfg.tenant:
        raise LookupError(f"no experiment {cfg.experiment!r} for tenant {cfg.tenant!r} in the platform config")
    storage = platform.resolved_storage()
    lo, hi = window(exp, cfg.start, cfg.end)
    fs, files = decision_files(storage.decisions, cfg.tenant, lo, hi)
    if not files:
        raise LookupError(f"no decision records for {cfg.tenant} between {lo or '-'} and {hi or '-'}")
    exposures = ray.data.read_text(files, filesystem=fs).map_batches(
        exposures_from_lines, fn_kwargs={"experiment_id": exp.id}, batch_format="numpy")  # fmt: skip
    events = EventLog(storage.events).ray_dataset(
        cfg.tenant, start=lo, end=None, event_types=list(EVENT_OUTCOME),  # outcomes may come later
        columns=["request_id", "event_type"],
    ).map_batches(outcome_flags, batch_format="pyarrow")  # fmt: skip
    # The join by request id, as a group-by over both sides in one schema: Dataset.join needs
    # polars, which this project does not otherwise depend on.
    per_exposure = exposures.union(events).groupby("request_id", num_partitions=num_partitions) \
        .map_groups(attribute_outcomes, batch_format="pyarrow")  # fmt: skip
    # Every shuffle gets the job's partitions: without them Ray Data cuts each aggregation into
    # its default 200 (DataContext.default_hash_shuffle_parallelism), 200 reduce tasks for a
    # few arms. The sums are of whole numbers, so any partitioning gives the same moments.
    per_user = per_exposure.groupby(["arm", "user_id"], num_partitions=num_partitions).sum(["exposure", "fallback", *OUTCOMES])
    rows = per_user.map_batches(user_moments, batch_format="pyarrow").groupby("arm", num_partitions=1) \
        .sum(MOMENT_COLUMNS).take_all()  # fmt: skip
    moments, counts = arm_moments(rows)
    report = analyze(moments, counts, plan_of(exp), cfg.confidence, cfg.srm_alpha)
    return {"experiment": exp.id, "tenant": exp.tenant, "hypothesis": exp.hypothesis,
            "window": {"start": lo, "end": hi}, "decision_files": len(files), **report}  # fmt: skip


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The readout as (label, value) lines: per arm its exposures and rates, per treatment its
    difference vs control and guardrail verdicts."""

    def ci(e: dict) -> str:
        if e["ci_low"] is None:
            return f"{e['value']:.4f} (no interval)"
        return f"{e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]"

    rows = []
    for arm, a in sorted(report["arms"].items()):
        rates = "  ".join(f"{m} {ci(a[m])}" for m in OUTCOME)
        rows.append((f"arm {arm}", f"{a.get('users', 0)} users, {a.get('exposures', 0)} exposures; {rates}"))
    for arm, comp in sorted(report["comparisons"].items()):
        for m, c in comp.items():
            rows.append((f"{arm} vs {report['control']}: {m}",
                         f"{ci(c['difference'])} ({c['verdict']}; relative {ci(c['relative'])})"))  # fmt: skip
        for g in report["guardrails"].get(arm, []):
            rows.append((f"{arm} guardrail {g['metric']} ≤{g['max_degradation']:.0%} worse", g["verdict"]))
    sr = report["sample_ratio"]
    rows.append(("sample ratio", f"users {sr['users']}, p={sr['p_value']}" + ("" if sr["ok"] else "  MISMATCH")))
    rows.append((f"better on {report['primary_metric']}", ", ".join(report["better_arms"]) or "no arm"))
    return rows


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--tenant")
    parser.add_argument("--experiment")
    parser.add_argument("--start")
    parser.add_argument("--end")
    parser.add_argument("--smoke-test", action="store_true", help="same code, fewer shuffle partitions")
    args = parser.parse_args(argv)
    cfg = common.load_job_config(args, AnalyzeExperimentConfig)
    update = {k: getattr(args, k) for k in ("experiment", "start", "end") if getattr(args, k)}
    cfg = cfg.model_copy(update=update)
    common.init_ray()
    try:
        report = run(cfg, cfg.num_partitions)
    except LookupError as exc:
        common.console.print(f"[red]{args.config}: {exc}[/red]")
        return 2
    out = Path(resolve_uri(cfg.work_dir)) / cfg.tenant / "experiments" / f"{cfg.experiment}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    common.summary_table(f"experiment {cfg.experiment} ({cfg.tenant})", [*summary_rows(report), ("report", str(out))])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
