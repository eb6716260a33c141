"""Stages of the batch path (:mod:`serving.batch`) over every user of a micro-batch at once.

:func:`serving.merge.merge` de-duplicates one request's source answers; the batch path has
hundreds of users on one surface plan, whose answers from the non-personal sources (trending,
fresh, editorial, pins) are the very same objects. :func:`merge_many` reads each distinct
answer's columns once (:func:`core.provenance.as_columns`: a source's
:class:`core.provenance.SourceColumns` as they are, no row per candidate), then merges every
user in one array pass: one stable sort of every ``(user, rank * width + source)`` key and one
``np.unique`` of ``(user, item)`` pairs for the de-duplication. The micro-batch's provenance
is one :class:`core.provenance.Provenance` over every user's pairs (each user's merged
candidates are a range of its rows), so the columns later stages read — retrieval score and
best source — are that one implementation, computed once for the micro-batch; the catalogue
rows are looked up once per distinct item.

The answers are :func:`serving.merge.merge`'s, item for item and provenance for provenance
(``tests/unit/test_batch_stages.py``).

:class:`BatchUserStates` is the batch path's user state: the serving store's states, folded
per user when a micro-batch first asks for them instead of the whole event log up front.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.candidates import CandidateBatch
from core.clock import column_seconds, epoch_seconds
from core.contracts import Candidate, SourceResult
from core.features import HISTORY_LEN, MAX_RECENT_IMPRESSIONS
from core.provenance import Provenance, as_columns, gather
from core.schema import POSITIVE_EVENT_TYPES
from serving.user_state import OnlineUserStateStore, ServingUserState


def merge_many(
    results: Sequence[Sequence[SourceResult]],
    extra: Sequence[Candidate] = (),
    catalogue: Any = None,
) -> list[CandidateBatch]:
    """``[merge(r, extra) for r in results]`` (every user's answers from the same sources, in
    the same order), in one pass; with ``catalogue``, each batch carries its catalogue rows."""
    if not results:
        return []
    width = len(results[0]) + 1
    if any(len(r) + 1 != width for r in results):
        raise ValueError("every user's answers must come from the same sources")
    # Each distinct answer's columns, read once however many users share it.
    cols: dict[int, tuple] = {}
    flat: list[tuple] = []
    for user in results:
        for cands in [*(r.candidates for r in user), extra]:
            got = cols.get(id(cands))
            if got is None:
                got = cols[id(cands)] = as_columns(cands)
            flat.append(got)
    # Item codes over the distinct answers only (shared answers are looked up once).
    index: dict[str, int] = dict.fromkeys(chain.from_iterable(c[0] for c in cols.values()))  # type: ignore[arg-type]
    index = dict(zip(index, range(len(index)), strict=True))
    codes = {id(c): np.fromiter(map(index.__getitem__, c[0]), np.int64, len(c[0])) for c in cols.values()}
    n_users = len(results)
    sizes = np.array([len(c[0]) for c in flat], dtype=np.int64)
    if not sizes.sum():
        return [CandidateBatch([], []) for _ in results]
    user = np.repeat(np.repeat(np.arange(n_users), width), sizes)
    source = np.repeat(np.tile(np.arange(width), n_users), sizes)
    rank = np.concatenate([c[4] for c in flat])
    code = np.concatenate([codes[id(c)] for c in flat])
    ids = list(chain.from_iterable(c[0] for c in flat))
    diagnostics = None
    if any(c[5] is not None for c in flat):
        diagnostics = list(chain.from_iterable(c[5] if c[5] is not None else [None] * len(c[0]) for c in flat))
    # merge's order: best rank first, ties in source order, then answer order (stable);
    # each user's block apart.
    key = (rank - rank.min()) * width + source
    key = user * (int(key.max()) + 1) + key
    order = np.argsort(key, kind="stable")
    pair = user * len(index) + code
    _, first, inverse = np.unique(pair[order], return_index=True, return_inverse=True)
    by_pos = np.argsort(first, kind="stable")  # the (user, item) groups in merge order
    row_of = np.empty(len(first), dtype=np.int64)
    row_of[by_pos] = np.arange(len(first))
    row = np.empty(len(pair), dtype=np.int64)
    row[order] = row_of[inverse.reshape(-1)]
    kept = order[first[by_pos]]  # each merged row's first candidate
    pairs = Provenance(len(kept), row, list(chain.from_iterable(c[1] for c in flat)),
                       list(chain.from_iterable(c[2] for c in flat)), np.concatenate([c[3] for c in flat]),
                       rank, diagnostics)  # fmt: skip
    k_ids = gather(ids, kept.tolist())
    rows = catalogue.index_of(list(index))[code[kept]] if catalogue is not None else None
    bounds = np.searchsorted(user[kept], np.arange(n_users + 1)).tolist()
    return [CandidateBatch.from_provenance(k_ids[a:b], pairs, np.arange(a, b),
                                           rows=None if rows is None else rows[a:b], catalogue=catalogue)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]  # fmt: skip


class BatchUserStates:
    """The user states :meth:`OnlineUserStateStore.bootstrap` would give for ``events``, each
    built when first asked for (:meth:`prepare` for a micro-batch's users at once, or
    :meth:`get`): a batch actor scores a share of the users, and folding the whole log up
    front was most of its start-up (``small``: 650k events, ≈ 3 s of CPU in every actor).

    A user's state depends on that user's events only, in the store's fold order
    (:meth:`OnlineUserStateStore.fold_table`). :meth:`prepare` builds a micro-batch's states
    from its events as array passes (:func:`fold_states`) instead of one
    :meth:`core.features.UserState.apply` call per event (≈ 200 events per user on ``small``:
    the fold was a third of a home user's CPU); each state equals the bootstrapped store's,
    dict order included (``tests/unit/test_batch_stages.py``). A live event (:meth:`observe`)
    folds after the user's logged ones, with ``apply``, as in the store."""

    def __init__(self, catalogue: Any, tenant_id: str, events: pa.Table | None, users: pa.Table | None = None):
        self.store = OnlineUserStateStore.bootstrap(catalogue, tenant_id, None, users)
        self.catalogue, self.tenant_id = catalogue, tenant_id
        self.events = events
        self._states: dict[str, ServingUserState] = {}
        self._rows: dict[str, tuple[int, int]] = {}
        self._order = np.zeros(0, dtype=np.int64)
        if events is not None and events.num_rows:
            if "tenant_id" in events.column_names:
                events = self.events = events.filter(pc.equal(events["tenant_id"], tenant_id))
            # only the columns a state reads: a micro-batch takes its users' rows of these
            events = self.events = events.select([c for c in _FOLD_COLUMNS if c in events.column_names])
            self._order = pc.sort_indices(events["user_id"]).to_numpy()  # stable: log order within a user
            ids = events["user_id"].take(self._order).combine_chunks()
            starts = _run_starts(ids)
            bounds = [*starts.tolist(), len(ids)]
            self._rows = dict(zip(ids.take(pa.array(starts)).to_pylist(),
                                  zip(bounds[:-1], bounds[1:], strict=True), strict=True))  # fmt: skip
        self._folded: set[str] = set()

    def _new(self, user_id: str) -> ServingUserState:
        """A user's empty state (the store holds none: it gives one with the user's maturity)."""
        return self.store.get(user_id)

    def prepare(self, user_ids: Sequence[str]) -> None:
        """Build the state of every user of ``user_ids`` not built yet, in one pass."""
        todo = [u for u in dict.fromkeys(user_ids) if u not in self._folded]
        self._folded.update(todo)
        spans = [self._rows[u] for u in todo if u in self._rows]
        if spans:
            rows = np.sort(np.concatenate([self._order[a:b] for a, b in spans]))
            self._states.update(fold_states(self.events.take(rows), self.catalogue, self._new))

    def get(self, user_id: str) -> ServingUserState:
        """A snapshot, as :meth:`OnlineUserStateStore.get` gives."""
        if user_id not in self._folded:
            self.prepare([user_id])
        state = self._states.get(user_id)
        return self._new(user_id) if state is None else state.snapshot()

    def observe(self, event: Mapping[str, Any]) -> bool:
        """:meth:`OnlineUserStateStore.observe`, after the user's logged events."""
        if event.get("tenant_id", self.tenant_id) != self.tenant_id:
            return False
        user = event["user_id"]
        if user not in self._folded:
            self.prepare([user])
        state = self._states.get(user) or self._states.setdefault(user, self._new(user))
        state.apply(event["event_type"], event["item_id"], epoch_seconds(event["ts"]), self.catalogue)
        return True


_FOLD_COLUMNS = ("user_id", "item_id", "event_type", "ts", "seq")
"""What :meth:`core.features.UserState.apply` and the fold's order read of an event."""


def fold_states(events: pa.Table, catalogue: Any, new: Callable[[str], ServingUserState]) -> dict[str, ServingUserState]:
    """Every user's state after folding ``events`` (one tenant's, any order) with
    :meth:`core.features.UserState.apply` in the store's order (ts, arrival ``seq`` with nulls
    first, event type, item id), built per user from array passes: ``last_ts`` the latest
    time; the last :data:`~core.features.MAX_RECENT_IMPRESSIONS` impressions; the hidden
    items; each item's *first* positive (a repeat is the same interaction), of which the last
    :data:`~core.features.HISTORY_LEN` make the history and each in the catalogue adds one to
    its category and tags, in that order (so the dicts' order is ``apply``'s too). ``new``
    makes a user's empty state."""
    if "seq" not in events.column_names:
        events = events.append_column("seq", pa.nulls(events.num_rows, pa.int64()))
    events = events.sort_by([("user_id", "ascending"), ("ts", "ascending"), ("seq", "ascending", "at_start"),
                             ("event_type", "ascending"), ("item_id", "ascending")])  # fmt: skip
    n = events.num_rows
    if not n:
        return {}
    user_col = events["user_id"].combine_chunks()
    starts = _run_starts(user_col)
    bounds = np.r_[starts, n]
    users = user_col.take(pa.array(starts)).to_pylist()
    items = events["item_id"].to_pylist()
    ts_arr = column_seconds(events["ts"]).to_numpy()
    last_ts = np.maximum.reduceat(ts_arr, starts).tolist()
    kind = events["event_type"]
    imp = np.flatnonzero(pc.equal(kind, "impression").to_numpy(zero_copy_only=False))
    hide = np.flatnonzero(pc.equal(kind, "hide").to_numpy(zero_copy_only=False))
    pos = np.flatnonzero(pc.is_in(kind, pa.array(sorted(POSITIVE_EVENT_TYPES))).to_numpy(zero_copy_only=False))
    # Each (user, item)'s first positive, in fold order (rows are grouped by user).
    user_of = np.repeat(np.arange(len(starts)), np.diff(bounds))
    item_code = pc.dictionary_encode(events["item_id"].combine_chunks()).indices.to_numpy()
    _, first = np.unique(user_of[pos] * (int(item_code.max()) + 1) + item_code[pos], return_index=True)
    firsts = np.sort(pos[first])
    first_items = gather(items, firsts.tolist())
    # The catalogue's category and (non-empty) tags of each first positive it knows, flat, in
    # fold order: a user's affinities count a range of them (Counter keeps first-seen order).
    rows = catalogue.index_of(first_items)
    known_rows = rows[rows >= 0]
    cats = catalogue.category[known_rows].tolist()
    tag_rows = catalogue.tags[known_rows]
    tags = tag_rows[tag_rows != 0].tolist()  # row-major: item by item, each item's tags in order
    cat_at = np.r_[0, np.cumsum(rows >= 0)]  # known first positives before each first positive
    tag_at = np.r_[0, np.cumsum(np.count_nonzero(tag_rows, axis=1))]  # tags before each known one
    imp_at, hide_at, pos_at = (np.searchsorted(r, bounds).tolist() for r in (imp, hide, firsts))
    cat_at = cat_at[pos_at].tolist()
    tag_at = tag_at[cat_at].tolist()
    imp_ts, imp_items, hide_items = ts_arr[imp].tolist(), gather(items, imp.tolist()), gather(items, hide.tolist())
    out: dict[str, ServingUserState] = {}
    for j, user in enumerate(users):
        state = new(user)
        state.last_ts = last_ts[j]
        a, b = imp_at[j], imp_at[j + 1]
        a = max(a, b - MAX_RECENT_IMPRESSIONS)
        state.impressions.extend(zip(imp_ts[a:b], imp_items[a:b], strict=True))
        state.hidden.update(hide_items[hide_at[j] : hide_at[j + 1]])
        a, b = pos_at[j], pos_at[j + 1]
        mine = first_items[a:b]
        state.positives.update(mine)
        state.history.extend(mine[max(0, len(mine) - HISTORY_LEN) :])
        state.n_positive = len(mine)
        state.category_counts.update((c, float(n)) for c, n in Counter(cats[cat_at[j] : cat_at[j + 1]]).items())
        state.tag_counts.update((t, float(n)) for t, n in Counter(tags[tag_at[j] : tag_at[j + 1]]).items())
        out[user] = state
    return out


def _run_starts(values: pa.Array) -> np.ndarray:
    """Where each run of equal values starts in ``values`` (non-empty, grouped)."""
    return np.flatnonzero(np.r_[True, pc.not_equal(values[1:], values[:-1]).to_numpy(zero_copy_only=False)])
