"""Candidate sources: one file per strategy, registered here by config ``kind``."""

from __future__ import annotations

from core.contracts import CandidateSource
from retrieval.sources.base import SourceContext, SourceUnavailable
from retrieval.sources.editorial import EditorialSource
from retrieval.sources.fresh import FreshSource
from retrieval.sources.item_to_item import ItemToItemSource
from retrieval.sources.trending import TrendingSource
from retrieval.sources.two_tower import (
    AnnIndex,
    QueryEncoder,
    TwoTowerArtifacts,
    TwoTowerSource,
    VersionMismatch,
)

SOURCE_KINDS: dict[str, type] = {
    "two_tower": TwoTowerSource,
    "item_to_item": ItemToItemSource,
    "trending": TrendingSource,
    "editorial": EditorialSource,
    "fresh": FreshSource,
}
"""Config ``kind`` → source class. Adding a source: one file, one entry here, one config kind."""


def build_source(cfg, ctx: SourceContext) -> CandidateSource:
    try:
        cls = SOURCE_KINDS[cfg.kind]
    except KeyError:
        raise ValueError(
            f"unknown source kind {cfg.kind!r}; known: {sorted(SOURCE_KINDS)}"
        ) from None
    return cls.from_config(cfg, ctx)


__all__ = [
    "SOURCE_KINDS",
    "AnnIndex",
    "EditorialSource",
    "FreshSource",
    "ItemToItemSource",
    "QueryEncoder",
    "SourceContext",
    "SourceUnavailable",
    "TrendingSource",
    "TwoTowerArtifacts",
    "TwoTowerSource",
    "VersionMismatch",
    "build_source",
]
