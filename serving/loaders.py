"""One loader per artifact family, used by Serve replicas, offline evaluation and tests alike.

* :func:`load_two_tower`: a query tower and its ANN index as :class:`TwoTowerArtifacts`,
  refusing a pair whose index another item tower built (checked on the manifests before any
  weights are read, and again on the loaded objects).
* :func:`load_ranker`: a ranker version with its lineage: the two-tower it was trained with
  gives its ``retrieval_score`` feature (:func:`retrieval.similarity.for_ranker`).
"""

from __future__ import annotations

from typing import Any

from core.catalogue import Catalogue
from core.features import PopularityCounter
from core.registry import Registry
from ranking.model import MultiTaskRanker
from ranking.scorer import RankerScorer
from retrieval.artifacts import TwoTowerArtifacts, VersionMismatch
from retrieval.index import load_index
from retrieval.similarity import for_ranker
from retrieval.two_tower import TwoTowerModel


class Refused(Exception):
    """The artifacts must not be served together; whoever serves keeps the old ones."""


def two_tower_key(registry: Registry, tenant: str, alias: str) -> tuple[str, str] | None:
    """``(two_tower version, ann_index version)`` the alias points at, or None."""
    model = registry.resolve("two_tower", tenant, alias)
    index = registry.resolve("ann_index", tenant, alias)
    return (model, index) if model and index else None


def load_two_tower(
    registry: Registry, tenant: str, key: tuple[str, str], device: str = "cpu"
) -> TwoTowerArtifacts:
    """:class:`Refused` for a mismatched pair (the index manifest or, failing that, the
    index's own metadata names its item tower)."""
    model_version, index_version = key
    manifest = registry.manifest("ann_index", tenant, index_version)
    built_by = manifest.config.get("item_tower_version") or manifest.lineage.parents.get("two_tower")
    if built_by and built_by != model_version:  # refuse before reading any weights
        raise Refused(
            f"ann_index {index_version} was built by item tower {built_by}, "
            f"not by two_tower {model_version}"
        )
    index = load_index(registry.local_path("ann_index", tenant, index_version))
    built_by = built_by or getattr(index, "item_tower_version", None) or "?"
    model = TwoTowerModel.load(registry.local_path("two_tower", tenant, model_version), device)
    try:
        return TwoTowerArtifacts(model, index, model_version, index_version, built_by)
    except VersionMismatch as exc:
        raise Refused(str(exc)) from exc


def load_ranker_model(
    registry: Registry, tenant: str, version: str, device: str = "cpu"
) -> MultiTaskRanker:
    return MultiTaskRanker.load(registry.local_path("ranker", tenant, version), device)


def load_ranker(
    registry: Registry,
    tenant: str,
    version: str,
    catalogue: Catalogue,
    popularity: PopularityCounter,
    *,
    device: str = "cpu",
    loaded_towers: dict[str, Any] | None = None,
) -> RankerScorer:
    """A ranker version ready to score: model, catalogue features, live popularity, and the
    similarity of the two-tower it was trained with."""
    model = load_ranker_model(registry, tenant, version, device)
    similarity = for_ranker(registry, tenant, version, catalogue, loaded=loaded_towers)
    return RankerScorer(model, catalogue, popularity, version=version, similarity=similarity)
