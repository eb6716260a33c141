"""The rule chain over every user of a micro-batch at once: the batch path's eligibility stage.

:class:`ranking.rules.chain.RuleChain` judges one request's :class:`CandidateBatch`; the batch
path (:mod:`serving.batch`) has hundreds of users on one tenant's chain. Here the built-in
rules judge the users' candidates stacked into one column (catalogue rows, item ids, the user
each belongs to): the catalogue-driven rules are one array expression over the stack, the
per-user ones (hidden items, already-interacted items, the maturity limit) are
``(user, item)`` membership, asked only of the users who have any.

Only what a slate needs comes back: each user's kept candidates, as the chain's ``kept``
(every rule is a mask, so the kept set is their intersection, in input order). A chain with
a rule that is not exactly a built-in one (:func:`batchable`) is not run here, and a user
whose rules cannot be read (no user state, no catalogue, no policy) gets ``None``: the caller
runs :meth:`RuleChain.apply` for that user, which fails closed as it always has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.candidates import CandidateBatch
from core.contracts import Query
from ranking.rules.availability import AvailabilityRule
from ranking.rules.blocked import BlockedRule
from ranking.rules.catalogue import CatalogueRule
from ranking.rules.chain import RuleChain
from ranking.rules.exclude import ExcludeRule
from ranking.rules.hidden import HiddenByUserRule
from ranking.rules.maturity import MaturityRule

_BUILT_IN = (CatalogueRule, AvailabilityRule, BlockedRule, HiddenByUserRule, MaturityRule, ExcludeRule)


def batchable(chain: Any) -> bool:
    """Whether :func:`kept_many` can run ``chain`` (every rule exactly a built-in one)."""
    return type(chain) is RuleChain and all(type(r) in _BUILT_IN for r in chain.rules)


def catalogue_of(chain: RuleChain, tenant: str) -> Any:
    """The catalogue the catalogue-driven rules read (``None``: one is missing or another
    tenant's, so they would fail closed)."""
    cats = {id(r.catalogue): r.catalogue for r in chain.rules if hasattr(r, "catalogue")}
    if len(cats) != 1:
        return None
    (cat,) = cats.values()
    return cat if cat is not None and cat.tenant_id == tenant else None


def _member(ids: list[str], found: Any) -> np.ndarray:
    return np.fromiter(map(found.__contains__, ids), bool, len(ids))


def kept_many(
    chain: RuleChain,
    queries: Sequence[Query],
    batches: Sequence[CandidateBatch],
    states: Sequence[Any],
) -> list[CandidateBatch | None]:
    """Each user's ``chain.apply(query, batch, state).kept`` (a :func:`batchable` chain), or
    ``None`` where the chain would not judge that user here (module docstring)."""
    n_users = len(batches)
    out: list[CandidateBatch | None] = [None] * n_users
    if not n_users or len({q.tenant_id for q in queries}) != 1:
        return out
    needs_cat = any(type(r) is not HiddenByUserRule and type(r) is not ExcludeRule for r in chain.rules)
    cat = catalogue_of(chain, queries[0].tenant_id) if needs_cat else None
    if needs_cat and cat is None:
        return out
    ok_user = np.ones(n_users, dtype=bool)
    sizes = np.array([len(b) for b in batches], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    user = np.repeat(np.arange(n_users), sizes)
    alive = np.ones(len(user), dtype=bool)
    rows = None
    if cat is not None:
        rows = np.concatenate([b.rows(cat) for b in batches]) if len(user) else np.zeros(0, np.int64)
    known = rows >= 0 if rows is not None else None
    ids: list[str] | None = None

    def all_ids() -> list[str]:
        nonlocal ids
        if ids is None:
            ids = [i for b in batches for i in b.item_ids]
        return ids

    for rule in chain.rules:
        kind = type(rule)
        if kind is CatalogueRule:
            alive &= known
        elif kind is AvailabilityRule:
            now = np.array([q.now.timestamp() for q in queries])[user]
            ok = known.copy()
            ok[known] = cat.available(rows[known], now[known])
            alive &= ok
        elif kind is MaturityRule:
            if rule.policy is None:
                return out
            limit = np.array([rule.limit_for(s) for s in states], dtype=np.int64)[user]
            ok = known.copy()
            ok[known] = cat.maturity[rows[known]] <= limit[known]
            alive &= ok
        elif kind is BlockedRule:
            if rule.policy is None:
                return out
            items = set(rule.policy.blocked_items)
            categories = set(rule.policy.blocked_categories)
            if items:
                alive &= ~_member(all_ids(), items)
            if categories:
                codes = [k for k, name in enumerate(cat.categories) if name in categories]
                alive &= ~(known & np.isin(cat.category[np.maximum(rows, 0)], codes))
        elif kind is HiddenByUserRule:
            for u, s in enumerate(states):
                hidden = getattr(s, "hidden", None) if s is not None else None
                if hidden is None:
                    ok_user[u] = False  # the chain fails closed for this user: it says so itself
                elif hidden:
                    a, b = bounds[u], bounds[u + 1]
                    alive[a:b] &= ~_member(batches[u].item_ids, hidden)
        elif kind is ExcludeRule:
            for u, (q, s) in enumerate(zip(queries, states, strict=True)):
                seen = set(getattr(s, "history", ()) or ())
                seen |= getattr(s, "positives", set()) or set()
                seen |= set(q.exclude_item_ids)
                if seen:
                    a, b = bounds[u], bounds[u + 1]
                    alive[a:b] &= ~_member(batches[u].item_ids, seen)
    for u, batch in enumerate(batches):
        if ok_user[u]:
            keep = alive[bounds[u] : bounds[u + 1]]
            out[u] = batch if keep.all() else batch.take(keep)
    return out
