"""What every candidate source is built from.

A source is one file under ``retrieval/sources/`` with a config model (extending
:class:`core.config.SourceSpec`) and a class with ``from_config(cfg, ctx: SourceContext)`` and
``async retrieve(query, user_state, limit)`` (:class:`core.contracts.CandidateSource`),
registered with ``@SOURCES.register(kind, ConfigModel, personalised=…)`` (``inline = True`` on the
class when ``retrieve`` never suspends: :attr:`serving.stages.SourceStage.inline`);
:func:`build_source` is the only place that reads the registry.

Invariants every source keeps: candidates are best first with 0-based ``rank``; at most
``limit`` of them; the source never applies policy and never drops items for eligibility
(the rule chain does, with reasons); ``SourceResult.version`` names the data/model version
the answer came from, ``SourceResult.versions`` the registry artifacts behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from core.catalogue import Catalogue
from core.components import SOURCES
from core.contracts import SourceResult
from core.provenance import SourceColumns

if TYPE_CHECKING:
    from retrieval.artifacts import TwoTowerArtifacts
    from retrieval.cooccurrence import ItemToItemIndex


@dataclass(frozen=True)
class SourceContext:
    """Shared, already-loaded data a tenant's sources are built from (one per tenant)."""

    tenant_id: str
    surface: str
    catalogue: Catalogue | None
    events: pa.Table | None = None
    """The tenant's event log, for sources that bootstrap from history (trending)."""
    cooccurrence: ItemToItemIndex | None = None
    two_tower: TwoTowerArtifacts | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Room for a new source kind's data without changing this class."""


class SourceUnavailable(RuntimeError):
    """A source cannot answer (its model, index or data is not loaded)."""


def build_source(cfg: Any, ctx: SourceContext) -> Any:
    """The source a config entry names, from its registered class."""
    return SOURCES.get(cfg.kind).cls.from_config(cfg, ctx)


def make_result(
    source: str,
    version: str,
    scored: Sequence[tuple[str, float]],
    diagnostics: dict | None = None,
    per_item: dict[str, dict] | None = None,
    *,
    versions: dict[str, str] | None = None,
) -> SourceResult:
    """A :class:`SourceResult` from ``(item_id, score)`` pairs already in best-first order."""
    pairs = list(scored)
    ids = [p[0] for p in pairs]
    per = [per_item.get(i) or None for i in ids] if per_item else None
    return result_from_columns(source, version, ids, [float(p[1]) for p in pairs], diagnostics,
                               versions=versions, per_item=per)  # fmt: skip


def result_from_columns(
    source: str,
    version: str,
    item_ids: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    diagnostics: dict | None = None,
    *,
    versions: dict[str, str] | None = None,
    per_item: Sequence[dict | None] | None = None,
    query_vector: tuple[str, Any] | None = None,
    rows: np.ndarray | None = None,
    catalogue: Catalogue | None = None,
) -> SourceResult:
    """:func:`make_result` from two columns, best first: ``item_ids`` and ``scores`` (floats,
    or a float array). What a source that searches arrays has in hand, and what crosses a
    Serve hop. The answer's ``candidates`` are :class:`core.provenance.SourceColumns`: no
    object per candidate until one is read. ``per_item``: each candidate's diagnostics;
    ``rows``: the items' rows in ``catalogue`` when the source has them (see
    :class:`core.provenance.SourceColumns`)."""
    if len(item_ids) != len(scores):
        raise ValueError(f"{source}: {len(item_ids)} item ids but {len(scores)} scores")
    cands = SourceColumns(source, version, item_ids, scores, per_item, rows=rows, catalogue=catalogue)
    return SourceResult(source=source, version=version, candidates=cands,
                        diagnostics=diagnostics or {}, versions=versions or {},
                        query_vector=query_vector)  # fmt: skip
