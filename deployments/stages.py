"""Pipeline stages that run in other deployments: thin, handle-backed, one class per kind.

They have the library's stage shapes (:class:`core.contracts.CandidateSource`,
:class:`core.contracts.RankerStage`, a user-state reader), so the ingress runs the same
:class:`serving.pipeline.RecommendationPipeline` with these in place of local objects.
Cancelling the awaiting coroutine (a timeout in the pipeline) cancels the remote call.
Each answer carries the versions of whatever replica produced it, so a record names exactly
what served it even while a hot swap rolls through the replicas.

:class:`HandleStages` is the :class:`serving.assembly.RemoteStages` the ingress hands the
assembler: it claims each stage the app's placement puts in another deployment, and the
two-tower source when the placement puts it in the ingress (the replica loads and hot-swaps
that pair itself: :class:`LocalTwoTowerSource`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.config import SourceSpec
from core.contracts import MergedCandidate, Query, RankerResult, SourceResult
from core.features import UserState
from deployments.settings import Placement
from ranking.scorer import candidate_columns, compose
from retrieval.sources.base import result_from_columns


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
    """A candidate source served by another deployment (``retrieve_columns`` there). ``pin``:
    the ``(two_tower, ann_index)`` pair an experiment arm pins (``TwoTowerRetriever`` holds it
    beside production)."""

    def __init__(self, handle: Any, cfg: SourceSpec, tenant: str, surface: str,
                 pin: tuple[str, str] | None = None):  # fmt: skip
        self.name, self.kind = cfg.name, cfg.kind
        self._handle, self._cfg = handle, cfg
        self._tenant, self._surface, self._pin = tenant, surface, pin

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        # Columns cross the hop (ids, scores), not one object per candidate.
        args = (self._tenant, self._surface, self._cfg, query, state_for_sources(user_state), limit)
        pinned = (self._pin,) if self._pin is not None else ()
        ids, scores, diagnostics, version, versions, vector = await self._handle.retrieve_columns.remote(
            *args, *pinned
        )
        return result_from_columns(self.name, version, ids, scores, diagnostics,
                                   versions=versions, query_vector=vector)  # fmt: skip


class LocalTwoTowerSource:
    """The two-tower source inside the Ingress replica (``placement.source_kinds.two_tower:
    ingress``): the replica's own hot-swapped pair (:class:`deployments.model_slots.TwoTowerSlots`),
    read once per request. Encoding one query and searching the index is a bounded 1–2 ms of
    CPU, run inline: cheaper than a thread hand-off, and far cheaper than the Serve hop to
    ``TwoTowerRetriever`` it replaces. Inline means the pipeline's source timeout cannot cut
    it short: a query tower or index that hangs holds this replica's event loop. Where that
    can happen (a GPU, an index on a network disk), keep the two-tower in its own deployment,
    where the timeout abandons the hop and the request is answered without it, marked."""

    inline = True
    """Run on the request's task (:attr:`serving.stages.SourceStage.inline`): it answers from
    the replica's memory; only a pinned pair's first load suspends, and then the rest runs in
    a task under the source's timeout, as any other source."""

    def __init__(self, slots: Any, cfg: SourceSpec, tenant: str, pin: tuple[str, str] | None = None):
        self.name, self.kind = cfg.name, cfg.kind
        self._slots, self._tenant, self._pin = slots, tenant, pin

    async def retrieve(self, query: Query, user_state: Any, limit: int) -> SourceResult:
        from retrieval.sources import SourceUnavailable

        if self._pin is None:
            source = self._slots.source(self._tenant)
        else:  # an experiment arm's pair, held beside production (loaded on first use)
            source = await self._slots.pinned_source(self._tenant, self._pin)
        if source is None:
            raise SourceUnavailable(f"{self.name}: no two-tower pair loaded for the alias")
        return source.retrieve_now(query, user_state, limit, name=self.name)


class RemoteRanker:
    """The ranker stage served by the ``Ranker`` deployment (``@serve.batch`` there).
    ``pinned_version``: an experiment arm's ranker version, which the replica loads beside
    production and scores with (:class:`deployments.model_slots.PinnedVersions`)."""

    def __init__(self, handle: Any, pinned_version: str | None = None):
        self._handle = handle
        self._pinned = pinned_version

    async def score(self, query: Query, user_state: Any, candidates: Sequence[MergedCandidate],
                    task_weights: Mapping[str, float], *,
                    query_vectors: Mapping[str, Any] | None = None) -> RankerResult:  # fmt: skip
        # Columns cross the hop and probabilities come back; provenance never leaves here. The
        # sources' query vectors go along (64 floats each): the replica need not encode again.
        probs, version = await self._handle.score_columns.remote(
            query, state_for_ranker(user_state), *candidate_columns(candidates),
            dict(task_weights), self._pinned, dict(query_vectors or {}),
        )  # fmt: skip
        return RankerResult(compose(candidates, probs, task_weights), version)


class LocalRanker:
    """The ranker inside the Ingress replica (``placement.ranker: ingress``): the replica's own
    hot-swapped :class:`ranking.scorer.RankerScorer` (:class:`deployments.model_slots.RankerSlots`),
    read once per request, scoring inline (features and one forward pass over a few hundred
    rows: bounded CPU work, cheaper than a thread hand-off and far cheaper than the hop to the
    ``Ranker`` deployment). An arm's pinned version is scored by that version, which the
    replica's slots hold beside production (:class:`deployments.model_slots.PinnedVersions`)."""

    def __init__(self, slots: Any, tenant: str, pinned_version: str | None = None):
        self._slots, self._tenant, self._pinned = slots, tenant, pinned_version

    async def score(self, query: Query, user_state: Any, candidates: Sequence[MergedCandidate],
                    task_weights: Mapping[str, float], *,
                    query_vectors: Mapping[str, Any] | None = None) -> RankerResult:  # fmt: skip
        from ranking.utility import check_task_weights

        scorer = await self._slots.scorer(self._tenant, self._pinned)  # read once: swaps do not affect us
        if scorer is None:
            raise RuntimeError(f"no ranker loaded for {self._tenant}")
        check_task_weights(task_weights, scorer.tasks)
        (probs,) = scorer.score_batch([scorer.features(query, user_state, candidates, query_vectors)])
        return RankerResult(compose(candidates, probs, task_weights), scorer.version)


class HandleStages:
    """Claims the stages ``placement`` puts in other deployments, for one tenant."""

    def __init__(self, tenant: str, placement: Placement, handles: Mapping[str, Any],
                 default_ranker: str, two_tower: Any = None, ranker: Any = None):  # fmt: skip
        """``two_tower`` / ``ranker``: the replica's own
        :class:`deployments.model_slots.TwoTowerSlots` / ``RankerSlots`` where the placement
        puts the two-tower source / the ranker in the ingress."""
        self.tenant, self.placement, self.handles = tenant, placement, handles
        self.default_ranker = default_ranker
        self.two_tower, self.ranker_slots = two_tower, ranker

    def source(self, cfg: SourceSpec, surface: str,
               pin: tuple[str, str] | None = None) -> RemoteSource | LocalTwoTowerSource | None:  # fmt: skip
        """``pin``: an experiment arm's ``(two_tower, ann_index)`` for a two-tower source."""
        pin = pin if cfg.kind == "two_tower" else None
        deployment = self.placement.deployment_for(cfg.kind)
        if deployment is None:
            if cfg.kind == "two_tower":  # loaded and hot-swapped by the replica, not the assembler
                if self.two_tower is None:
                    raise ValueError("two_tower placed in the ingress, but no two-tower slots given")
                return LocalTwoTowerSource(self.two_tower, cfg, self.tenant, pin)
            return None
        return RemoteSource(self.handles[deployment], cfg, self.tenant, surface, pin)

    def ranker(self, version: str | None) -> RemoteRanker | LocalRanker:
        pinned = None if version in (None, self.default_ranker) else version
        if self.placement.ranker == "ingress":
            if self.ranker_slots is None:
                raise ValueError("ranker placed in the ingress, but no ranker slots given")
            return LocalRanker(self.ranker_slots, self.tenant, pinned)
        return RemoteRanker(self.handles["Ranker"], pinned)

    def user_state(self) -> Callable[[str], Any] | None:
        if self.placement.user_state == "ingress":
            return None
        handle, tenant = self.handles["UserState"], self.tenant
        return lambda user_id: handle.get.remote(tenant, user_id)
