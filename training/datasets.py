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
from dataclasses import dataclass

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
    PopularityTimeline,
    UserState,
    query_features,
    ranker_features,
    stable_hash,
)
from core.schema import POSITIVE_EVENT_TYPES, event_order_keys
from retrieval.similarity import TwoTowerSimilarity, query_vectors

EVENT_COLUMNS = ["user_id", "item_id", "event_type", "ts", "surface", "request_id", "seq"]
EXAMPLES_VERSION = "7"
"""Bump when the examples a builder emits change for the same events (part of the cache key).
2: a two-tower interaction is a user's first positive on an item (1 collapsed only adjacent
positives, so the interleaved click/dwell/like of a multi-click slate made repeat "interactions").
7: events sharing a ts replay in arrival order (``seq``), not item-id order."""
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
            "seq": batch["seq"] if "seq" in batch.column_names else pa.nulls(batch.num_rows, pa.int64()),
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
    out["kind"] = np.array([], dtype=object)
    out["heldout"] = np.zeros(0, dtype=bool)
    out["retrieval_heldout"] = np.zeros(0, dtype=bool)
    return out


def _stack(rows: list[dict], empty: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not rows:
        return empty
    return {k: np.stack([r[k] for r in rows]).astype(v.dtype) for k, v in empty.items()}


def replay_user(
    group: dict[str, np.ndarray],
    catalogue: Catalogue,
    *,
    ranker: bool,
    sampler: CandidateSampler | None = None,
) -> dict[str, np.ndarray]:
    """Replay one user's events (any order) into two-tower (``ranker=False``) or ranker
    examples; see the module docstring for columns. ``popularity`` is required for ranker.
    With a ``sampler`` the ranker rows carry the two-tower's ``retrieval_score`` and, at each
    new engagement, the engaged item and retrieved candidates the user did not engage with
    (``kind`` ``engagement``; :class:`CandidateSampler`)."""
    # (ts, arrival seq, event_type, item_id): deterministic whatever order the shuffle delivers,
    # the order serving's OnlineUserStateStore.fold_table folds in, and the order that decides
    # which of a user's same-second interactions is "last" for the leave-last-out split.
    order = np.lexsort(event_order_keys(group["ts"], group.get("seq"), group["event_type"], group["item_id"]))
    g = {k: v[order] for k, v in group.items()}
    n = len(g["ts"])
    if n == 0:
        return _empty_ranker() if ranker else _empty_two_tower()
    user_id = str(g["user_id"][0])
    state = UserState(user_id=user_id)
    labels: dict[tuple, set[str]] = {}
    # Items the user liked at any time (an engagement row's ``like`` label).
    liked = {str(x) for x, t in zip(g["item_id"], g["event_type"], strict=True) if t == "like"}
    # (request, item) pairs the user went on to engage with: the engagement's moment is the
    # request that showed the item (its impressions' time, before them), not the click seconds
    # later, when the user state already holds that request's impressions.
    engaged_in = {
        (g["request_id"][r], str(g["item_id"][r]))
        for r in range(n)
        if g["event_type"][r] in POSITIVE_EVENT_TYPES and g["request_id"][r] is not None
    }
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
                rows.extend(_ranker_rows(state, g, rs, now, catalogue, labels, sampler))
            if sampler is not None and sampler.negatives > 0:
                for r in range(i, j):
                    item = str(g["item_id"][r])
                    if item in engaged:
                        continue
                    shown_then = g["event_type"][r] == "impression" and (g["request_id"][r], item) in engaged_in
                    # A positive no logged impression preceded (a rating, an organic play) is
                    # its own moment.
                    if shown_then or g["event_type"][r] in POSITIVE_EVENT_TYPES:
                        engaged.add(item)
                        rows.extend(_engagement_rows(state, g, r, now, catalogue, sampler, liked))
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
        empty = _empty_ranker()
        out = _stack(rows, {k: v for k, v in empty.items() if k not in ("heldout", "retrieval_heldout")}) if rows else empty
        out["heldout"] = _protocol_heldout(g, out)
        out["retrieval_heldout"] = _interaction_rows(g, out, 2) & ~out["heldout"]
        return out
    out = _stack(rows, _empty_two_tower())
    split = np.full(len(rows), "train", dtype=object)
    if len(rows) >= 3:
        split[-1], split[-2] = "test", "validation"
    out["split"] = split
    return out


def _protocol_heldout(g: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> np.ndarray:
    """``(rows,)`` bool: ranker rows that belong to the user's evaluation test interaction or
    come after it. The evaluation protocol (``training.evaluate``) holds out each user's last
    new engagement (users with at least three); the two-tower never trains on it, and neither
    may the ranker: not the engagement, not the impression that led to it (same request, a few
    seconds earlier), nothing later. Otherwise the ranker's user and item embeddings memorise
    the test answer (measured: next-item HR@10 of 0.63 for a ranker that had seen it)."""
    rows = _interaction_rows(g, out, 1)
    if not rows.any():
        return rows
    first = np.flatnonzero(rows)
    return rows | (out["ts"] >= out["ts"][first].min())


def _interaction_rows(g: dict[str, np.ndarray], out: dict[str, np.ndarray], nth_last: int) -> np.ndarray:
    """``(rows,)`` bool: the ranker rows of the user's ``nth_last`` new engagement (1 = the
    last, the protocol's test interaction; 2 = the two-tower's validation interaction): the
    rows at its moment and the impressions of its request. All False for a user with fewer
    than three engagements (the protocol holds nothing out for them)."""
    first: dict[str, int] = {}
    for r, (item, etype) in enumerate(zip(g["item_id"], g["event_type"], strict=True)):
        if etype in POSITIVE_EVENT_TYPES and str(item) not in first:
            first[str(item)] = r
    n = len(out["ts"])
    if len(first) < 3:
        return np.zeros(n, dtype=bool)
    target = sorted(first.values())[-nth_last]  # rows are in (ts, type, item) order
    request = g["request_id"][target]
    moment = float(g["ts"][target])
    if request is not None:
        # The request's impressions came first: the engagement's moment is theirs.
        shown = [float(t) for t, q, e in zip(g["ts"], g["request_id"], g["event_type"], strict=True) if q == request and e == "impression"]
        moment = min(shown, default=moment)
    rows = out["ts"] == moment
    if request is not None:
        rows |= np.asarray([x == request for x in out["request_id"]], dtype=bool)
    return rows


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


def _ranker_rows(state, g, rs: list[int], now, catalogue, labels, sampler=None) -> list[dict]:
    items = [str(g["item_id"][r]) for r in rs]
    surface = str(g["surface"][rs[0]])
    cat, dense = ranker_features(
        state,
        items,
        catalogue,
        popularity=np.asarray([g["popularity"][r] for r in rs], dtype=np.float64),
        now=now,
        surface=surface,
        retrieval_scores=None if sampler is None else sampler.similarity.scores(state, items, surface=surface, now=now),
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
        row["kind"] = "impression"
        out.append(row)
    return out


@dataclass
class CandidateSampler:
    """What serving would have ranked at a moment of the log, for ranker examples.

    At each new engagement (a user's first positive on an item), the items the two-tower of
    ``similarity`` ranks highest for the user's point-in-time query are the candidates serving
    would have scored; ``negatives`` of them, drawn uniformly from the top ``top_k`` less every
    item the user had engaged with (serving's ``already_interacted`` rule), become examples with
    ``click`` 0 beside the engaged item with ``click`` 1 (and ``like`` 1 when the user liked it).
    So a tenant whose log has no impressions (ratings, purchases, plays) gets a ranker, and a
    logged tenant's ranker also sees candidates its logging policy never showed. Their
    popularity is point-in-time (:class:`PopularityTimeline`), their source ``two_tower``, and
    the draw is seeded by the user id, so the same log gives the same examples."""

    similarity: TwoTowerSimilarity
    timeline: PopularityTimeline
    negatives: int = 8
    top_k: int = 200
    seed: int = 0

    def draw(self, state: UserState, surface: str, now: float, positive: int) -> tuple[np.ndarray, np.ndarray]:
        """``(items, scores)``: catalogue indices, the engaged one first, and their ``q · v``."""
        q = query_vectors(self.similarity.model, self.similarity.catalogue, [state], surface=surface, now=now)[0]
        scores = self.similarity.items @ q.astype(np.float32)
        k = min(self.top_k + len(state.positives) + 1, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        seen = self.similarity.catalogue.index_of(list(state.positives))
        pool = top[~np.isin(top, seen) & (top != positive)]
        pool = pool[np.argsort(-scores[pool], kind="stable")][: self.top_k]
        rng = np.random.default_rng([self.seed, stable_hash(state.user_id, 1 << 31), int(now)])
        negs = rng.choice(pool, min(self.negatives, len(pool)), replace=False) if len(pool) else pool
        items = np.concatenate([[positive], negs]).astype(np.int64)
        return items, scores[items]


def _engagement_rows(state, g, r: int, now, catalogue, sampler: CandidateSampler, liked: set[str]) -> list[dict]:
    item = str(g["item_id"][r])
    positive = int(catalogue.index_of([item])[0])
    if positive < 0:
        return []
    surface = str(g["surface"][r])
    idx, scores = sampler.draw(state, surface, now, positive)
    ids = [str(x) for x in catalogue.item_ids[idx]]
    cat, dense = ranker_features(
        state,
        ids,
        catalogue,
        popularity=sampler.timeline.values(idx, now),
        now=now,
        surface=surface,
        retrieval_scores=scores,
        sources=["two_tower"] * len(ids),
    )
    query = _query(state, g, r, now, catalogue)
    out = []
    for k, x in enumerate(ids):
        row = {"user_id": state.user_id, "item_id": x, "request_id": None, "ts": now, "cat": cat[k], "dense": dense[k], **query}
        for t in LABEL_TASKS:
            row[t] = np.float32(0.0)
        if k == 0:
            row["click"] = np.float32(1.0)
            row["like"] = np.float32(x in liked)
        row["kind"] = "engagement"
        out.append(row)
    return out


# ---------------------------------------------------------------------------- Ray Data wiring


def two_tower_dataset(events, catalogue: Catalogue, num_partitions: int | None = None):
    """``events``: a Ray Dataset from ``EventLog.ray_dataset`` -> two-tower examples."""
    prepared = events.map_batches(_positives_only, batch_format="pyarrow")
    return prepared.groupby("user_id", num_partitions=num_partitions).map_groups(
        _bind(replay_user, catalogue=catalogue, ranker=False), batch_format="numpy"
    )


def ranker_dataset(events, catalogue: Catalogue, num_partitions: int | None = None, sampler: CandidateSampler | None = None):
    """Ray Dataset of events -> ranker examples (without ``split``; see :func:`with_time_split`)."""
    prepared = events.map_batches(prepare_events, batch_format="pyarrow")
    with_pop = prepared.groupby("item_id", num_partitions=num_partitions).map_groups(
        item_popularity, batch_format="numpy"
    )
    return with_pop.groupby("user_id", num_partitions=num_partitions).map_groups(
        _bind(replay_user, catalogue=catalogue, ranker=True, sampler=sampler), batch_format="numpy"
    )


def popularity_timeline(events, catalogue: Catalogue) -> PopularityTimeline:
    """The :class:`PopularityTimeline` of a Ray Dataset of events: only the positives' item
    index and time reach the driver (16 bytes each)."""
    pos = events.map_batches(_positives_only, batch_format="pyarrow").select_columns(["item_id", "ts"])
    items, ts = [], []
    for b in pos.iter_batches(batch_format="pyarrow", batch_size=262144):
        items.append(catalogue.index_of(b["item_id"].to_pylist()))
        ts.append(b["ts"].to_numpy())
    cat = lambda xs, t: np.concatenate(xs) if xs else np.zeros(0, t)  # noqa: E731
    return PopularityTimeline(cat(items, np.int64), cat(ts, np.float64))


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
    """``split`` by time; a row of a user's protocol test interaction (``heldout``) is
    ``test``, which no ranker step reads."""
    ts = batch["ts"]
    split = np.where(ts >= hold_start, "holdout", np.where(ts >= val_start, "validation", "train")).astype(object)
    if "heldout" in batch:
        split[np.asarray(batch["heldout"], dtype=bool)] = "test"
    batch["split"] = split
    return batch


def _bind(fn: Callable, **kwargs) -> Callable:
    def bound(group):
        return fn(group, **kwargs)

    bound.__name__ = fn.__name__
    return bound
