"""The data-quality gate before training: the checks over a tenant's event log, run as a Ray
Data pass by the job ``python -m training.quality_gate`` and by the training jobs first.

Checks (thresholds: :class:`core.train_config.QualityGateConfig`), over the *window* (the last
``window_days`` days of the log) against the *trailing period* before it:

* ``volume``: events per day, window over trailing; ``daily_volume``: each window day against
  the trailing daily median (a lost day or partition);
* ``nulls`` / ``malformed``: required columns null; unknown event type, non-finite value, empty
  id, a timestamp before ``min_ts``;
* ``label_rate:<type>``: each event type per impression, window over trailing; an event type
  with trailing events and none in the window has ``vanished``;
* ``unknown_items`` / ``unknown_users``: events naming an item not in the catalogue or a user
  not in the users table;
* ``future_timestamps``: events later than now (plus ``max_future_skew_hours``).

Each Ray Data block is summarised by :func:`block_stats` (counts only), the summaries are
merged (:func:`merge_stats`) and judged (:func:`judge`): the same functions a unit test runs
on an Arrow table without Ray. The report (JSON) goes to
``<work_dir>/<tenant>/quality/<data fingerprint>.json``; exit status 0 = every check passed.

``training.two_tower`` and ``training.ranker`` call :func:`gate_for_training` before reading
any data (through :func:`training.common.quality_gate`): a failed check stops them unless
``--allow-bad-data REASON`` is given, and the model's lineage records the report and the reason.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.schema import EVENT_TYPES
from core.train_config import QualityGateConfig

REQUIRED = ("event_id", "tenant_id", "user_id", "item_id", "event_type", "value", "ts")
DEFAULT_CONFIG = "configs/train/quality_gate.yaml"


class DataQualityRefused(SystemExit):
    """A training job refused to start on data that failed the gate (exit status: message)."""


def _day(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%d")


def block_stats(
    batch: pa.Table, known_items: pa.Array | None, known_users: pa.Array | None, now_us: int, min_ts_us: int
) -> dict[str, Any]:
    """Counts of one block of events (plain JSON types, so blocks merge by adding)."""
    n = batch.num_rows
    nulls = {c: batch[c].null_count for c in REQUIRED if c in batch.column_names}
    for c in REQUIRED:
        if c not in batch.column_names:
            nulls[c] = n
    et = batch["event_type"]
    malformed = {
        "unknown_event_type": int(pc.sum(pc.invert(pc.is_in(et, pa.array(EVENT_TYPES)))).as_py() or 0),
        "non_finite_value": int(pc.sum(pc.invert(pc.is_finite(pc.cast(batch["value"], pa.float64())))).as_py() or 0),
        "empty_id": sum(int(pc.sum(pc.equal(pc.utf8_length(batch[c]), 0)).as_py() or 0) for c in ("event_id", "user_id", "item_id")),
    }
    ts = pc.cast(pc.cast(batch["ts"], pa.timestamp("us", tz="UTC")), pa.int64())
    valid = pc.and_(pc.is_valid(ts), pc.greater_equal(ts, min_ts_us))
    malformed["ts_before_min"] = int(pc.sum(pc.and_(pc.is_valid(ts), pc.less(ts, min_ts_us))).as_py() or 0)
    future = pc.and_(valid, pc.greater(ts, now_us))
    usable = pc.and_(valid, pc.invert(future))
    rows = batch.select(["event_type"]).append_column("ts", ts).filter(usable)
    days = pc.divide(rows["ts"], 86_400_000_000)  # integer division: whole UTC days
    grouped = pa.table({"day": days, "type": rows["event_type"]}).group_by(["day", "type"], use_threads=False).aggregate([("day", "count")])
    by_type_day: dict[str, dict[str, int]] = {}
    for d, t, c in zip(grouped["day"].to_pylist(), grouped["type"].to_pylist(), grouped["day_count"].to_pylist(), strict=True):
        by_type_day.setdefault(str(t), {})[_day(d * 86_400_000_000)] = int(c)
    out = {
        "rows": n,
        "nulls": nulls,
        "malformed": malformed,
        "future": int(pc.sum(future).as_py() or 0),
        "by_type_day": by_type_day,
        "ts_max": pc.max(rows["ts"]).as_py() if rows.num_rows else None,
        "unknown_items": 0,
        "unknown_users": 0,
    }
    if known_items is not None:
        out["unknown_items"] = int(pc.sum(pc.invert(pc.is_in(batch["item_id"], known_items))).as_py() or 0)
    if known_users is not None:
        out["unknown_users"] = int(pc.sum(pc.invert(pc.is_in(batch["user_id"], known_users))).as_py() or 0)
    return out


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from many blocks' :func:`block_stats`."""
    total: dict[str, Any] = {"rows": 0, "nulls": Counter(), "malformed": Counter(), "future": 0,
                             "by_type_day": {}, "ts_max": None, "unknown_items": 0, "unknown_users": 0}  # fmt: skip
    for p in parts:
        for key in ("rows", "future", "unknown_items", "unknown_users"):
            total[key] += p[key]
        total["nulls"].update(p["nulls"])
        total["malformed"].update(p["malformed"])
        for t, days in p["by_type_day"].items():
            mine = total["by_type_day"].setdefault(t, Counter())
            mine.update(days)
        if p["ts_max"] is not None:
            total["ts_max"] = max(total["ts_max"] or p["ts_max"], p["ts_max"])
    total["nulls"], total["malformed"] = dict(total["nulls"]), dict(total["malformed"])
    total["by_type_day"] = {t: dict(sorted(d.items())) for t, d in sorted(total["by_type_day"].items())}
    return total


def _check(ok: bool, value: Any, threshold: str, detail: str = "") -> dict[str, Any]:
    return {"ok": bool(ok), "value": value, "threshold": threshold, "detail": detail}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def judge(stats: dict[str, Any], cfg: QualityGateConfig) -> dict[str, dict[str, Any]]:
    """Check name -> ``{"ok", "value", "threshold", "detail"}`` for merged stats."""
    checks: dict[str, dict[str, Any]] = {}
    n = max(stats["rows"], 1)
    null_rows = sum(stats["nulls"].values())
    checks["nulls"] = _check(null_rows / n <= cfg.max_null_rate, round(null_rows / n, 6), f"<= {cfg.max_null_rate}",
                             ", ".join(f"{c} {k}" for c, k in stats["nulls"].items() if k) or "none")  # fmt: skip
    bad = sum(stats["malformed"].values())
    checks["malformed"] = _check(bad / n <= cfg.max_malformed_rate, round(bad / n, 6), f"<= {cfg.max_malformed_rate}",
                                 ", ".join(f"{c} {k}" for c, k in stats["malformed"].items() if k) or "none")  # fmt: skip
    checks["future_timestamps"] = _check(stats["future"] == 0, stats["future"], "0",
                                         f"later than now + {cfg.max_future_skew_hours} h")  # fmt: skip
    for what, limit in (("items", cfg.max_unknown_item_share), ("users", cfg.max_unknown_user_share)):
        share = stats[f"unknown_{what}"] / n
        checks[f"unknown_{what}"] = _check(share <= limit, round(share, 6), f"<= {limit}")
    if stats["ts_max"] is None:
        checks["volume"] = _check(False, 0, "events in the log", "no usable events")
        return checks
    end = datetime.fromtimestamp(stats["ts_max"] / 1e6, UTC).date() + timedelta(days=1)
    window = [(end - timedelta(days=i)).isoformat() for i in range(cfg.window_days, 0, -1)]
    trailing = [(end - timedelta(days=cfg.window_days + i)).isoformat() for i in range(cfg.trailing_days, 0, -1)]
    per_day = Counter()
    for days in stats["by_type_day"].values():
        per_day.update(days)
    # Days before the log's first day are not a drop in volume: the log is just younger.
    first = min(per_day) if per_day else window[0]
    trailing = [d for d in trailing if d >= first]
    if not trailing:
        checks["volume"] = _check(True, None, "", f"no trailing period before {window[0]}: not compared")
        return checks
    w_mean = sum(per_day[d] for d in window) / len(window)
    t_mean = sum(per_day[d] for d in trailing) / len(trailing)
    ratio = _ratio(w_mean, t_mean)
    checks["volume"] = _check(ratio is not None and cfg.min_volume_ratio <= ratio <= cfg.max_volume_ratio,
                              None if ratio is None else round(ratio, 4),
                              f"{cfg.min_volume_ratio}..{cfg.max_volume_ratio}",
                              f"{w_mean:.0f}/day in {window[0]}..{window[-1]} vs {t_mean:.0f}/day before")  # fmt: skip
    median = float(np.median([per_day[d] for d in trailing]))
    low = [(d, per_day[d]) for d in window if median > 0 and per_day[d] < cfg.min_day_ratio * median]
    worst = min((per_day[d] / median for d in window), default=1.0) if median > 0 else None
    checks["daily_volume"] = _check(not low, None if worst is None else round(worst, 4), f">= {cfg.min_day_ratio} x {median:.0f}",
                                    ", ".join(f"{d}: {c}" for d, c in low) or "every day")  # fmt: skip
    imps = stats["by_type_day"].get("impression", {})
    w_imp, t_imp = sum(imps.get(d, 0) for d in window), sum(imps.get(d, 0) for d in trailing)
    for t, days in stats["by_type_day"].items():
        w, tr = sum(days.get(d, 0) for d in window), sum(days.get(d, 0) for d in trailing)
        if tr < cfg.min_type_events:
            continue
        if w == 0:
            checks[f"label_rate:{t}"] = _check(False, 0.0, f"{cfg.min_label_ratio}..{cfg.max_label_ratio}",
                                               f"vanished: {tr} events before the window, none in it")  # fmt: skip
            continue
        if t == "impression" or not w_imp or not t_imp:
            continue
        r = _ratio(w / w_imp, tr / t_imp)
        checks[f"label_rate:{t}"] = _check(r is not None and cfg.min_label_ratio <= r <= cfg.max_label_ratio,
                                           None if r is None else round(r, 4), f"{cfg.min_label_ratio}..{cfg.max_label_ratio}",
                                           f"{w / w_imp:.4f} per impression vs {tr / t_imp:.4f}")  # fmt: skip
    return checks


def report(stats: dict[str, Any], cfg: QualityGateConfig, tenant: str, fingerprint: str) -> dict[str, Any]:
    checks = judge(stats, cfg)
    failed = sorted(k for k, c in checks.items() if not c["ok"])
    return {"tenant": tenant, "data_fingerprint": fingerprint, "at": datetime.now(UTC).isoformat(),
            "passed": not failed, "failed": failed, "checks": checks, "rows": stats["rows"],
            "config": cfg.model_dump(exclude={"owner"}), "stats": stats}  # fmt: skip


def users_table(data_root: str, tenant: str) -> pa.Table | None:
    """The tenant's users table, or None where the data root has none (an import)."""
    import pyarrow.dataset as pads

    try:
        ds = pads.dataset(data_root.rstrip("/") + "/users", format="parquet", partitioning="hive")
        return ds.to_table(filter=pads.field("tenant_id") == tenant)
    except (FileNotFoundError, pa.ArrowInvalid):
        return None


def _known(storage) -> tuple[pa.Array | None, pa.Array | None]:
    items = pa.array(storage.catalogue().item_ids.tolist(), pa.string())
    users = users_table(storage.data, storage.tenant)
    return items, (users["user_id"].combine_chunks() if users is not None and users.num_rows else None)


def _bounds(cfg: QualityGateConfig) -> tuple[int, int]:
    now = datetime.now(UTC) + timedelta(hours=cfg.max_future_skew_hours)
    floor = datetime.fromisoformat(cfg.min_ts.replace("Z", "+00:00"))
    return int(now.timestamp() * 1e6), int(floor.timestamp() * 1e6)


def table_stats(table: pa.Table, cfg: QualityGateConfig, known_items=None, known_users=None) -> dict[str, Any]:
    """:func:`merge_stats` of an in-memory table's blocks (no Ray; tests, small logs)."""
    now_us, min_us = _bounds(cfg)
    blocks = [pa.Table.from_batches([b]) for b in table.to_batches(max_chunksize=8192)] or [table]
    return merge_stats([block_stats(b, known_items, known_users, now_us, min_us) for b in blocks])


def local_stats(storage, cfg: QualityGateConfig) -> dict[str, Any]:
    """:func:`ray_stats` in this process, over the same blocks' functions (tests, no cluster)."""
    items, users = _known(storage)
    return table_stats(storage.eventlog().read(storage.tenant, columns=list(REQUIRED)), cfg, items, users)


def ray_stats(storage, cfg: QualityGateConfig) -> dict[str, Any]:
    """The Ray Data pass: :func:`block_stats` per block on the cluster, merged here."""
    items, users = _known(storage)
    now_us, min_us = _bounds(cfg)
    ds = storage.eventlog().ray_dataset(storage.tenant, columns=list(REQUIRED))

    def summarise(batch: pa.Table) -> pa.Table:
        return pa.table({"stats": [json.dumps(block_stats(batch, items, users, now_us, min_us))]})

    rows = ds.map_batches(summarise, batch_format="pyarrow", batch_size=None).take_all()
    return merge_stats([json.loads(r["stats"]) for r in rows])


def run_gate(storage, cfg: QualityGateConfig, stats=ray_stats) -> tuple[dict[str, Any], Path]:
    """Run the check over ``storage``'s tenant; write and return the report and its path.
    ``stats``: :func:`ray_stats` (a job) or :func:`local_stats` (in process)."""
    fingerprint = storage.data_fingerprint()
    rep = report(stats(storage, cfg), cfg, storage.tenant, fingerprint)
    path = storage.work / "quality" / f"{fingerprint}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rep, indent=2, sort_keys=True, default=str))
    return rep, path


def summary_rows(rep: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(name, f"{'PASS' if c['ok'] else 'FAIL'} {c['value']} ({c['threshold']}) {c['detail']}".rstrip())
            for name, c in sorted(rep["checks"].items())]  # fmt: skip
    return [("events", f"{rep['rows']:,}"), *rows]


def gate_for_training(storage, override: str | None, config_path: str | None = None,
                      stats=ray_stats, show=None) -> dict[str, Any]:  # fmt: skip
    """What a training job records in its lineage, after the gate ran (or its report for the
    same data and thresholds was found). A failed gate raises :class:`DataQualityRefused`
    unless ``override`` gives the reason to train anyway. ``show(title, rows)`` prints."""
    from core.config import load_model, resolve_uri

    show = show or (lambda title, rows: None)
    cfg = load_model(resolve_uri(config_path or DEFAULT_CONFIG), QualityGateConfig).model_copy(update={"tenant": storage.tenant})
    path = storage.work / "quality" / f"{storage.data_fingerprint()}.json"
    rep = json.loads(path.read_text()) if path.is_file() else None
    if rep is None or rep.get("config") != cfg.model_dump(exclude={"owner"}):
        rep, path = run_gate(storage, cfg, stats)
    record = {"report": str(path), "passed": rep["passed"], "failed": rep["failed"]}
    if rep["passed"]:
        show(f"data quality gate {storage.tenant}: passed", [("events", f"{rep['rows']:,}"), ("report", str(path))])
        return record
    show(f"data quality gate {storage.tenant}: FAILED", summary_rows(rep))
    if not override or not override.strip():
        raise DataQualityRefused(
            f"data quality gate failed for tenant {storage.tenant!r}: {', '.join(rep['failed'])} "
            f"(report {path}); fix the data, or train anyway with --allow-bad-data REASON"
        )
    show(f"data quality gate {storage.tenant}: training anyway", [("failed", ", ".join(rep["failed"])), ("reason", override.strip())])
    return {**record, "override_reason": override.strip()}
