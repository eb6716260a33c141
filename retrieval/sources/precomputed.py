"""Precomputed recommendations: each user's slate from the production ``batch_recs`` artifact
(written by ``training.batch_score``), for surfaces that are not request-driven (email, push,
cold-start).

The source proposes; it never filters. Its candidates go through the live eligibility rules
like any other source's, so an item the user hid, or that became unavailable or blocked after
the batch ran, never comes back. When it cannot answer — no production artifact, the artifact
is past its ``expires_at``, the user is not in it — it returns no candidates and
``diagnostics["handover"]`` says why; the pipeline then runs the surface's online sources and
records ``precomputed_handover:<why>`` (``serving/pipeline.py``, surface ``mode``).

The artifact is read once at construction and re-read (in a worker thread, at most every
``refresh_s``) when the alias moves, so a replica serves a new nightly version without a
restart; a request reads the loaded object once and never waits for a load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from retrieval.sources.base import SourceContext, make_result

logger = logging.getLogger(__name__)

RECS_FILE = "recs.parquet"
"""The artifact's table: ``surface, user_id, rank, item_id, score, reasons, sources``, one row
per slate position (``training.batch_score``)."""


class PrecomputedSourceConfig(SourceSpec):
    surface: str | None = None
    """Whose slates to read (default: the surface this source is configured on)."""
    alias: str = "production"
    refresh_s: float = Field(60.0, gt=0, description="how often to check the alias for a new version")


@dataclass(frozen=True)
class BatchRecs:
    """One loaded ``batch_recs`` version, for one surface: user → ``((item, score), ...)`` in
    slate order."""

    version: str
    surface: str
    expires_at: datetime
    by_user: dict[str, tuple[tuple[str, float], ...]]
    versions: dict[str, str]
    """The model versions the batch ran with (the manifest's ``config.versions``)."""


def load_batch_recs(registry: Any, tenant: str, surface: str, alias: str = "production") -> BatchRecs | None:
    """The ``batch_recs`` version ``alias`` points at, for ``surface``; None when there is none."""
    version = registry.resolve("batch_recs", tenant, alias)
    if version is None:
        return None
    manifest = registry.manifest("batch_recs", tenant, version)
    table = pq.read_table(registry.local_path("batch_recs", tenant, version) / RECS_FILE,
                          columns=["surface", "user_id", "rank", "item_id", "score"])  # fmt: skip
    table = table.filter(pc.equal(table["surface"], surface)).sort_by([("user_id", "ascending"), ("rank", "ascending")])
    by_user: dict[str, list[tuple[str, float]]] = {}
    for user, item, score in zip(table["user_id"].to_pylist(), table["item_id"].to_pylist(),
                                 table["score"].to_pylist(), strict=True):  # fmt: skip
        by_user.setdefault(user, []).append((item, float(score)))
    return BatchRecs(
        version=version,
        surface=surface,
        expires_at=datetime.fromisoformat(manifest.config["expires_at"]),
        by_user={u: tuple(v) for u, v in by_user.items()},
        versions=dict(manifest.config.get("versions", {})),
    )


@SOURCES.register("precomputed", PrecomputedSourceConfig, personalised=True)
class PrecomputedSource:
    kind = "precomputed"
    inline = True  # answers from memory, never suspends (serving.stages.SourceStage.inline)

    def __init__(self, name: str, tenant_id: str, surface: str, registry: Any = None,
                 alias: str = "production", refresh_s: float = 60.0, recs: BatchRecs | None = None):  # fmt: skip
        """``registry``: a :class:`core.registry.Registry` to read (and re-read) the alias
        from; ``recs``: an already loaded version (tests, offline jobs)."""
        self.name, self.tenant_id, self.surface = name, tenant_id, surface
        self.registry, self.alias, self.refresh_s = registry, alias, refresh_s
        self.recs = recs
        self._checked = time.monotonic()
        self._refreshing = False
        if recs is None and registry is not None:
            self.refresh()

    @classmethod
    def from_config(cls, cfg: PrecomputedSourceConfig, ctx: SourceContext) -> PrecomputedSource:
        return cls(cfg.name, ctx.tenant_id, cfg.surface or ctx.surface, ctx.extra.get("registry"),
                   cfg.alias, cfg.refresh_s)  # fmt: skip

    @property
    def version(self) -> str:
        return f"batch_recs:{self.recs.version}" if self.recs else "batch_recs:none"

    def refresh(self) -> bool:
        """Load the version the alias points at if it moved; True if it did."""
        self._checked = time.monotonic()
        try:
            current = self.registry.resolve("batch_recs", self.tenant_id, self.alias)
            if current is None or (self.recs is not None and current == self.recs.version):
                return False
            self.recs = load_batch_recs(self.registry, self.tenant_id, self.surface, self.alias)
            return True
        except Exception:  # keep serving what is loaded; the next check tries again
            logger.exception("%s: cannot load batch_recs for %s", self.name, self.tenant_id)
            return False
        finally:
            self._refreshing = False

    def _maybe_refresh(self) -> None:
        if self.registry is None or self._refreshing or time.monotonic() - self._checked < self.refresh_s:
            return
        self._refreshing = True
        asyncio.get_running_loop().run_in_executor(None, self.refresh)

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        self._maybe_refresh()
        recs = self.recs  # read once: a refresh swaps the reference, never mutates it
        if recs is None:
            return self._handover("no_artifact")
        if query.now >= recs.expires_at:
            return self._handover("expired", recs)
        slate = recs.by_user.get(query.user_id)
        if not slate:
            return self._handover("missing_user", recs)
        return make_result(self.name, self.version, slate[:limit],
                           {"batch_recs": recs.version, "expires_at": recs.expires_at.isoformat()},
                           versions={"batch_recs": recs.version})  # fmt: skip

    def _handover(self, why: str, recs: BatchRecs | None = None) -> SourceResult:
        diagnostics = {"handover": why}
        if recs is not None:
            diagnostics["batch_recs"] = recs.version
        return make_result(self.name, self.version, [], diagnostics)
