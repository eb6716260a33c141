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

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.candidates import CandidateBatch
from core.contracts import Candidate, SourceResult
from core.provenance import Provenance, as_columns, gather
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
    folded when first asked for (:meth:`prepare` for a micro-batch's users at once, or
    :meth:`get`): a batch actor scores a share of the users, and folding the whole log up
    front was most of its start-up (``small``: 650k events, ≈ 3 s of CPU in every actor).

    A user's state depends on that user's events only, folded in the store's own order
    (:meth:`OnlineUserStateStore.fold_table` on the user's rows), so each state equals the
    bootstrapped store's (``tests/unit/test_batch_stages.py``); a live event (:meth:`observe`)
    folds after the user's logged ones, as in the store."""

    def __init__(self, catalogue: Any, tenant_id: str, events: pa.Table | None, users: pa.Table | None = None):
        self.store = OnlineUserStateStore.bootstrap(catalogue, tenant_id, None, users)
        self.events = events
        self._rows: dict[str, tuple[int, int]] = {}
        self._order = np.zeros(0, dtype=np.int64)
        if events is not None and events.num_rows:
            if "tenant_id" in events.column_names:
                events = self.events = events.filter(pc.equal(events["tenant_id"], tenant_id))
            self._order = pc.sort_indices(events["user_id"]).to_numpy()  # stable: log order within a user
            ids = events["user_id"].take(self._order).to_pylist()
            starts = [0, *(i for i in range(1, len(ids)) if ids[i] != ids[i - 1]), len(ids)]
            self._rows = {ids[a]: (a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)}
        self._folded: set[str] = set()

    def prepare(self, user_ids: Sequence[str]) -> None:
        """Fold the events of every user of ``user_ids`` not folded yet, in one pass."""
        todo = [u for u in dict.fromkeys(user_ids) if u not in self._folded]
        self._folded.update(todo)
        spans = [self._rows[u] for u in todo if u in self._rows]
        if spans:
            rows = np.sort(np.concatenate([self._order[a:b] for a, b in spans]))
            self.store.fold_table(self.events.take(rows))

    def get(self, user_id: str) -> ServingUserState:
        if user_id not in self._folded:
            self.prepare([user_id])
        return self.store.get(user_id)

    def observe(self, event: Mapping[str, Any]) -> bool:
        """:meth:`OnlineUserStateStore.observe`, after the user's logged events."""
        if event.get("tenant_id", self.store.tenant_id) != self.store.tenant_id:
            return False
        if event["user_id"] not in self._folded:
            self.prepare([event["user_id"]])
        return self.store.observe(event)
