"""The one request pipeline: assignment → sources → merge → rules → ranker → slate → record.

:class:`RecommendationPipeline` orchestrates; it holds no model and no business logic. It runs
over one :class:`serving.stages.TenantStages` built by :mod:`serving.assembly`: library
objects in tests, benchmarks and offline jobs; in Ray Serve the same object with thin
handle-backed stages where a stage runs in another deployment. Each stage's result carries its
own version and diagnostics; the record names what really served (one code path, two
runtimes, no hidden per-request state).

Degradations, decided in advance (also in ``docs/extending.md``):

=====================================  =========================================================
failure                                response
=====================================  =========================================================
optional source times out / errors     continue; ``degraded`` gets ``source_timeout:<name>`` /
                                       ``source_error:<name>``
every personalised source fails, or    candidates from the surface's popular (trending) source;
a required source fails                ``fallback="sources_failed"``
ranker errors, times out, or its       fallback order (retrieval score, then popularity);
requested version is not loaded        ``fallback="ranker_unavailable"``
user state unavailable                 empty state (``history_missing`` = 1); ``degraded`` gets
                                       ``user_state_missing``
policy data unavailable                only the tenant's production ``fallback_list`` for the
                                       surface and the user's segment (else the config's
                                       ``policy.safe_fallback``), checked against catalogue/
                                       availability/hides where those can be read,
                                       ``fallback="policy_unavailable"``; if none remain,
                                       :class:`ServiceUnavailable` (HTTP 503). Never unfiltered.
a precomputed source cannot answer     the surface's online sources; ``degraded`` gets
(expired, user missing, no artifact)   ``precomputed_handover:<why>``
=====================================  =========================================================
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.candidates import CandidateBatch, ScoredBatch
from core.contracts import (
    Candidate,
    DecisionRecord,
    MergedCandidate,
    PolicyUnavailable,
    Query,
    ScoredCandidate,
    SlateItem,
    SourceOutcome,
    SourceResult,
)
from core.experiments import assign
from core.provenance import SourceColumns
from serving import tracing
from serving.errors import ServiceUnavailable, UnknownSurface
from serving.merge import merge
from serving.record import Trace, decision_record
from serving.stages import SourceStage, SurfacePlan, TenantStages
from serving.user_state import ServingUserState

SAFE_FALLBACK_SOURCE = "safe_fallback"
PRECOMPUTED = "precomputed"
"""The source kind a ``mode: precomputed`` surface asks first."""


@dataclass
class PipelineResult:
    slate: list[SlateItem]
    decision: DecisionRecord

    @property
    def fallback(self) -> str | None:
        return self.decision.fallback


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


_Answer = tuple[SourceStage, SourceResult | None, SourceOutcome]
"""A source's part of a request: its stage, its result (``None``: it failed) and outcome."""


class _Resumed:
    """The rest of a coroutine that was run up to its first suspension (awaiting ``step``)
    on the caller's task: awaiting this drives it on, as a task would have from the start
    (what it awaits, and a cancellation, pass through)."""

    __slots__ = ("coro", "step")

    def __init__(self, coro: Any, step: Any):
        self.coro, self.step = coro, step

    def __await__(self) -> Generator[Any, None, Any]:
        coro, step = self.coro, self.step
        while True:
            try:
                yield step
            except BaseException as exc:  # cancelled (a timeout), or thrown in: into the coroutine
                try:
                    step = coro.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                step = coro.send(None)
            except StopIteration as done:
                return done.value


class RecommendationPipeline:
    """Serves one tenant. :meth:`swap` replaces the stages atomically (a new version); a
    request in flight finishes on the stages it started with."""

    def __init__(self, stages: TenantStages):
        self.stages = stages

    def swap(self, stages: TenantStages) -> TenantStages:
        old, self.stages = self.stages, stages
        return old

    async def recommend(self, query: Query) -> PipelineResult:
        rt = self.stages
        if query.tenant_id != rt.tenant.id:
            raise PermissionError(
                f"pipeline serves tenant {rt.tenant.id!r}, not {query.tenant_id!r}"
            )
        if query.surface not in rt.tenant.surfaces:
            raise UnknownSurface(query.surface)
        tr = Trace()
        tr.degraded.extend(rt.degraded)  # standing degradations (kill switches) mark every record
        with tracing.span("recommend", {"recsys.tenant": query.tenant_id,
                                        "recsys.surface": query.surface,
                                        "recsys.request_id": query.request_id}) as sp:  # fmt: skip
            if sp is not None:
                tr.trace_id = tracing.trace_id(sp)
            result = await self._recommend(rt, query, tr)
            if sp is not None:
                sp.set_attributes({"recsys.slate_items": len(result.slate),
                                   "recsys.fallback": result.fallback or "",
                                   **tracing.versions_attributes(result.decision.versions)})  # fmt: skip
        return result

    async def _recommend(self, rt: TenantStages, query: Query, tr: Trace) -> PipelineResult:
        assignment = query.experiment or assign(
            rt.experiments, rt.tenant.id, query.surface, query.user_id
        )
        query = replace(query, experiment=assignment)
        plan = rt.plan(query.surface, assignment)
        tr.lap("experiment")

        with tracing.span("user_state"):
            state = await self._user_state(rt, query, tr)
        tr.lap("user_state")

        with tracing.span("sources") as sp:
            results = await self._sources(plan, query, state, tr)
            if sp is not None:
                sp.set_attributes({"recsys.candidates": sum(len(r.candidates) for r in results),
                                   "recsys.fallback": tr.fallback or ""})  # fmt: skip
        tr.lap("sources")

        merged = merge(results, plan.pinned)
        tr.lap("merge")

        with tracing.span("rules") as sp:
            try:
                if rt.rules is None:
                    raise PolicyUnavailable("policy bundle not loaded")
                filtered = rt.rules.apply(query, merged, state)
            except PolicyUnavailable as exc:
                return self._safe_fallback(rt, query, state, merged, tr, str(exc))
            tr.removals.extend(filtered.removed)
            eligible = CandidateBatch.of(filtered.kept).head(plan.config.ranker.max_candidates)
            if sp is not None:
                sp.set_attributes({"recsys.candidates": len(merged),
                                   "recsys.kept": len(eligible),
                                   "recsys.removed": len(filtered.removed)})  # fmt: skip
        tr.lap("rules")

        with tracing.span("ranker") as sp:
            vectors = {r.query_vector[0]: r.query_vector[1] for r in results if r.query_vector is not None}
            scored = await self._rank(rt, plan, query, state, eligible, tr, vectors)
            if sp is not None:
                sp.set_attributes({"recsys.candidates": len(eligible),
                                   "recsys.version.ranker": tr.versions.get("ranker", ""),
                                   "recsys.fallback": tr.fallback or ""})  # fmt: skip
        tr.lap("ranker")

        with tracing.span("slate") as sp:
            outcome = plan.slate(query, scored, state)
            tr.removals.extend(outcome.removed)
            if sp is not None:
                sp.set_attributes({"recsys.candidates": len(scored),
                                   "recsys.slate_items": len(outcome.items),
                                   "recsys.removed": len(outcome.removed)})  # fmt: skip
        tr.lap("slate")
        tr.versions.setdefault("ranker", rt.fallback_scorer.version)
        return self._result(query, merged, scored, outcome.items, {**rt.versions, **tr.versions}, tr)

    # ------------------------------------------------------------------------------ stages

    async def _user_state(self, rt: TenantStages, query: Query, tr: Trace) -> Any:
        try:
            return await _maybe_await(rt.user_state(query.user_id))
        except Exception:
            tr.degraded.append("user_state_missing")
            return ServingUserState(user_id=query.user_id)

    async def _call_source(self, stage: SourceStage, query: Query, state: Any) -> SourceResult:
        cfg = stage.config
        # ``asyncio.timeout`` bounds the await in this task (``wait_for`` wrapped it in one
        # more task per source and per request).
        async with asyncio.timeout(cfg.timeout_ms / 1000.0):
            return await _maybe_await(stage.source.retrieve(query, state, cfg.quota))

    async def _sources(
        self, plan: SurfacePlan, query: Query, state: Any, tr: Trace
    ) -> list[SourceResult]:
        def answer(stage: SourceStage, res: SourceResult, t0: float) -> _Answer:
            cands, quota = res.candidates, stage.config.quota
            if not isinstance(cands, SourceColumns):
                res = replace(res, candidates=tuple(cands)[:quota])
            elif len(cands) > quota:
                res = replace(res, candidates=cands[:quota])
            ms = (time.perf_counter() - t0) * 1000.0
            # Fields typed by construction (a name, a count, a float): no validation.
            return stage, res, SourceOutcome.model_construct(
                source=stage.config.name, status="ok", candidates=len(res.candidates), latency_ms=ms
            )

        def failed(stage: SourceStage, exc: BaseException, t0: float) -> _Answer:
            ms = (time.perf_counter() - t0) * 1000.0
            name = stage.config.name
            if isinstance(exc, TimeoutError):
                return stage, None, SourceOutcome(source=name, status="timeout", latency_ms=ms)
            err = f"{type(exc).__name__}: {exc}"[:300]
            return stage, None, SourceOutcome(source=name, status="error", latency_ms=ms, error=err)

        async def attempt(stage: SourceStage) -> _Answer:
            t0 = time.perf_counter()
            try:
                return answer(stage, await self._call_source(stage, query, state), t0)
            except Exception as exc:  # a source's failure is its own, never the request's
                return failed(stage, exc, t0)

        async def resume(stage: SourceStage, rest: _Resumed, t0: float) -> _Answer:
            try:
                async with asyncio.timeout(stage.config.timeout_ms / 1000.0):
                    res = await rest
                return answer(stage, res, t0)
            except Exception as exc:
                return failed(stage, exc, t0)

        def start(stage: SourceStage) -> _Answer | Awaitable[_Answer]:
            """The stage's answer, or an awaitable of it. A library source (``inline``) runs
            on this task up to its first suspension, which it never reaches: no task, no
            timer, no event-loop round per source (its timeout could not cut it short in a
            task either: it never yields). Any other runs in a task under its timeout."""
            if not stage.inline:
                return attempt(stage)
            t0 = time.perf_counter()
            try:
                coro = stage.source.retrieve(query, state, stage.config.quota)
                if not inspect.iscoroutine(coro):
                    return answer(stage, coro, t0)
                try:
                    step = coro.send(None)
                except StopIteration as done:
                    return answer(stage, done.value, t0)
            except Exception as exc:
                return failed(stage, exc, t0)
            return resume(stage, _Resumed(coro, step), t0)  # it did suspend: the rest in a task

        def run(stage: SourceStage) -> _Answer | Awaitable[_Answer]:
            if not tracing.enabled():
                return start(stage)
            return traced(stage)

        async def traced(stage: SourceStage) -> _Answer:
            with tracing.span(f"source {stage.config.name}") as sp:
                got = start(stage)
                answer_ = got if isinstance(got, tuple) else await got
                if sp is not None:
                    _, res, outcome = answer_
                    sp.set_attributes({"recsys.source": outcome.source,
                                       "recsys.status": outcome.status,
                                       "recsys.candidates": outcome.candidates,
                                       **tracing.versions_attributes(res.versions if res else {})})  # fmt: skip
            return answer_

        async def run_all(stages: Sequence[SourceStage]) -> list[_Answer]:
            got = [run(s) for s in stages]
            waiting = [i for i, g in enumerate(got) if not isinstance(g, tuple)]
            if waiting:
                done = await asyncio.gather(*(got[i] for i in waiting))
                for i, a in zip(waiting, done, strict=True):
                    got[i] = a
            return got  # type: ignore[return-value]

        if plan.config.mode == "precomputed":
            # The batch's slates first; the online sources only when it hands over.
            first = [s for s in plan.sources if s.config.kind == PRECOMPUTED]
            rest = [s for s in plan.sources if s.config.kind != PRECOMPUTED]
            answers = await run_all(first)
            if any(res is not None and res.candidates for _, res, _ in answers):
                answers += [(s, None, SourceOutcome(source=s.config.name, status="skipped")) for s in rest]
            else:
                answers += await run_all(rest)
        else:
            answers = await run_all(plan.sources)
        results: list[SourceResult] = []
        failed_required = False
        personalised_ok = personalised_n = 0
        for stage, res, outcome in answers:
            if outcome.status == "skipped":
                tr.outcomes.append(outcome)
                continue
            handover = res.diagnostics.get("handover") if res is not None else None
            if handover:  # a precomputed source without an answer for this user
                outcome = outcome.model_copy(update={"status": "handover", "error": str(handover)})
                tr.degraded.append(f"precomputed_handover:{handover}")
            tr.outcomes.append(outcome)
            personalised_n += stage.personalised
            if res is None:
                tr.degraded.append(f"source_{outcome.status}:{stage.config.name}")
                failed_required |= stage.config.required
            else:
                results.append(res)
                tr.versions.update(res.versions)
                personalised_ok += stage.personalised and not handover
        if failed_required or (personalised_n and not personalised_ok):
            tr.fall_back("sources_failed")
            t0 = time.perf_counter()
            try:
                popular = await _maybe_await(
                    plan.popular.retrieve(query, state, plan.config.ranker.max_candidates)
                )
            except Exception as exc:
                raise ServiceUnavailable(
                    "sources_failed", f"popular fallback failed: {exc}"
                ) from exc
            ms = (time.perf_counter() - t0) * 1000.0
            tr.outcomes.append(
                SourceOutcome(
                    source=f"fallback:{popular.source}",
                    status="ok",
                    candidates=len(popular.candidates),
                    latency_ms=ms,
                )
            )
            return [popular]
        return results

    async def _rank(
        self,
        rt: TenantStages,
        plan: SurfacePlan,
        query: Query,
        state: Any,
        eligible: CandidateBatch,
        tr: Trace,
        query_vectors: dict[str, Any] | None = None,
    ) -> ScoredBatch:
        if not eligible:
            return ScoredBatch(eligible, {}, [])
        if plan.ranker is None:
            tr.degraded.append(f"ranker_not_loaded:{plan.ranker_version or 'none'}")
        else:
            timeout = plan.config.ranker.timeout_ms / 1000.0
            try:
                async with asyncio.timeout(timeout):
                    result = await plan.ranker.score(query, state, eligible, plan.config.ranker.task_weights,
                                                     query_vectors=query_vectors)  # fmt: skip
                scored = ScoredBatch.of(result.scored)
                if scored.item_ids != eligible.item_ids:
                    raise RuntimeError(
                        "ranker broke its contract: output is not one per input in order"
                    )
                tr.versions["ranker"] = result.version
                return scored
            except TimeoutError:
                tr.degraded.append("ranker_timeout")
            except Exception as exc:
                tr.degraded.append(f"ranker_error:{type(exc).__name__}")
        tr.fall_back("ranker_unavailable")
        return ScoredBatch.of(rt.fallback_scorer.score(query, eligible))

    def _safe_fallback(
        self,
        rt: TenantStages,
        query: Query,
        state: Any,
        merged: list[MergedCandidate],
        tr: Trace,
        why: str,
    ) -> PipelineResult:
        tr.lap("rules")
        tr.fall_back("policy_unavailable")
        tr.degraded.append(f"policy_error:{why}"[:200])
        safe, version = rt.safe_fallback_list(query.surface, state, query.now, tr.degraded)
        if version != "config":  # the config's list has no version of its own (the config's)
            tr.versions["fallback_list"] = version
        items = [
            MergedCandidate(i, (Candidate(i, SAFE_FALLBACK_SOURCE, version, 1.0, r),))
            for r, i in enumerate(dict.fromkeys(safe))
        ]
        for rule in rt.safe_rules:
            # The safe list is owned and reviewed, so a check whose data is missing is skipped
            # (and recorded) rather than failing the last safe answer too.
            try:
                res = rule.apply(query, items, state)
            except PolicyUnavailable:
                tr.degraded.append(f"safe_fallback_unchecked:{rule.name}")
                continue
            items = list(res.kept)
            tr.removals.extend(res.removed)
        items = [c for c in items if c.item_id not in query.exclude_item_ids][: query.k]
        if not items:
            raise ServiceUnavailable(
                "policy_unavailable", "policy data unavailable and no safe fallback items"
            )
        slate = [
            SlateItem(
                item_id=c.item_id,
                rank=r,
                score=0.0,
                sources=(SAFE_FALLBACK_SOURCE,),
                reasons=("safe_fallback",),
            )
            for r, c in enumerate(items)
        ]
        tr.lap("slate")
        scored = [ScoredCandidate(c.item_id, c.provenance, {}, 0.0) for c in items]
        return self._result(query, [*merged, *items], scored, slate, {**rt.versions, **tr.versions}, tr)

    @staticmethod
    def _result(query, merged, scored, slate, versions, tr: Trace) -> PipelineResult:
        return PipelineResult(
            slate=slate, decision=decision_record(query, merged, scored, slate, versions, tr)
        )
