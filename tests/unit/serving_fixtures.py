"""Small hand-built tables for the serving-library tests (catalogue, events, queries)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from core.catalogue import Catalogue
from core.contracts import Candidate, MergedCandidate, Query, ScoredCandidate
from core.schema import EVENT_SCHEMA, ITEM_SCHEMA

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def catalogue(items: list[dict], tenant: str = "acme") -> Catalogue:
    """``items``: dicts with ``item_id`` and optional ``category``, ``maturity``,
    ``created_at``, ``available_from``, ``available_until``, ``tags``."""
    rows = [
        {
            "tenant_id": tenant,
            "item_id": it["item_id"],
            "title": it["item_id"],
            "category": it.get("category", "books"),
            "tags": it.get("tags", []),
            "created_at": it.get("created_at", NOW - timedelta(days=30)),
            "available_from": it.get("available_from"),
            "available_until": it.get("available_until"),
            "maturity": it.get("maturity", "general"),
        }
        for it in items
    ]
    return Catalogue.from_table(pa.Table.from_pylist(rows, schema=ITEM_SCHEMA), tenant)


def events(rows: list[tuple], tenant: str = "acme") -> pa.Table:
    """``rows``: ``(user_id, item_id, event_type, ts[, surface])``."""
    out = []
    for n, r in enumerate(rows):
        out.append(
            {
                "event_id": f"e{n}",
                "tenant_id": tenant,
                "user_id": r[0],
                "item_id": r[1],
                "event_type": r[2],
                "value": 1.0,
                "ts": r[3],
                "surface": r[4] if len(r) > 4 else None,
            }
        )
    return pa.Table.from_pylist(out, schema=EVENT_SCHEMA)


def query(
    k: int = 5, *, user: str = "u1", request_id: str = "r1", tenant: str = "acme", **kw
) -> Query:
    return Query(
        request_id=request_id,
        tenant_id=tenant,
        user_id=user,
        surface=kw.pop("surface", "home"),
        k=k,
        now=kw.pop("now", NOW),
        **kw,
    )


def merged(*item_ids: str, source: str = "s") -> list[MergedCandidate]:
    return [
        MergedCandidate(i, (Candidate(i, source, "v", 1.0 - r / 100, r),))
        for r, i in enumerate(item_ids)
    ]


def scored(pairs: list[tuple[str, float]], source: str = "s") -> list[ScoredCandidate]:
    """Scored candidates with the given utilities; each has its own source rank by utility."""
    order = sorted(range(len(pairs)), key=lambda i: -pairs[i][1])
    rank = {pairs[i][0]: r for r, i in enumerate(order)}
    return [ScoredCandidate(i, (Candidate(i, source, "v", u, rank[i]),), {}, u) for i, u in pairs]
