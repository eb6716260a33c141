"""A surface's slate for many users at once: the batch scoring job's slate stage.

:class:`ranking.slate.policy.SlatePolicy` builds one user's slate; the batch path
(:mod:`serving.batch`) has hundreds of users per micro-batch on the same policy. Here the
built-in steps run over a ``(users, candidates)`` matrix instead, padded to the longest pool:
each step is a handful of array operations for the whole micro-batch, and the MMR ordering
is one masked argmax *per slate position* over every user at once instead of one per user.

It reproduces the per-user policy's choices exactly, ties included: utility order is a stable
sort (ties in input order), MMR's tie rule (a candidate beats the best so far only by more
than ``1e-12``, earlier ones win) is replayed by the per-user scan for any user whose best
values are that close, and each step reads the same arrays in the same arithmetic order.

What it covers (:func:`batchable`): ``pinned`` with no items, ``frequency_cap``,
``exploration`` and ``diversity`` without item embeddings (category similarity), on a policy
whose steps are exactly these classes and which reads a catalogue. Anything else — a custom
step, pins, embedding similarity — and a user whose utilities are not all finite get
``None`` from :func:`slates_many`: the caller runs the per-user policy for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.candidates import ScoredBatch
from core.contracts import Query, ScoredCandidate, SlateItem
from ranking.slate.exploration import ExplorationStep
from ranking.slate.frequency_cap import FrequencyCapStep
from ranking.slate.mmr import _TIE, MmrDiversityStep
from ranking.slate.pinned import PinnedStep

Entry = tuple[int, tuple[str, ...], float | None]
"""One placed item of one user: its column in that user's pool, its reasons, its propensity."""


def _step_ok(step: Any) -> bool:
    kind = type(step)  # exactly the built-in classes: a subclass may change what they do
    if kind is PinnedStep:
        return not step.pinned
    if kind in (FrequencyCapStep, ExplorationStep):
        return True
    if kind is MmrDiversityStep:
        return step.embedding_of is None and step.catalogue is not None
    return False


def batchable(policy: Any) -> bool:
    """Whether :func:`slates_many` can build ``policy``'s slates (module docstring)."""
    steps = getattr(policy, "steps", None)
    return steps is not None and all(_step_ok(s) for s in steps)


class _Batch:
    """The micro-batch's pools as padded ``(U, C)`` matrices, and each user's draft."""

    def __init__(self, queries: Sequence[Query], pools: list[ScoredBatch], states: Sequence[Any]):
        self.queries, self.pools, self.states = queries, pools, states
        self.sizes = np.array([len(p) for p in pools], dtype=np.int64)
        n_users, width = len(pools), int(self.sizes.max()) if len(pools) else 0
        self.width = width
        self.utility = np.zeros((n_users, width))
        for u, p in enumerate(pools):
            self.utility[u, : len(p)] = p.utility_array()
        self.alive = np.arange(width)[None, :] < self.sizes[:, None]
        """Candidates still in each user's pool (neither placed nor removed)."""
        self.k = np.array([q.k for q in queries], dtype=np.int64)
        self.filled: list[list[Entry]] = [[] for _ in pools]
        self.tail: list[list[Entry]] = [[] for _ in pools]

    def open(self, u: int) -> int:
        """:attr:`SlateDraft.open` of user ``u`` (no fixed items here)."""
        return max(0, int(self.k[u]) - len(self.filled[u]) - len(self.tail[u]))

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's pool best-first by utility, ties in input order (the per-user
        :func:`ranking.slate.draft.utility_order` of the pool as it is now): ``(U, C)``
        columns (the pool's first, padding after) and ``(U,)`` pool sizes."""
        key = np.where(self.alive, -self.utility, np.inf)  # utilities are finite here
        return np.argsort(key, axis=1, kind="stable"), self.alive.sum(axis=1)


def _frequency_cap(step: FrequencyCapStep, b: _Batch) -> None:
    for u, (q, state) in enumerate(zip(b.queries, b.states, strict=True)):
        now = q.now.timestamp() + 1e-6  # as the step: an impression at ``now`` was seen
        counts = state.recent_impression_counts(now, step.window_hours)
        if not counts:
            continue
        capped = {i for i, n in counts.items() if n >= step.max_impressions}
        if capped:
            ids = b.pools[u].item_ids
            b.alive[u, : len(ids)] &= ~np.fromiter(map(capped.__contains__, ids), bool, len(ids))


def _exploration(step: ExplorationStep, b: _Batch) -> None:
    if not step.slots:
        return
    order, n_alive = b.order()
    for u, q in enumerate(b.queries):
        n_free = b.open(u)
        if n_free <= 1:
            continue
        k = int(b.k[u])
        below = order[u, k : max(k, min(k + step.pool, int(n_alive[u])))].tolist()
        for j, p in step.draw(q.request_id, len(below), min(step.slots, n_free - 1)):
            col = below[j]
            b.tail[u].append((col, ("exploration", f"propensity:{p:.6g}"), p))
            b.alive[u, col] = False


def _diversity(step: MmrDiversityStep, b: _Batch) -> None:
    """:meth:`MmrDiversityStep.select` for every user, one pick position at a time."""
    n_users = len(b.pools)
    wants = np.array([b.open(u) for u in range(n_users)], dtype=np.int64)
    if not n_users or not wants.any() or not b.width:
        return
    order, n_alive = b.order()
    width = int(n_alive.max())
    if width == 0:
        return
    order = order[:, :width]
    valid = np.arange(width)[None, :] < n_alive[:, None]
    u_o = np.take_along_axis(b.utility, order, axis=1)
    lo = np.where(valid, u_o, np.inf).min(axis=1, initial=np.inf)
    hi = np.where(valid, u_o, -np.inf).max(axis=1, initial=-np.inf)
    span = np.where(n_alive > 0, hi - lo, 0.0)
    rel = np.ones_like(u_o)
    scaled = span > 0
    rel[scaled] = (u_o[scaled] - lo[scaled, None]) / span[scaled, None]
    # Category codes in utility order (-1: not in the catalogue, a category of its own for
    # the cap, never similar to anything); +1 to index the per-user counts.
    cat = step.catalogue
    rows = np.full((n_users, b.width), -1, dtype=np.int64)
    for u, p in enumerate(b.pools):
        rows[u, : len(p)] = p.rows(cat)
    rows_o = np.take_along_axis(rows, order, axis=1)
    codes = np.where(rows_o >= 0, cat.category[np.maximum(rows_o, 0)], -1)
    cat_cap = np.inf if step.max_per_category is None else step.max_per_category
    quotas = list(step.source_quotas.items())
    if quotas:  # which quota each candidate's best source counts against (-1: none)
        quota_of = {s: i for i, (s, _) in enumerate(quotas)}
        q_code = np.full((n_users, b.width), -1, dtype=np.int64)
        for u, p in enumerate(b.pools):
            q_code[u, : len(p)] = np.fromiter(map(quota_of.get, p.best_sources(), [-1] * len(p)),
                                              np.int64, len(p))  # fmt: skip
        q_code = np.take_along_axis(q_code, order, axis=1)
        q_cap = np.array([float(n) for _, n in quotas] + [np.inf])  # index -1: no quota
    lam = step.lam
    vals = lam * rel
    similar_val = lam * rel - (1.0 - lam)
    n_cat = len(cat.categories) + 1
    src = (q_code, q_cap, len(quotas) + 1) if quotas else None
    # The picks come from the first ``lead`` positions of each user's utility order: a value is
    # ``lam·rel − (1 − lam)·sim ≤ lam·rel`` and ``rel`` does not grow along that order, so a pick
    # whose value beats ``lam·rel`` at position ``lead`` by more than the tie margin is the pick
    # over every position (as the per-user scan stops, ``MmrDiversityStep._select_by_category``).
    # A user for whom one pick is not so certified is picked again over all positions.
    lead = min(width, max(_LEAD, 4 * int(wants.max())))
    picks, certified = _mmr_picks(vals, similar_val, valid, codes, n_cat, src, cat_cap, wants, lead)
    redo = np.flatnonzero(~certified)
    if len(redo):
        sub = (q_code[redo], q_cap, len(quotas) + 1) if quotas else None
        again, _ = _mmr_picks(vals[redo], similar_val[redo], valid[redo], codes[redo], n_cat, sub, cat_cap,
                              wants[redo], width)  # fmt: skip
        for j, u in enumerate(redo.tolist()):
            picks[u] = again[j]
    for u in range(n_users):
        for p, skipped in picks[u]:
            col = int(order[u, p])
            reasons = (f"utility_rank:{p}", "mmr_diversity") if skipped else (f"utility_rank:{p}",)
            b.filled[u].append((col, reasons, None))
            b.alive[u, col] = False


_LEAD = 64
"""Positions the batched MMR first picks from (at least four per slate slot it fills)."""


def _mmr_picks(vals: np.ndarray, similar_val: np.ndarray, valid: np.ndarray, codes: np.ndarray, n_cat: int,
               src: tuple | None, cat_cap: float, wants: np.ndarray, lead: int) -> tuple[list, np.ndarray]:  # fmt: skip
    """MMR's picks over the first ``lead`` positions of ``(U, width)`` columns in utility
    order: per user ``(position, skipped_an_earlier_one)`` in pick order, and whether every
    pick is the one over all ``width`` positions (the bound in :func:`_diversity`)."""
    n_users, width = vals.shape
    outside = np.full(n_users, -np.inf)  # the most any position from ``lead`` on can be worth
    if lead < width:
        outside = np.where(valid[:, lead], vals[:, lead], -np.inf)
    vals, similar_val = vals[:, :lead].copy(), similar_val[:, :lead]
    valid, codes = valid[:, :lead], codes[:, :lead]
    certified = np.ones(n_users, dtype=bool)
    per_cat = np.zeros((n_users, n_cat))
    if src is not None:
        q_code, q_cap, n_src = src
        q_code = q_code[:, :lead]
        per_src = np.zeros((n_users, n_src))
    # What the per-user step recomputes at every pick is kept up to date here instead, at each
    # pick for its user only: ``open_`` (still in the pool and neither its category nor its
    # source quota full: both only ever fill up) and ``vals``, each candidate's
    # ``lam * rel - (1 - lam) * max_sim`` (``max_sim`` is 0, then 1 once an item of its
    # category is placed: the same two expressions, so the same floats).
    remaining = valid.copy()
    active = wants > 0
    open_ = valid & active[:, None]
    picks: list[list[tuple[int, bool]]] = [[] for _ in range(n_users)]
    while True:
        masked = np.where(open_, vals, -np.inf)
        best = masked.argmax(axis=1)
        has = open_[np.arange(n_users), best]
        certified &= ~(active & ~has & (outside > -np.inf))  # ran out here, not over all positions
        users = np.flatnonzero(active & has)
        active[:] = False  # nothing left to pick: that user's ordering stops (as ``select``)
        if not len(users):
            break
        active[users] = True
        p_of = best[users]
        top = masked[users, p_of]
        certified[users] &= top - 2 * _TIE > outside[users]
        near = (masked[users] >= (top - 2 * _TIE)[:, None]).sum(axis=1)
        for j in np.flatnonzero(near > 1).tolist():  # near-ties: the exact scan
            u = int(users[j])
            best_p, best_val = -1, -np.inf
            for p in np.flatnonzero(open_[u]).tolist():
                v = float(vals[u, p])
                if v > best_val + _TIE:
                    best_p, best_val = p, v
            p_of[j] = best_p
        first = remaining[users].argmax(axis=1)  # an earlier candidate was left behind
        for u, p, skipped in zip(users.tolist(), p_of.tolist(), (first < p_of).tolist(), strict=True):
            picks[u].append((p, skipped))
        remaining[users, p_of] = False
        open_[users, p_of] = False
        c = codes[users, p_of]
        same = codes[users] == c[:, None]
        per_cat[users, c + 1] += 1
        full = per_cat[users, c + 1] >= cat_cap
        if full.any():
            open_[users[full]] &= ~same[full]
        if src is not None:
            q = q_code[users, p_of]
            per_src[users, q] += 1
            full = per_src[users, q] >= q_cap[q]
            if full.any():
                open_[users[full]] &= q_code[users[full]] != q[full, None]
        hit = same & (c >= 0)[:, None]
        vals[users] = np.where(hit, similar_val[users], vals[users])
        done = np.array([len(picks[u]) for u in users.tolist()]) >= wants[users]
        open_[users[done]] = False
        active[users[done]] = False
    return picks, certified


_RUN = {FrequencyCapStep: _frequency_cap, ExplorationStep: _exploration, MmrDiversityStep: _diversity}


def slates_many(
    policy: Any,
    queries: Sequence[Query],
    scored: Sequence[Sequence[ScoredCandidate]],
    states: Sequence[Any],
) -> list[list[SlateItem] | None]:
    """Each user's slate items under ``policy`` (a :func:`batchable` one), as
    ``policy(query, scored, state).items`` would give them; ``None`` for a user whose
    utilities are not all finite (the caller runs the per-user policy for that one)."""
    pools = [ScoredBatch.of(s) for s in scored]
    here = [u for u, p in enumerate(pools) if np.isfinite(p.utility_array()).all()]
    out: list[list[SlateItem] | None] = [None] * len(pools)
    if not here:
        return out
    b = _Batch([queries[u] for u in here], [pools[u] for u in here], [states[u] for u in here])
    for step in policy.steps:
        run = _RUN.get(type(step))
        if run is not None:
            run(step, b)
    for j, u in enumerate(here):
        pool = b.pools[j]
        entries = [*b.filled[j], *b.tail[j]][: int(b.k[j])]
        ids, util = pool.item_ids, pool.utility
        sources = pool.candidates.sources_of([e[0] for e in entries])  # the slate's only
        out[u] = [
            SlateItem(item_id=ids[col], rank=r, score=float(util[col]), sources=src,
                      reasons=reasons, propensity=propensity)  # fmt: skip
            for r, ((col, reasons, propensity), src) in enumerate(zip(entries, sources, strict=True))
        ]
    return out
