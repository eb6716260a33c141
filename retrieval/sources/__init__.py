"""Candidate sources: one file per strategy. Each module registers its class and config model
with :data:`core.components.SOURCES`; importing this package imports every module in it, so a
new source is one new file here plus one ``sources:`` entry in a surface's config."""

from __future__ import annotations

from core.components import SOURCES, import_all
from retrieval.artifacts import AnnIndex, QueryEncoder, TwoTowerArtifacts, VersionMismatch
from retrieval.sources.base import SourceContext, SourceUnavailable, build_source
from retrieval.sources.editorial import EditorialSource
from retrieval.sources.fresh import FreshSource
from retrieval.sources.item_to_item import ItemToItemSource
from retrieval.sources.trending import TrendingSource
from retrieval.sources.two_tower import TwoTowerSource

import_all(__name__)

__all__ = [
    "SOURCES",
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
