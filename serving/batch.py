"""Many users' requests of one tenant at once, stage by stage: the batch scoring job's path.

:class:`RecommendationPipeline` answers one request; run hundreds of them as concurrent
coroutines and the model stages can share forward passes (:mod:`serving.batching`), but every
request still pays its own event-loop round trips, timeouts, thread hops and decision record,
and a micro-batch of hundreds must finish inside each request's timeout. :func:`recommend_many`
runs the same stages over a list of queries one *stage* at a time instead:

* assignment, plan and user state per query, as the pipeline does;
* each source once per plan: a source registered ``personalised=False`` does not read the
  user (trending, fresh, editorial), so queries that differ only by user share one answer; a
  source with ``retrieve_many`` (the batched two-tower: one query-tower pass, one index
  search) answers all of them at once; any other source is asked per query;
* merge, the rule chain and the slate over every query of a plan at once, as array passes
  (:func:`serving.batch_stages.merge_many`, :func:`ranking.rules.batched.kept_many`,
  :func:`ranking.slate.batched.slates_many`), each the per-request stage's answer exactly; a
  rule or slate step with no batched form (a custom one) runs per query through the very
  stage objects the pipeline calls;
* the ranker once per plan over every query's candidates (``score_many``: the features of
  every query's candidates in one pass, one forward pass);
* no decision record: what an offline slate keeps (items, scores, reasons, sources, versions,
  fallback, degradations) is in :class:`BatchAnswer`.

Only the pipeline's *happy path* runs here. A query for which any stage does something else —
a source fails or hands over, the policy cannot be read, the ranker is missing or fails, user
state cannot be read, a precomputed surface — is answered by
:meth:`RecommendationPipeline.recommend` itself, so every degradation keeps its one
implementation. The slates are the pipeline's (``tests/unit/test_batch_recommend.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.candidates import CandidateBatch
from core.components import SOURCES
from core.contracts import PolicyUnavailable, Query, SlateItem, SourceResult
from core.experiments import assign
from ranking.rules import batched as batched_rules
from ranking.slate.batched import batchable, slates_many
from serving.batch_stages import merge_many
from serving.pipeline import PRECOMPUTED, PipelineResult, RecommendationPipeline
from serving.stages import SourceStage, SurfacePlan, TenantStages


@dataclass
class BatchAnswer:
    """One query's slate and what an offline consumer keeps of its decision record."""

    query: Query
    slate: list[SlateItem]
    versions: dict[str, str]
    fallback: str | None = None
    degraded: list[str] = field(default_factory=list)
    state: Any = None
    """The user state the slate was built with (the job re-checks the slate against it)."""
    via_pipeline: bool = False
    """True when the query left the batch path and :meth:`RecommendationPipeline.recommend`
    answered it (a degradation)."""


class _Leave(Exception):
    """This query leaves the batch path: the pipeline answers it."""


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _shared(stage: SourceStage) -> bool:
    """A source that does not read the user gives every query of a batch the same answer
    (the batch's queries differ only by user)."""
    return not SOURCES.get(stage.config.kind).meta.get("personalised", False)


def _batch_key(q: Query) -> tuple:
    """What, besides the user, a shared source's answer may depend on."""
    return (q.surface, q.now, repr(sorted((q.context or {}).items(), key=repr)), q.exclude_item_ids)


async def _source_answers(stage: SourceStage, queries: list[Query], states: list[Any]) -> list[Any]:
    """One :class:`SourceResult` (or exception) per query from ``stage``, truncated to its quota."""
    source, quota = stage.source, stage.config.quota
    many = getattr(source, "retrieve_many", None)
    out: list[Any]
    if many is not None:
        try:
            out = list(await _maybe_await(many(queries, states, quota)))
        except Exception as exc:
            out = [exc] * len(queries)
    elif _shared(stage):
        cache: dict[tuple, Any] = {}
        out = []
        for q, s in zip(queries, states, strict=True):
            key = _batch_key(q)
            if key not in cache:
                try:
                    cache[key] = await _maybe_await(source.retrieve(q, s, quota))
                except Exception as exc:
                    cache[key] = exc
            out.append(cache[key])
    else:
        out = []
        for q, s in zip(queries, states, strict=True):
            try:
                out.append(await _maybe_await(source.retrieve(q, s, quota)))
            except Exception as exc:
                out.append(exc)
    cut: dict[int, Any] = {}  # a shared answer is cut once: its users keep sharing it

    def within(r: Any) -> Any:
        if isinstance(r, BaseException) or len(r.candidates) <= quota:
            return r
        if id(r) not in cut:
            cut[id(r)] = replace(r, candidates=tuple(r.candidates)[:quota])
        return cut[id(r)]

    return [within(r) for r in out]


def _item_ids(batch: Any) -> list[str]:
    """The item ids of a candidate or scored batch (its column, no row built), or of rows."""
    ids = getattr(batch, "item_ids", None)
    return list(ids) if ids is not None else [c.item_id for c in batch]


async def _score_many(ranker: Any, calls: list[tuple]) -> list[Any]:
    """The ranker over every call ``(query, state, candidates, task_weights)``: one forward
    pass where the ranker can (``score_many``), else one ``score`` per call."""
    many = getattr(ranker, "score_many", None)
    if many is not None:
        return list(await _maybe_await(many(calls)))
    out = []
    for call in calls:
        try:
            out.append(await ranker.score(*call))
        except Exception as exc:
            out.append(exc)
    return out


async def _plan_batch(rt: TenantStages, plan: SurfacePlan, queries: list[Query], states: list[Any],
                      answers: dict[int, BatchAnswer], idx: list[int]) -> None:  # fmt: skip
    """The happy path for the queries ``idx`` (all on ``plan``); fills ``answers`` for those
    that stay on it."""
    if plan.config.mode == PRECOMPUTED or rt.rules is None or plan.ranker is None:
        return
    qs = [queries[i] for i in idx]
    st = [states[i] for i in idx]
    per_source = [await _source_answers(stage, qs, st) for stage in plan.sources]
    ok: list[tuple[int, Query, Any, dict[str, str]]] = []
    answered: list[list[SourceResult]] = []
    for j, (q, s) in enumerate(zip(qs, st, strict=True)):
        results: list[SourceResult] = [a[j] for a in per_source]
        if any(isinstance(r, BaseException) or r.diagnostics.get("handover") for r in results):
            continue  # a source failed or handed over: the pipeline's degradations
        versions: dict[str, str] = {}
        for r in results:
            versions.update(r.versions)
        ok.append((idx[j], q, s, versions))
        answered.append(results)
    # merge and the rules over every user at once (serving.batch_stages, ranking.rules.batched)
    chain_batched = batched_rules.batchable(rt.rules)
    cat = batched_rules.catalogue_of(rt.rules, rt.tenant.id) if chain_batched else None
    merged_all = merge_many(answered, plan.pinned, cat)
    kept_all = (batched_rules.kept_many(rt.rules, [o[1] for o in ok], merged_all, [o[2] for o in ok])
                if chain_batched else [None] * len(ok))  # fmt: skip
    live: list[tuple[int, Query, Any, dict[str, str], CandidateBatch, CandidateBatch]] = []
    for (i, q, s, versions), merged, kept in zip(ok, merged_all, kept_all, strict=True):
        if kept is None:  # a custom rule, or one that cannot judge this user here: the chain
            try:
                kept = CandidateBatch.of(rt.rules.apply(q, merged, s).kept)
            except PolicyUnavailable:
                continue
        eligible = kept.head(plan.config.ranker.max_candidates)
        live.append((i, q, s, versions, merged, eligible))
    weights = plan.config.ranker.task_weights
    to_rank = [(q, s, eligible, weights) for _, q, s, _, _, eligible in live if eligible]
    ranked = iter(await _score_many(plan.ranker, to_rank) if to_rank else [])
    done: list[tuple[int, Query, Any, dict[str, str], Any]] = []
    for i, q, s, versions, _, eligible in live:
        scored: Any = []
        if eligible:
            res = next(ranked)
            if isinstance(res, BaseException) or _item_ids(res.scored) != _item_ids(eligible):
                continue
            versions["ranker"] = res.version
            scored = res.scored
        versions.setdefault("ranker", rt.fallback_scorer.version)
        done.append((i, q, s, versions, scored))
    if batchable(plan.slate):  # the built-in slate steps: over every user at once
        slates = slates_many(plan.slate, [d[1] for d in done], [d[4] for d in done], [d[2] for d in done])
    else:  # a custom step: the policy per user
        slates = [None] * len(done)
    for (i, q, s, versions, scored), items in zip(done, slates, strict=True):
        if items is None:
            items = plan.slate(q, scored, s).items
        answers[i] = BatchAnswer(q, items, {**rt.versions, **versions}, None, list(rt.degraded), s)


async def recommend_many(pipeline: RecommendationPipeline, queries: Sequence[Query]) -> list[BatchAnswer]:
    """Every query's slate, in order (module docstring). ``queries`` are one tenant's; a query
    the pipeline refuses (another tenant, an unknown surface) raises, as ``recommend`` does."""
    rt = pipeline.stages
    qs: list[Query] = []
    for q in queries:
        if q.tenant_id != rt.tenant.id or q.surface not in rt.tenant.surfaces:
            await pipeline.recommend(q)  # raises the pipeline's own error
        assignment = q.experiment or assign(rt.experiments, rt.tenant.id, q.surface, q.user_id)
        qs.append(replace(q, experiment=assignment))
    states: list[Any] = []
    for q in qs:
        try:
            states.append(await _maybe_await(rt.user_state(q.user_id)))
        except Exception:
            states.append(_Leave)
    groups: dict[int, tuple[SurfacePlan, list[int]]] = {}
    for i, q in enumerate(qs):
        if states[i] is not _Leave:
            plan = rt.plan(q.surface, q.experiment)
            groups.setdefault(id(plan), (plan, []))[1].append(i)
    answers: dict[int, BatchAnswer] = {}
    for plan, idx in groups.values():
        await _plan_batch(rt, plan, qs, states, answers, idx)
    out = []
    for i, q in enumerate(queries):
        if i in answers:
            out.append(answers[i])
            continue
        res: PipelineResult = await pipeline.recommend(q)
        d = res.decision
        state = states[i] if states[i] is not _Leave else None
        out.append(BatchAnswer(qs[i], res.slate, dict(d.versions), d.fallback, list(d.degraded), state, True))
    return out
