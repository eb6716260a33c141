"""Ray Data builders of point-in-time training examples from the event log and catalogue.

Point-in-time rule (see :mod:`core.features`): an example at time ``t`` sees only events with
``ts < t``. Events of one user are folded in time order through :class:`UserState`, and all
events sharing a timestamp are snapshotted *before* any of them is applied.

Two passes, each a Ray Data shuffle so that no worker (and not the driver) holds the log:

1. ``groupby("item_id")``: each impression gets the item's time-decayed positive count
   (:class:`PopularityCounter`) from positives strictly before it.
2. ``groupby("user_id")``: each user's events are replayed into
   * two-tower examples: one per positive interaction (click/like/dwell/rating), at the
     user's *first* positive on an item — the click, dwell and like of one item are one
     interaction even when another item's events fall between them (a multi-click slate), and
     a later positive on an item the user already engaged with is not a new one — with the
     query features before it and a leave-last-out ``split`` (last = ``test``,
     second-to-last = ``validation``, rest ``train``; users with < 3 interactions are
     train-only);
   * ranker examples: one per impression with labels ``click``/``like``/``hide`` (an event of
     that type for the same request_id and item) and :func:`ranker_features` inputs.

Example columns (``L`` = HISTORY_LEN, ``T`` = MAX_TAGS):
    two-tower: ``user_id, item_id, ts, split, user, history (L,), surface, hour, item,
    category, tags (T,), log_age_days``
    ranker: ``user_id, item_id, request_id, ts, cat (6,), dense (8,), click, like, hide,
    split`` (+ ``history`` (L,), ``user``, ``surface``, ``hour`` for retrieval scoring)

Length: one file because the two builders share the replay loop and its column layout;
splitting them would split the point-in-time rule across files.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.catalogue import MAX_TAGS, Catalogue
from core.clock import column_seconds
from core.components import RANKER_TASKS, ranker_tasks
from core.features import (
    CAT_FEATURES,
    DENSE_FEATURES,
    HISTORY_LEN,
    PopularityCounter,
    UserState,
    query_features,
    ranker_features,
)
from core.schema import POSITIVE_EVENT_TYPES

EVENT_COLUMNS = ["user_id", "item_id", "event_type", "ts", "surface", "request_id"]
EXAMPLES_VERSION = "2"
"""Bump when the examples a builder emits change for the same events (part of the cache key).
2: a two-tower interaction is a user's first positive on an item (1 collapsed only adjacent
positives, so the interleaved click/dwell/like of a multi-click slate made repeat "interactions")."""
LABEL_TASKS = tuple(ranker_tasks())
"""The registered ranker tasks (``ranking/tasks/``), in head order."""
LABEL_EVENTS = {RANKER_TASKS.get(t).cls.label_event: t for t in LABEL_TASKS}
"""Event type → the task it labels (an event on the impressed item in the same request)."""
DEFAULT_SURFACE = "home"


def prepare_events(batch: pa.Table) -> pa.Table:
    """Event-log batch -> the replay columns, ``ts`` as float epoch seconds, a null surface as
    ``home`` (imported logs such as MovieLens carry none)."""
    ts = column_seconds(batch["ts"])
    surface = pc.fill_null(batch["surface"], DEFAULT_SURFACE)
    return pa.table(
        {
            "user_id": batch["user_id"],
            "item_id": batch["item_id"],
            "event_type": batch["event_type"],
            "ts": ts,
            "surface": surface,
            "request_id": batch["request_id"],
        }
    )


def _positives_only(batch: pa.Table) -> pa.Table:
    # Query-tower features depend only on positives, so the two-tower pass skips impressions.
    keep = pc.is_in(batch["event_type"], pa.array(sorted(POSITIVE_EVENT_TYPES)))
    return prepare_events(batch.filter(keep))


# ---------------------------------------------------------------------------- pass 1: items


def item_popularity(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One item's events -> the same rows plus ``popularity`` (decayed positives before ts)."""
    order = np.lexsort((group["event_type"], group["ts"]))
    g = {k: v[order] for k, v in group.items()}
    ts, types = g["ts"], g["event_type"]
    counter = PopularityCounter()
    item = str(g["item_id"][0]) if len(ts) else ""
    pop = np.zeros(len(ts), dtype=np.float64)
    i = 0
    while i < len(ts):
        j = i
        while j < len(ts) and ts[j] == ts[i]:
            j += 1
        pop[i:j] = counter.value(item, float(ts[i]))  # snapshot before this timestamp's events
        for r in range(i, j):
            if types[r] in POSITIVE_EVENT_TYPES:
                counter.add(item, float(ts[r]))
        i = j
    g["popularity"] = pop
    return g


# ---------------------------------------------------------------------------- pass 2: users


def _empty_two_tower() -> dict[str, np.ndarray]:
    return {
        "user_id": np.array([], dtype=object),
        "item_id": np.array([], dtype=object),
        "ts": np.zeros(0),
        "split": np.array([], dtype=object),
        "user": np.zeros(0, dtype=np.int64),
        "history": np.zeros((0, HISTORY_LEN), dtype=np.int64),
        "surface": np.zeros(0, dtype=np.int64),
        "hour": np.zeros(0, dtype=np.int64),
        "item": np.zeros(0, dtype=np.int64),
        "category": np.zeros(0, dtype=np.int64),
        "tags": np.zeros((0, MAX_TAGS), dtype=np.int64),
        "log_age_days": np.zeros(0, dtype=np.float32),
    }


def _empty_ranker() -> dict[str, np.ndarray]:
    out = {
        "user_id": np.array([], dtype=object),
        "item_id": np.array([], dtype=object),
        "request_id": np.array([], dtype=object),
        "ts": np.zeros(0),
        "cat": np.zeros((0, len(CAT_FEATURES)), dtype=np.int64),
        "dense": np.zeros((0, len(DENSE_FEATURES)), dtype=np.float32),
        "user": np.zeros(0, dtype=np.int64),
        "history": np.zeros((0, HISTORY_LEN), dtype=np.int64),
        "surface": np.zeros(0, dtype=np.int64),
        "hour": np.zeros(0, dtype=np.int64),
    }
    for t in LABEL_TASKS:
        out[t] = np.zeros(0, dtype=np.float32)
    return out


def _stack(rows: list[dict], empty: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not rows:
        return empty
    return {k: np.stack([r[k] for r in rows]).astype(v.dtype) for k, v in empty.items()}


def replay_user(
    group: dict[str, np.ndarray], catalogue: Catalogue, *, ranker: bool
) -> dict[str, np.ndarray]:
    """Replay one user's events (any order) into two-tower (``ranker=False``) or ranker
    examples; see the module docstring for columns. ``popularity`` is required for ranker."""
    # (ts, event_type, item_id): deterministic whatever order the shuffle delivers, and the
    # order serving's OnlineUserStateStore.fold_table folds in.
    order = np.lexsort((group["item_id"], group["event_type"], group["ts"]))
    g = {k: v[order] for k, v in group.items()}
    n = len(g["ts"])
    if n == 0:
        return _empty_ranker() if ranker else _empty_two_tower()
    user_id = str(g["user_id"][0])
    state = UserState(user_id=user_id)
    labels: dict[tuple, set[str]] = {}
    if ranker:
        for r in range(n):
            task = LABEL_EVENTS.get(g["event_type"][r])
            if task is not None and g["request_id"][r] is not None:
                labels.setdefault((g["request_id"][r], g["item_id"][r]), set()).add(task)
    rows: list[dict] = []
    engaged: set[str] = set()
    i = 0
    while i < n:
        j = i
        while j < n and g["ts"][j] == g["ts"][i]:
            j += 1
        now = float(g["ts"][i])
        # Snapshot: every example at `now` is built from the state before any event at `now`.
        if ranker:
            shown = [r for r in range(i, j) if g["event_type"][r] == "impression"]
            # One ranker_features call per (timestamp, surface): a request's whole slate.
            for surface in sorted({str(g["surface"][r]) for r in shown}):
                rs = [r for r in shown if str(g["surface"][r]) == surface]
                rows.extend(_ranker_rows(state, g, rs, now, catalogue, labels))
        else:
            for r in range(i, j):
                item = str(g["item_id"][r])
                if g["event_type"][r] in POSITIVE_EVENT_TYPES and item not in engaged:
                    rows.append(_two_tower_row(state, g, r, now, catalogue))
                    engaged.add(item)
        for r in range(i, j):
            state.apply(g["event_type"][r], str(g["item_id"][r]), now, catalogue)
        i = j
    if ranker:
        return _stack(rows, _empty_ranker())
    out = _stack(rows, _empty_two_tower())
    split = np.full(len(rows), "train", dtype=object)
    if len(rows) >= 3:
        split[-1], split[-2] = "test", "validation"
    out["split"] = split
    return out


def _query(state: UserState, g, r: int, now: float, catalogue: Catalogue) -> dict:
    q = query_features(state, catalogue, surface=str(g["surface"][r]), now=now)
    return {"user": q["user"], "history": q["history"], "surface": q["surface"], "hour": q["hour"]}


def _two_tower_row(state, g, r, now, catalogue) -> dict:
    item = str(g["item_id"][r])
    idx = int(catalogue.index_of([item])[0])
    known = idx >= 0
    age_days = max(0.0, (now - catalogue.created_at[idx]) / 86400.0) if known else 0.0
    return {
        "user_id": state.user_id,
        "item_id": item,
        "ts": now,
        "split": "train",
        **_query(state, g, r, now, catalogue),
        "item": idx + 1,
        "category": int(catalogue.category[idx]) + 1 if known else 0,
        "tags": catalogue.tags[idx] if known else np.zeros(MAX_TAGS, dtype=np.int64),
        "log_age_days": np.float32(np.log1p(age_days)),
    }


def _ranker_rows(state, g, rs: list[int], now, catalogue, labels) -> list[dict]:
    items = [str(g["item_id"][r]) for r in rs]
    cat, dense = ranker_features(
        state,
        items,
        catalogue,
        popularity=np.asarray([g["popularity"][r] for r in rs], dtype=np.float64),
        now=now,
        surface=str(g["surface"][rs[0]]),
        sources=["logged"] * len(rs),
    )
    query = _query(state, g, rs[0], now, catalogue)
    out = []
    for k, r in enumerate(rs):
        got = labels.get((g["request_id"][r], g["item_id"][r]), set())
        row = {
            "user_id": state.user_id,
            "item_id": items[k],
            "request_id": g["request_id"][r],
            "ts": now,
            "cat": cat[k],
            "dense": dense[k],
            **query,
        }
        for t in LABEL_TASKS:
            row[t] = np.float32(t in got)
        out.append(row)
    return out


# ---------------------------------------------------------------------------- Ray Data wiring


def two_tower_dataset(events, catalogue: Catalogue, num_partitions: int | None = None):
    """``events``: a Ray Dataset from ``EventLog.ray_dataset`` -> two-tower examples."""
    prepared = events.map_batches(_positives_only, batch_format="pyarrow")
    return prepared.groupby("user_id", num_partitions=num_partitions).map_groups(
        _bind(replay_user, catalogue=catalogue, ranker=False), batch_format="numpy"
    )


def ranker_dataset(events, catalogue: Catalogue, num_partitions: int | None = None):
    """Ray Dataset of events -> ranker examples (without ``split``; see :func:`with_time_split`)."""
    prepared = events.map_batches(prepare_events, batch_format="pyarrow")
    with_pop = prepared.groupby("item_id", num_partitions=num_partitions).map_groups(
        item_popularity, batch_format="numpy"
    )
    return with_pop.groupby("user_id", num_partitions=num_partitions).map_groups(
        _bind(replay_user, catalogue=catalogue, ranker=True), batch_format="numpy"
    )


def time_split_bounds(ts: np.ndarray, holdout: float = 0.1, validation: float = 0.1) -> tuple[float, float]:
    """``(validation_start, holdout_start)``: the last ``holdout`` share of impressions by time
    is the holdout, the ``validation`` share before it is the validation split."""
    ts = np.sort(np.asarray(ts, dtype=np.float64))
    if len(ts) == 0:
        return 0.0, 0.0
    hold = float(ts[min(len(ts) - 1, int(len(ts) * (1 - holdout)))])
    val = float(ts[min(len(ts) - 1, int(len(ts) * (1 - holdout - validation)))])
    return val, hold


def assign_time_split(batch: dict[str, np.ndarray], val_start: float, hold_start: float) -> dict:
    ts = batch["ts"]
    batch["split"] = np.where(ts >= hold_start, "holdout", np.where(ts >= val_start, "validation", "train")).astype(object)
    return batch


def _bind(fn: Callable, **kwargs) -> Callable:
    def bound(group):
        return fn(group, **kwargs)

    bound.__name__ = fn.__name__
    return bound
