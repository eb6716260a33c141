"""Pipeline stages that run in other deployments: thin adapters over deployment handles.

They satisfy the library's stage shapes (:class:`core.contracts.CandidateSource`,
:class:`serving.pipeline.RankerStage`), so :class:`serving.pipeline.RecommendationPipeline` runs
unchanged in the ingress with these in place of local objects (one code path, two runtimes).
Cancelling the awaiting coroutine (a source timeout in the pipeline) cancels the remote call.

Versions are per request: whichever replica answered reports the model/index/ranker version
it used, recorded in a per-request dict (:func:`start_request`) that :class:`RequestVersions`
exposes as the runtime's ``versions``, so a response names exactly what served it even while
a hot swap is rolling through the replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from core.contracts import MergedCandidate, Query, ScoredCandidate, SourceResult
from core.features import UserState

_VERSIONS: ContextVar[dict[str, str] | None] = ContextVar("recsys_request_versions", default=None)


def start_request() -> dict[str, str]:
    """Begin a request's version record. Child tasks (the pipeline's ``gather``) copy the
    context, so they share this dict and their writes are seen here."""
    record: dict[str, str] = {}
    _VERSIONS.set(record)
    return record


def _record(versions: Mapping[str, str]) -> None:
    record = _VERSIONS.get()
    if record is not None:
        record.update(versions)


class RequestVersions(Mapping[str, str]):
    """Static versions (config) overlaid with what this request's remote stages reported."""

    def __init__(self, static: Mapping[str, str]):
        self.static = dict(static)

    def _current(self) -> dict[str, str]:
        return {**self.static, **(_VERSIONS.get() or {})}

    def __getitem__(self, key: str) -> str:
        return self._current()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


def state_for_sources(state: Any) -> Any:
    """What a candidate source reads of the user (``user_id``, ``history``): the impressions,
    hides and positives that rules and the ranker need stay behind instead of crossing the
    hop to every source."""
    if not isinstance(state, UserState):
        return state
    return UserState(user_id=state.user_id, history=state.history, n_positive=state.n_positive,
                     last_ts=state.last_ts)  # fmt: skip


def state_for_ranker(state: Any) -> Any:
    """What :func:`core.features.ranker_features` and the two-tower similarity read of the user
    (not hides or positives)."""
    if not isinstance(state, UserState):
        return state
    return UserState(user_id=state.user_id, history=state.history,
                     category_counts=state.category_counts, tag_counts=state.tag_counts,
                     n_positive=state.n_positive, impressions=state.impressions,
                     last_ts=state.last_ts)  # fmt: skip


class RemoteSource:
    """A non-model candidate source served by the ``CandidateSources`` deployment."""

    def __init__(self, handle, cfg, ctx):
        self.name, self.kind = cfg.name, cfg.kind
        self._handle, self._cfg = handle, cfg
        self._tenant, self._surface = ctx.tenant_id, ctx.surface

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        return await self._handle.retrieve.remote(
            self._tenant, self._surface, self._cfg, query, state_for_sources(user_state), limit
        )


class RemoteTwoTowerSource:
    """The two-tower source served by the ``TwoTowerRetriever`` deployment."""

    kind = "two_tower"

    def __init__(self, handle, cfg, ctx):
        self.name = cfg.name
        self._handle = handle

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        from retrieval.sources.base import make_result

        ids, scores, diagnostics, version, versions = await self._handle.retrieve_columns.remote(
            self.name, query, state_for_sources(user_state), limit
        )
        _record(versions)
        return make_result(self.name, version, list(zip(ids, scores, strict=True)), diagnostics)


class RemoteRanker:
    """The ranker stage served by the ``Ranker`` deployment (``@serve.batch`` there).

    ``pinned_version``: an experiment arm's ranker version (the replica refuses to score with
    another one, which the pipeline turns into the ranker fallback)."""

    def __init__(self, handle, pinned_version: str | None = None):
        self._handle = handle
        self._pinned = pinned_version

    @property
    def version(self) -> str:
        return (_VERSIONS.get() or {}).get("ranker", self._pinned or "unknown")

    async def score(self, query: Query, user_state: Any, candidates: Sequence[MergedCandidate],
                    task_weights: Mapping[str, float]) -> list[ScoredCandidate]:  # fmt: skip
        from ranking.scorer import candidate_columns, compose

        # Columns cross the hop (ids, scores, source names) and probabilities come back;
        # provenance never leaves this process.
        probs, version = await self._handle.score_columns.remote(
            query, state_for_ranker(user_state), *candidate_columns(candidates),
            dict(task_weights), self._pinned,
        )  # fmt: skip
        _record({"ranker": version})
        return compose(candidates, probs, task_weights)


class FaultableSource:
    """A source colocated in the ingress, behind the test/game-day delay switch
    (:class:`deployments.settings.FaultInjection` ``source_delay_ms``, read on every call, so
    ``set_faults`` needs no rebuild). Everything else (``name``, ``kind``, ``observe`` for
    trending) is the wrapped source's."""

    def __init__(self, source, faults: Callable[[], Any]):
        self._source = source
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        delay = self._faults().source_delay_ms.get(self._source.name)
        if delay:
            await asyncio.sleep(delay / 1000.0)
        return await self._source.retrieve(query, user_state, limit)
