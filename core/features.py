"""Feature definitions shared by training and serving — one code path, so they cannot drift.

Point-in-time rule: a feature for an example at time ``t`` uses only events with ``ts < t``.
Training folds the event log in time order through :class:`UserState` and
:class:`PopularityCounter`, snapshotting features just before each impression; serving keeps the
same objects up to date from the event log plus live events, and calls the same functions.

Shapes: ``B`` candidates for one (user, time); ``L`` = :data:`HISTORY_LEN`.

Ranker features (:func:`ranker_features`)
    ``cat``   ``(B, 6)`` int64: user bucket, item index+1, category index+1, source index,
              surface bucket, hour of day (UTC).
    ``dense`` ``(B, 8)`` float32: see :data:`DENSE_FEATURES`.

Query-tower features (:func:`query_features`): user bucket, history item indices+1 (left
padded with 0, most recent last), surface bucket, hour of day.
Item-tower features (:func:`item_features`): item index+1, category index+1, tag indices,
log age in days at the given time.

Length: every feature definition shared by training and serving lives here on purpose:
one file, so the two cannot drift (and ``feature_schema_hash`` covers it whole).
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.catalogue import MAX_TAGS, Catalogue
from core.clock import column_micros, epoch_seconds
from core.provenance import gather
from core.schema import POSITIVE_EVENT_TYPES

HISTORY_LEN = 100
"""Distinct engaged items the query feature ``history`` holds (most recent last). The two-tower
reads its last ``history_len`` (20: attention) and its last ``long_history_len`` (all of it: a
mean of the long-term interests); 100 covers the whole history of 99% of ``small``'s users."""
USER_BUCKETS = 1 << 16
SURFACE_BUCKETS = 16
POPULARITY_HALF_LIFE_HOURS = 72.0
FREQUENCY_WINDOW_HOURS = 24.0
MAX_RECENT_IMPRESSIONS = 500

SOURCE_KINDS: tuple[str, ...] = (
    "unknown",
    "logged",
    "two_tower",
    "item_to_item",
    "trending",
    "editorial",
    "fresh",
    "exploration",
)
"""Source vocabulary for the ranker's ``source`` feature. ``logged`` is used for impressions in
the training log whose serving source is unknown (e.g. synthetic or imported data)."""

CAT_FEATURES = ("user_bucket", "item", "category", "source", "surface_bucket", "hour")
DENSE_FEATURES = (
    "category_affinity",  # share of the user's positives in this item's category
    "tag_affinity",  # mean share of the user's positives carrying each of the item's tags
    "log_popularity",  # log1p of the item's time-decayed positive count
    "log_age_hours",  # log1p of hours since the item was created (0 if in the future)
    "retrieval_score",  # the two-tower q . v of the ranker's own two-tower (NaN unknown -> training mean)
    "log_user_positives",  # log1p of the user's positive count
    "history_missing",  # 1 when the user has no history (cold start / state unavailable)
    "log_recent_impressions",  # log1p of this item's impressions to the user in the window
)


def stable_hash(value: str, buckets: int) -> int:
    """A hash that is the same in every process and Python version (unlike ``hash``)."""
    return zlib.crc32(value.encode()) % buckets


def feature_schema_hash() -> str:
    """Identifies the feature definitions; models record it and launch review checks it (serving
    does not: versions in production keep serving after a code upgrade)."""
    spec = {
        "cat": CAT_FEATURES,
        "dense": DENSE_FEATURES,
        # 100 since 2026-11-29 (was 20): the two-tower's long-term pool reads the whole history.
        "history_len": HISTORY_LEN,
        "user_buckets": USER_BUCKETS,
        "surface_buckets": SURFACE_BUCKETS,
        "sources": SOURCE_KINDS,
        "popularity_half_life_hours": POPULARITY_HALF_LIFE_HOURS,
        "frequency_window_hours": FREQUENCY_WINDOW_HOURS,
        "max_tags": MAX_TAGS,
        # 2: a positive on an item already engaged with is not a new interaction (1 collapsed
        # only adjacent repeats).
        "interaction_rule": 2,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class UserState:
    """What serving and training know about a user at a point in time."""

    user_id: str
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))
    """Item ids of recent positive interactions, most recent last; each item at most once."""
    category_counts: dict[int, float] = field(default_factory=dict)
    tag_counts: dict[int, float] = field(default_factory=dict)
    n_positive: int = 0
    impressions: deque = field(default_factory=lambda: deque(maxlen=MAX_RECENT_IMPRESSIONS))
    """``(ts, item_id)`` of recent impressions, oldest first."""
    hidden: set[str] = field(default_factory=set)
    positives: set[str] = field(default_factory=set)
    """Every item the user positively interacted with (``history`` keeps only the last few)."""
    last_ts: float | None = None

    def apply(self, event_type: str, item_id: str, ts: float, catalogue: Catalogue) -> None:
        """Fold one event (which must not be older than the previous one for exact replay)."""
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if event_type == "impression":
            self.impressions.append((ts, item_id))
        elif event_type == "hide":
            self.hidden.add(item_id)
        elif event_type in POSITIVE_EVENT_TYPES:
            # One interaction produces several positive events (click, then dwell and like),
            # and another item's events can fall between them (a slate with two clicks): a
            # user's positives on one item are one interaction, counted at the first. The same
            # rule makes two-tower examples (training.datasets). Counting each event made the
            # history repeat items (about 8 distinct in 20 slots) and inflated the affinities.
            if item_id in self.positives:
                return
            self.positives.add(item_id)
            self.history.append(item_id)
            self.n_positive += 1
            idx = catalogue.index_of([item_id])[0]
            if idx >= 0:
                c = int(catalogue.category[idx])
                self.category_counts[c] = self.category_counts.get(c, 0.0) + 1.0
                for t in catalogue.tags[idx]:
                    if t:
                        self.tag_counts[int(t)] = self.tag_counts.get(int(t), 0.0) + 1.0

    def recent_impression_counts(self, now: float, window_hours: float) -> dict[str, int]:
        start = now - window_hours * 3600.0
        # Counter's C loop over the items in the window (the same counts, in first-seen order).
        return Counter([item for ts, item in self.impressions if start <= ts < now])


_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def sort_best_first(pairs: list[tuple[str, float]]) -> None:
    """Sort ``(id, value)`` pairs in place by value descending, equal values by id: the order
    of ``key=lambda x: (-x[1], x[0])``, as stable sorts on C key functions — by id (only when
    some values tie), then by value descending (ties keep id order)."""
    if len(set(map(_SECOND, pairs))) < len(pairs):
        pairs.sort(key=_FIRST)
    pairs.sort(key=_SECOND, reverse=True)


class PopularityCounter:
    """Time-decayed count of positive events per item: ``sum(exp(-ln2 * age / half_life))``."""

    _KEY_MARGIN = 1e-9
    """Log-space slack when cutting the cached order (float error in a key is ~1e-12)."""
    _TINY = 1e-290
    """Below this a value may have lost precision (or underflowed to a tie at 0)."""

    def __init__(self, half_life_hours: float = POPULARITY_HALF_LIFE_HOURS):
        self.rate = math.log(2.0) / (half_life_hours * 3600.0)
        self._value: dict[str, float] = {}
        self._at: dict[str, float] = {}
        self._ranking: tuple[list[str], list[float], float] | None = None
        self._by_row: list[tuple[Any, np.ndarray, np.ndarray]] = []
        """``(catalogue, value (N,), at (N,))``: the dicts by catalogue row (see :meth:`values`),
        for the last two catalogues read (an old and a new one while a swap drains)."""

    def add(self, item_id: str, ts: float, weight: float = 1.0) -> None:
        self._ranking = None
        prev_at = self._at.get(item_id)
        if prev_at is None:
            self._value[item_id] = weight
            self._at[item_id] = ts
        elif ts >= prev_at:
            self._value[item_id] = self._value[item_id] * math.exp(-self.rate * (ts - prev_at)) + weight
            self._at[item_id] = ts
        else:  # late event: decay it to the stored reference time instead
            self._value[item_id] += weight * math.exp(-self.rate * (prev_at - ts))
        for catalogue, value, at in self._by_row:
            row = catalogue.row_of(item_id)  # a dict read: this runs per live event
            if row >= 0:
                value[row], at[row] = self._value[item_id], self._at[item_id]

    def align(self, catalogue: Any) -> tuple[np.ndarray, np.ndarray]:
        """The counter's values and times by ``catalogue`` row (an item never seen: value 0,
        time 0), built once (a ranker calls it when loaded) and then kept in step by
        :meth:`add`."""
        for view in self._by_row:
            if view[0] is catalogue:
                return view[1], view[2]
        value, at = np.zeros(len(catalogue)), np.zeros(len(catalogue))
        ids = list(self._value)
        rows = catalogue.index_of(ids)
        known = np.flatnonzero(rows >= 0)
        mine = gather(ids, known.tolist())
        value[rows[known]] = np.fromiter(map(self._value.__getitem__, mine), np.float64, len(mine))
        at[rows[known]] = np.fromiter(map(self._at.__getitem__, mine), np.float64, len(mine))
        self._by_row = [(catalogue, value, at), *self._by_row[:1]]
        return value, at

    def value(self, item_id: str, now: float) -> float:
        at = self._at.get(item_id)
        if at is None:
            return 0.0
        return self._value[item_id] * math.exp(-self.rate * max(0.0, now - at))

    def values(self, item_ids: Sequence[str], now: float, *, rows: np.ndarray | None = None,
               catalogue: Any = None) -> np.ndarray:  # fmt: skip
        """:meth:`value` of each item (a request's candidates) as one array computation.
        ``rows``: the items' rows in ``catalogue`` (``-1``: not in it), when the caller has
        them: the counter is then read by row (two gathers) instead of two dict lookups per
        item, which on a 10^5-item counter were cache misses; the same values either way."""
        n = len(item_ids)
        if rows is not None and catalogue is not None and n:
            # An item never seen reads value 0 at time 0: 0 · exp(…) = 0, as by id.
            value_by_row, at_by_row = self.align(catalogue)
            safe = np.maximum(rows, 0)
            value, at = value_by_row[safe], at_by_row[safe]
            missing = np.flatnonzero(rows < 0).tolist()
            if missing:  # items outside the catalogue: read by id
                ids = gather(list(item_ids), missing)
                value[missing] = np.fromiter(map(self._value.get, ids, repeat(0.0)), np.float64, len(ids))
                at[missing] = np.fromiter(map(self._at.get, ids, repeat(now)), np.float64, len(ids))
        else:
            at = np.fromiter(map(self._at.get, item_ids, repeat(now)), np.float64, n)  # absent: age 0
            value = np.fromiter(map(self._value.get, item_ids, repeat(0.0)), np.float64, n)  # absent: 0
        return value * np.exp(-self.rate * np.maximum(0.0, now - at))

    def _ranked(self) -> tuple[list[str], list[float], float] | None:
        """Items by ``log(value) + rate * at`` descending, those keys, and the latest ``at``;
        ``None`` if some value is not positive. For ``now`` at or after every ``at`` the key
        orders items exactly as ``value(i, now)`` does, whatever ``now`` is, so this is
        recomputed only after :meth:`add`."""
        if self._ranking is None:
            ids = list(self._value)
            v = np.fromiter(self._value.values(), np.float64, len(ids))
            at = np.fromiter((self._at[i] for i in ids), np.float64, len(ids))
            if not (v > 0).all():
                return None
            keys = np.log(v) + self.rate * at
            order = np.argsort(-keys, kind="stable")
            self._ranking = ([ids[j] for j in order.tolist()], keys[order].tolist(), float(at.max()))
        return self._ranking

    def top(self, now: float, n: int, exclude: set[str] | None = None) -> list[tuple[str, float]]:
        ranked = self._ranked() if n > 0 and self._value else None
        if ranked is not None and now >= ranked[2]:
            # Only items whose key is within a margin of the n-th best can be in the top n;
            # they are scored and sorted exactly as below.
            ids, keys, _ = ranked
            if not exclude:  # the first n, and any after them within the margin: a prefix
                m = min(n, len(ids))
                if m == n:
                    cut = keys[n - 1] - self._KEY_MARGIN
                    while m < len(ids) and keys[m] >= cut:
                        m += 1
                picked = ids[:m]
            else:
                picked = []
                cut = -math.inf
                for item, key in zip(ids, keys, strict=True):
                    if item in exclude:
                        continue
                    if key < cut:
                        break
                    picked.append(item)
                    if len(picked) == n:
                        cut = key - self._KEY_MARGIN
            # :meth:`value`'s arithmetic inline (``now`` is at or after every item's time, so
            # its ``max(0, age)`` is the age), then the (-value, id) order.
            rate, exp = self.rate, math.exp
            values = [v * exp(-rate * (now - a))
                      for v, a in zip(map(self._value.__getitem__, picked), map(self._at.__getitem__, picked), strict=True)]  # fmt: skip
            out = list(zip(picked, values, strict=True))
            sort_best_first(out)
            del out[n:]
            if not out or out[-1][1] >= self._TINY:
                return out
        scored = ((i, self.value(i, now)) for i in self._value if not exclude or i not in exclude)
        return sorted(scored, key=lambda x: (-x[1], x[0]))[:n]

    def __len__(self) -> int:
        return len(self._value)



def popularity_from_events(
    events: Any, half_life_hours: float = POPULARITY_HALF_LIFE_HOURS
) -> PopularityCounter:
    """A :class:`PopularityCounter` over the positive events of an event table (or ``None``),
    folded in time order: what serving starts from before live events arrive."""
    counter = PopularityCounter(half_life_hours)
    if events is None or events.num_rows == 0:
        return counter
    rows = events.filter(
        pc.is_in(events["event_type"], pa.array(sorted(POSITIVE_EVENT_TYPES)))
    ).sort_by("ts")
    ts = column_micros(rows["ts"]).to_pylist()
    for item, t in zip(rows["item_id"].to_pylist(), ts, strict=True):
        counter.add(item, t / 1e6)
    return counter


class PopularityTimeline:
    """Point-in-time popularity of *any* item at *any* time: what a :class:`PopularityCounter`
    fed every positive event before ``t`` would say (``ts < t`` strictly, as the item pass of
    :mod:`training.datasets` snapshots). Training needs it for items that are not in the
    replayed row (the retrieved candidates a user did not engage with), so it cannot come from a
    per-item pass. Built once from the positives' ``(item index, ts)`` (sorted by item, then
    time, with the decayed count *at* each event kept, which cannot overflow however long the
    log is), then queried with vectorised ``searchsorted``."""

    def __init__(
        self, items: np.ndarray, ts: np.ndarray, half_life_hours: float = POPULARITY_HALF_LIFE_HOURS
    ):
        self.rate = math.log(2.0) / (half_life_hours * 3600.0)
        items = np.asarray(items, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.float64)
        keep = items >= 0
        items, ts = items[keep], ts[keep]
        order = np.lexsort((ts, items))
        self.items, self.ts = items[order], ts[order]
        # Decayed count at each event, that event included: s_j = s_{j-1} e^{-r Δt} + 1.
        level = np.ones(len(self.ts))
        new_item = np.ones(len(self.ts), dtype=bool)
        new_item[1:] = self.items[1:] != self.items[:-1]
        decay = np.exp(-self.rate * np.diff(self.ts, prepend=self.ts[:1]))
        for j in np.flatnonzero(~new_item).tolist():
            level[j] = level[j - 1] * decay[j] + 1.0
        self.level = level
        n = int(self.items.max()) + 1 if len(self.items) else 0
        self.start = np.searchsorted(self.items, np.arange(n + 1))  # item -> first row

    def values(self, items: np.ndarray, now: float | np.ndarray) -> np.ndarray:
        """``(B,)`` popularity of catalogue indices ``items`` (``-1`` unknown -> 0) at ``now``
        (a scalar or ``(B,)``)."""
        items = np.asarray(items, dtype=np.int64)
        now = np.broadcast_to(np.asarray(now, dtype=np.float64), items.shape)
        out = np.zeros(items.shape, dtype=np.float64)
        n = len(self.start) - 1
        ok = (items >= 0) & (items < n)
        for k in np.flatnonzero(ok).tolist():
            lo, hi = self.start[items[k]], self.start[items[k] + 1]
            j = lo + int(np.searchsorted(self.ts[lo:hi], now[k], side="left")) - 1
            if j >= lo:
                out[k] = self.level[j] * math.exp(-self.rate * (now[k] - self.ts[j]))
        return out


def observe_popularity(counter: PopularityCounter, event: Mapping[str, Any]) -> bool:
    """Fold one live event into ``counter`` if it is a positive one."""
    if event.get("event_type") not in POSITIVE_EVENT_TYPES:
        return False
    counter.add(event["item_id"], epoch_seconds(event["ts"]))
    return True

_SOURCE_INDEX = {s: i for i, s in enumerate(SOURCE_KINDS)}


def _source_index(source: str) -> int:
    return _SOURCE_INDEX.get(source, 0)


def source_indices(codes: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """``(B,)`` int64 :data:`SOURCE_KINDS` indices (unknown names 0) of sources given as
    ``codes`` into distinct ``names`` (a candidate batch's best sources): one lookup per
    distinct name, not per candidate."""
    return np.fromiter(map(_SOURCE_INDEX.get, names, repeat(0)), np.int64, len(names))[codes]


def _lookup(counts: Sequence[dict[int, float]], size: int) -> np.ndarray:
    """``(U, size)`` float64 table of each user's ``counts`` (absent ids 0.0) for array indexing."""
    table = np.zeros((len(counts), size), dtype=np.float64)
    for u, c in enumerate(counts):
        for k, v in c.items():
            if 0 <= k < size:
                table[u, k] = v
    return table


def ranker_features(
    state: UserState,
    item_ids: Sequence[str],
    catalogue: Catalogue,
    *,
    popularity: np.ndarray,
    now: float,
    surface: str,
    retrieval_scores: np.ndarray | None = None,
    sources: Sequence[str] | np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranker inputs for ``B`` candidates of one user at time ``now``: ``(cat, dense)``.

    ``popularity`` is ``(B,)`` from :meth:`PopularityCounter.values` at ``now``; ``state`` must
    hold only events before ``now``. ``rows``: ``catalogue.index_of(item_ids)`` when the
    caller has it already (the request's candidate batch). ``sources``: the candidates'
    source names, or their :data:`SOURCE_KINDS` indices as an int64 array
    (:func:`source_indices`).
    """
    return ranker_features_many([state], [len(item_ids)], item_ids, catalogue, popularity=popularity, now=[now],
                                surface=[surface], retrieval_scores=retrieval_scores, sources=sources, rows=rows)  # fmt: skip


def ranker_features_many(
    states: Sequence[UserState],
    sizes: Sequence[int],
    item_ids: Sequence[str],
    catalogue: Catalogue,
    *,
    popularity: np.ndarray,
    now: Sequence[float],
    surface: Sequence[str],
    retrieval_scores: np.ndarray | None = None,
    sources: Sequence[str] | np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ranker_features` of ``U`` users' candidates stacked (batch scoring: a
    micro-batch's users in one pass): user ``u`` (``states[u]`` at ``now[u]`` on
    ``surface[u]``) has ``sizes[u]`` candidates, after user ``u - 1``'s; ``item_ids``,
    ``popularity``, ``retrieval_scores``, ``sources`` and ``rows`` are ``(B,)`` over the stack
    (``B = sum(sizes)``). Each user's rows are exactly what :func:`ranker_features` gives that
    user alone (it is this function for one user)."""
    b = len(item_ids)
    n_users = len(states)
    user = np.repeat(np.arange(n_users), np.asarray(sizes, dtype=np.int64))
    if len(user) != b:
        raise ValueError(f"{b} candidates but sizes adding up to {len(user)}")
    idx = catalogue.index_of(list(item_ids)) if rows is None else rows
    known = idx >= 0
    safe = np.where(known, idx, 0)
    cats = catalogue.category[safe]
    now_u = np.asarray(now, dtype=np.float64)

    def per_user(values: list, dtype) -> np.ndarray | Any:
        """A per-user value on each of its rows (one user: the scalar, broadcast)."""
        return np.array(values, dtype=dtype)[user] if n_users != 1 else np.array(values[0], dtype=dtype)

    cat = np.zeros((b, len(CAT_FEATURES)), dtype=np.int64)
    cat[:, 0] = per_user([stable_hash(s.user_id, USER_BUCKETS) for s in states], np.int64)
    cat[:, 1] = np.where(known, idx + 1, 0)
    cat[:, 2] = np.where(known, cats + 1, 0)
    if isinstance(sources, np.ndarray) and sources.dtype.kind == "i":  # already indices
        cat[:, 3] = sources
    else:
        cat[:, 3] = np.fromiter(map(_SOURCE_INDEX.get, sources, repeat(0)), np.int64, b) if sources is not None else 0
    cat[:, 4] = per_user([stable_hash(x, SURFACE_BUCKETS) for x in surface], np.int64)
    cat[:, 5] = per_user([int((t // 3600) % 24) for t in now_u.tolist()], np.int64)

    n_positive = [s.n_positive for s in states]
    n_pos = per_user([max(1, n) for n in n_positive], np.int64)
    # Per-id lookup tables instead of a dict lookup per candidate (and per tag).
    cat_table = _lookup([s.category_counts for s in states], int(cats.max()) + 1 if b else 0)
    cat_aff = (cat_table[user, cats] if n_users != 1 else cat_table[0][cats]).astype(np.float32)
    tags = catalogue.tags[safe]
    tag_table = _lookup([s.tag_counts for s in states], int(tags.max()) + 1 if b else 0)
    tag_hits = tag_table[user[:, None], tags] if n_users != 1 else tag_table[0][tags]
    # Row sums over the MAX_TAGS columns as column adds (numpy's reduction over a short axis
    # costs far more). The counts are whole numbers (events counted one by one), so every
    # order of these adds is exact: the same values as summing the float32 hits per row.
    hit_sum = tag_hits[:, 0].copy()
    n_tags = (tags[:, 0] > 0).astype(np.int64)
    for k in range(1, MAX_TAGS):
        hit_sum += tag_hits[:, k]
        n_tags += tags[:, k] > 0
    np.maximum(n_tags, 1, out=n_tags)

    dense = np.zeros((b, len(DENSE_FEATURES)), dtype=np.float32)
    dense[:, 0] = np.where(known, cat_aff / n_pos.astype(np.float32), 0.0)
    dense[:, 1] = np.where(known, hit_sum / n_tags / n_pos, 0.0)
    dense[:, 2] = np.log1p(np.asarray(popularity, dtype=np.float64))
    age_h = np.where(known, ((now_u[user] if n_users != 1 else now_u[0]) - catalogue.created_at[safe]) / 3600.0, 0.0)
    dense[:, 3] = np.log1p(np.clip(age_h, 0.0, None))
    dense[:, 4] = 0.0 if retrieval_scores is None else np.asarray(retrieval_scores, dtype=np.float32)
    dense[:, 5] = per_user([math.log1p(n) for n in n_positive], np.float32)
    dense[:, 6] = per_user([1.0 if n == 0 else 0.0 for n in n_positive], np.float32)
    ends = list(accumulate(sizes))
    for u, (s, t) in enumerate(zip(states, now_u.tolist(), strict=True)):
        recent = s.recent_impression_counts(t, FREQUENCY_WINDOW_HOURS)
        if recent:
            a, e = ends[u] - sizes[u], ends[u]
            dense[a:e, 7] = np.log1p(np.fromiter(map(recent.get, item_ids[a:e], repeat(0)), np.int64, e - a))
    return cat, dense


def query_features(state: UserState, catalogue: Catalogue, *, surface: str, now: float) -> dict:
    """Query-tower inputs for one user: ``user`` (), ``history`` (L,), ``surface`` (), ``hour`` ()."""
    hist = np.zeros(HISTORY_LEN, dtype=np.int64)
    items = list(state.history)[-HISTORY_LEN:]
    if items:
        idx = catalogue.index_of(items) + 1  # unknown (-1) becomes padding (0)
        hist[HISTORY_LEN - len(idx) :] = idx
    return {
        "user": stable_hash(state.user_id, USER_BUCKETS),
        "history": hist,
        "surface": stable_hash(surface, SURFACE_BUCKETS),
        "hour": int((now // 3600) % 24),
    }


def item_features(catalogue: Catalogue, now: float) -> dict[str, np.ndarray]:
    """Item-tower inputs for the whole catalogue: ``item`` (N,), ``category`` (N,),
    ``tags`` (N, MAX_TAGS), ``log_age_days`` (N,) float32."""
    age_days = np.clip((now - catalogue.created_at) / 86400.0, 0.0, None)
    return {
        "item": np.arange(1, len(catalogue) + 1, dtype=np.int64),
        "category": catalogue.category.astype(np.int64) + 1,
        "tags": catalogue.tags.astype(np.int64),
        "log_age_days": np.log1p(age_days).astype(np.float32),
    }
