"""Synthetic logged experiment data with a known effect: decision records in the decision log's
own format and the events that answer them, for the readout (``training.analyze_experiment``).

Users are assigned by the real assignment (:func:`core.experiments.assign`); each sees a few
requests; each request gets a click, a like and a hide with its arm's probabilities, each as an
event naming the request id. A few events name no request (a browse outside any slate): the
readout must not attribute them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from core.config import ExperimentConfig
from core.contracts import CandidateTable, DecisionRecord, SlateRecord
from core.decision_log import new_request_id
from core.experiments import assign
from core.schema import EVENT_SCHEMA

DAY = datetime(2026, 11, 25, 9, tzinfo=UTC)


def experiment(arms: dict[str, float], exp_id: str = "exp-readout") -> ExperimentConfig:
    return ExperimentConfig(
        id=exp_id, tenant="acme", surfaces=["home"], salt=exp_id, hypothesis="synthetic",
        primary_metric="click_rate", planned_duration_days=7, start=DAY.date(),
        guardrails=[{"metric": "hide_rate", "max_degradation": 0.10}],
        variants=[{"name": a, "weight": w} for a, w in arms.items()],
    )  # fmt: skip


def synth(exp: ExperimentConfig, rates: dict[str, dict[str, float]], users: int, seed: int = 0,
          mean_requests: float = 3.0) -> tuple[list[DecisionRecord], pa.Table]:  # fmt: skip
    """``rates``: arm → ``{"click": p, "like": p, "hide": p}`` per request. Returns the
    decision records (one per request) and the events table (EVENT_SCHEMA)."""
    rng = np.random.default_rng(seed)
    records, events = [], []
    for u in range(users):
        user = f"u{seed}-{u}"
        arm = assign([exp], "acme", "home", user).arm
        for _ in range(1 + rng.poisson(mean_requests - 1)):
            at = DAY + timedelta(seconds=int(rng.integers(0, 6 * 3600)))
            rid = new_request_id(at)
            item = f"i{int(rng.integers(0, 50)):07d}"
            records.append(DecisionRecord(
                request_id=rid, tenant_id="acme", user_id=user, surface="home", k=1, at=at,
                experiment={"id": exp.id, "arm": arm}, versions={"ranker": f"rk-{arm}"},
                sources=[], candidates=CandidateTable(), removals=[], stage_latency_ms={},
                slate=[SlateRecord(item_id=item, rank=0, score=1.0, sources=["two_tower"], reasons=[])],
            ))  # fmt: skip
            for kind, p in rates[arm].items():
                if rng.random() < p:
                    events.append(_event(user, item, kind, at + timedelta(seconds=30), rid))
        if u % 50 == 0:  # not from a slate: no request id
            events.append(_event(user, "i0000001", "click", DAY + timedelta(hours=7), None))
    return records, pa.Table.from_pylist(events, schema=EVENT_SCHEMA)


def _event(user: str, item: str, kind: str, ts: datetime, request_id: str | None) -> dict:
    return {"event_id": uuid.uuid4().hex, "tenant_id": "acme", "user_id": user, "item_id": item,
            "event_type": kind, "value": 1.0, "ts": ts, "surface": "home",
            "request_id": request_id, "position": 0, "experiment_arm": None, "propensity": None}  # fmt: skip
