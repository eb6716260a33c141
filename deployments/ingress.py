"""HTTP ingress: authentication, the public API, and the request pipeline over remote stages.

The ingress builds one :class:`serving.pipeline.RecommendationPipeline` per tenant with
:func:`serving.assembly.build_tenant_runtime`, passing deployment-handle adapters
(:mod:`deployments.adapters`) for the stages that run elsewhere: user state, the two-tower
source, the other sources, the ranker. Merge, eligibility rules and the slate policy run here:
they are cheap, pure functions of the candidates, and a hop would cost more than they do.

The tenant comes only from the API key. Every handler is thin; the API is in ``docs/api.md``.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Header, Response
from ray import serve

from core.contracts import DecisionRecord, Query
from core.eventlog import EventLog
from core.experiments import NO_EXPERIMENT
from core.schema import RowError, normalize_event
from deployments import adapters, metrics
from deployments.api_models import (
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    HealthResponse,
    RecommendRequest,
    RecommendResponse,
    RejectedEvent,
    VersionsResponse,
)
from deployments.auth import BearerKeyAuthenticator
from deployments.decision_log import DecisionForwarder
from deployments.errors import ApiError, BodySizeLimit, install_error_handlers
from deployments.loaders import (
    ServingContext,
    load_catalogue,
    load_events,
    load_users,
    settle_replica,
)
from deployments.settings import AppArgs, FaultInjection
from serving.pipeline import RecommendationPipeline, ServiceUnavailable, UnknownSurface

logger = logging.getLogger("ray.serve")
_ERRORS = {s: {"model": ErrorResponse} for s in (401, 404, 413, 422, 503)}
Auth = Annotated[str | None, Header(alias="Authorization")]

api = FastAPI(
    title="recsys",
    version="1",
    description="Recommendations, events and decisions for product backends. See docs/api.md.",
    responses=_ERRORS,
)
install_error_handlers(api)
_LIMITS = {"max_body_bytes": 1_000_000}
api.add_middleware(BodySizeLimit, max_bytes=lambda: _LIMITS["max_body_bytes"])


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.4}, max_ongoing_requests=64)
@serve.ingress(api)
class Ingress:
    def __init__(self, ctx: ServingContext, args: AppArgs, user_state, retriever, sources,
                 ranker, decision_log):  # fmt: skip
        """``user_state`` / ``sources`` are handles when ``args.placement`` puts them in their
        own deployments, else None (they are built here, in this replica)."""
        _LIMITS["max_body_bytes"] = args.max_body_bytes
        self.ctx, self.args = ctx, args
        self.config = ctx.platform()
        self.faults = args.faults
        self.auth = BearerKeyAuthenticator(self.config)
        self.events = EventLog(ctx.events)
        self.handles = {"UserState": user_state, "TwoTowerRetriever": retriever,
                        "CandidateSources": sources, "Ranker": ranker, "DecisionLog": decision_log}  # fmt: skip
        self.handles = {k: h for k, h in self.handles.items() if h is not None}
        self.catalogues = {t.id: load_catalogue(ctx, t.id) for t in self.config.tenants}
        self.pipelines = self._build_pipelines()
        self._policy = {t: p.runtime.rule_chain for t, p in self.pipelines.items()}
        self.forwarder = DecisionForwarder(decision_log, max_pending=args.decision_queue_size,
                                           interval_s=args.decision_ship_interval_s)  # fmt: skip
        # Recent decisions as their JSON bytes: not tracked by the GC (a record is hundreds of
        # nested pydantic objects), and the same bytes are shipped to the decision log.
        self._recent: dict[tuple[str, str], bytes] = {}
        self._forward_task = None
        self._own = None
        if self.faults.policy_unavailable:
            self._apply_policy_fault()
        settle_replica()

    @property
    def _holds_state(self) -> bool:
        """Whether this replica holds online state that accepted events must reach."""
        p = self.args.placement
        return p.user_state == "ingress" or p.sources == "ingress"

    def _build_pipelines(self) -> dict[str, RecommendationPipeline]:
        from retrieval.sources import SOURCE_KINDS
        from serving.assembly import build_tenant_runtime

        h, placement = self.handles, self.args.placement
        factories = {
            "two_tower": lambda cfg, c: adapters.RemoteTwoTowerSource(
                h["TwoTowerRetriever"], cfg, c
            )
        }
        for kind in ("item_to_item", "trending", "editorial", "fresh"):
            if placement.sources == "deployment":
                factories[kind] = lambda cfg, c: adapters.RemoteSource(
                    h["CandidateSources"], cfg, c
                )
            else:
                factories[kind] = lambda cfg, c, k=kind: adapters.FaultableSource(
                    SOURCE_KINDS[k].from_config(cfg, c), lambda: self.faults)  # fmt: skip
        local_state = placement.user_state == "ingress"
        pipelines = {}
        for tenant in self.config.tenants:
            t = tenant.id
            pinned = {v.overrides.ranker_version for e in self.config.experiments if e.tenant == t
                      for v in e.variants if v.overrides.ranker_version}  # fmt: skip
            rankers = {self.ctx.alias: adapters.RemoteRanker(h["Ranker"])}
            rankers.update({v: adapters.RemoteRanker(h["Ranker"], v) for v in pinned})
            # Online state starts from the event log: user state, trending, co-occurrence and
            # the popularity the ranker fallback uses. Later events arrive by broadcast.
            events = load_events(self.ctx, t) if self._holds_state else None
            runtime = build_tenant_runtime(
                self.config, t, catalogue=self.catalogues[t], events_table=events,
                users_table=load_users(self.ctx, t) if local_state else None,
                rankers=rankers, default_ranker_version=self.ctx.alias,
                source_factories=factories,
                user_state_reader=None if local_state
                else (lambda user, t=t: h["UserState"].get.remote(t, user)),
            )  # fmt: skip
            runtime.versions = adapters.RequestVersions(
                {"config": self.config.version, "config_fingerprint": self.config.fingerprint()}
            )
            pipelines[t] = RecommendationPipeline(runtime)
            if events is not None:
                logger.info("ingress %s: online state from %d events", t, events.num_rows)
        return pipelines

    def _apply_policy_fault(self) -> None:
        """Serve every tenant as if its policy bundle were unreadable (or restore it): a copy
        of the runtime sharing all its state, swapped in like a new version."""
        for t, pipeline in self.pipelines.items():
            chain = None if self.faults.policy_unavailable else self._policy[t]
            pipeline.swap(replace(pipeline.runtime, rule_chain=chain))

    def _remember(self, record: DecisionRecord) -> None:
        if self._forward_task is None or self._forward_task.done():
            self._forward_task = asyncio.get_running_loop().create_task(self.forwarder.run())
        data = record.model_dump_json().encode()
        self.forwarder.submit((record.tenant_id, record.request_id, record.at, data))
        key = (record.tenant_id, record.request_id)
        self._recent[key] = data
        if len(self._recent) > self.args.decision_lru_size:
            self._recent.pop(next(iter(self._recent)))  # dicts keep insertion order: oldest

    def _count(self, tenant: str, endpoint: str, status: int, started: float) -> None:
        metrics.REQUESTS.labels(tenant, endpoint, str(status)).inc()
        metrics.REQUEST_LATENCY.labels(endpoint).observe((time.perf_counter() - started) * 1e3)

    # ------------------------------------------------------------------------------ API

    @api.post("/v1/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest, authorization: Auth = None):
        started = time.perf_counter()
        tenant = self.auth.tenant_for(authorization)
        query = Query(
            request_id=uuid.uuid4().hex, tenant_id=tenant, user_id=body.user_id,
            surface=body.surface, k=body.k, now=datetime.now(UTC), context=body.context,
            exclude_item_ids=frozenset(body.exclude_item_ids),
        )  # fmt: skip
        adapters.start_request()
        try:
            result = await self.pipelines[tenant].recommend(query)
        except UnknownSurface:
            self._count(tenant, "recommend", 404, started)
            raise ApiError(
                404, "unknown_surface", f"no surface {body.surface!r}", "surface"
            ) from None
        except ServiceUnavailable as exc:
            self._count(tenant, "recommend", 503, started)
            metrics.FALLBACKS.labels(tenant, f"{exc.reason}_503").inc()
            raise ApiError(
                503, exc.reason, "no safe recommendation is available right now"
            ) from None
        record = result.decision
        self._remember(record)
        metrics.observe_decision(record)
        self._count(tenant, "recommend", 200, started)
        exp = record.experiment if record.experiment.get("id") != NO_EXPERIMENT else None
        return RecommendResponse(
            request_id=query.request_id,
            items=[
                {
                    "item_id": i.item_id,
                    "score": i.score,
                    "rank": i.rank,
                    "sources": list(i.sources),
                    "reasons": list(i.reasons),
                }
                for i in result.slate
            ],  # fmt: skip
            versions=record.versions,
            experiment=exp,
            fallback=record.fallback,
            latency_ms=round((time.perf_counter() - started) * 1e3, 3),
        )

    @api.post("/v1/events", response_model=EventsResponse)
    async def post_events(self, body: EventsRequest, authorization: Auth = None):
        started = time.perf_counter()
        tenant = self.auth.tenant_for(authorization)
        rows = [{"tenant_id": tenant, **r} if "tenant_id" not in r else r for r in body.events]
        result = await asyncio.to_thread(self.events.append, rows, tenant=tenant)
        accepted = set(result.accepted)
        fresh = []
        for row in rows:
            if row.get("event_id") in accepted:
                accepted.discard(row["event_id"])
                try:
                    fresh.append(normalize_event(row))
                except RowError:  # cannot happen for an accepted row; never fail the answer
                    continue
        if fresh:
            await self._push(tenant, fresh)
        for outcome, n in (("accepted", len(result.accepted)), ("duplicate", len(result.duplicates)),
                           ("rejected", len(result.rejected))):  # fmt: skip
            if n:
                metrics.EVENTS.labels(tenant, outcome).inc(n)
        self._count(tenant, "events", 200, started)
        return EventsResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[
                RejectedEvent(index=r.index, event_id=r.event_id, field=r.field, reason=r.reason)
                for r in result.rejected
            ],  # fmt: skip
        )

    async def _push(self, tenant: str, events: list[dict]) -> None:
        """Broadcast accepted events to every replica holding online state (user state,
        trending, co-occurrence seeds, ranker popularity) — this deployment's own replicas too
        when state is colocated here; bounded by ``events_push_timeout_s``. The events are
        already durable, so a replica that misses them catches up when it restarts."""
        names = [n for n in ("UserState", "CandidateSources", "Ranker") if n in self.handles]
        calls = [self.handles[n].broadcast("observe", tenant, events) for n in names]
        if self._holds_state:
            names.append("Ingress")
            calls.append(self._self_handle().broadcast("observe", tenant, events))
        answers = await asyncio.gather(
            *(c.results_async(timeout_s=self.args.events_push_timeout_s, return_exceptions=True)
              for c in calls), return_exceptions=True,
        )  # fmt: skip
        for name, answer in zip(names, answers, strict=True):
            items = answer if isinstance(answer, list) else [answer]
            if any(isinstance(a, BaseException) for a in items):
                logger.warning("events: pushing to %s failed: %s", name, answer)
                metrics.DEGRADATIONS.labels(f"event_push_failed:{name}").inc()

    @api.get("/v1/decisions/{request_id}", response_model=DecisionRecord)
    async def decision(self, request_id: str, authorization: Auth = None):
        tenant = self.auth.tenant_for(authorization)
        data = self._recent.get((tenant, request_id))
        if data is not None:  # already the record's JSON: serve it as is
            return Response(data, media_type="application/json")
        record = None
        if len(request_id) <= 128:
            record = await self.handles["DecisionLog"].get.remote(tenant, request_id)
        if record is None:  # another tenant's id looks exactly like an unknown one
            raise ApiError(404, "not_found", "no such decision", "request_id")
        return record

    @api.get("/v1/healthz", response_model=HealthResponse)
    async def healthz(self):
        return HealthResponse(status="ok", config=self.config.version)

    @api.get("/v1/versions", response_model=VersionsResponse)
    async def versions(self, authorization: Auth = None):
        tenant = self.auth.tenant_for(authorization)
        found: dict[str, str] = {}
        for name in ("TwoTowerRetriever", "Ranker"):
            try:
                answer = await asyncio.wait_for(self.handles[name].versions.remote(), 5.0)
                found.update(answer.get(tenant, {}))
            except Exception as exc:  # report what is known; a missing kind says "not loaded"
                logger.warning("versions: %s did not answer: %s", name, exc)
        return VersionsResponse(tenant=tenant, config=self.config.version, artifacts=found)

    @api.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(self):
        """Prometheus text: every replica of every deployment, labelled by ``replica``."""
        ctx = serve.get_replica_context()
        texts = [(f"Ingress#{ctx.replica_id.unique_id}", metrics.registry_text())]
        for name, handle in self.handles.items():
            try:
                answers = await handle.broadcast("metrics_text").results_async(
                    timeout_s=5.0, return_exceptions=True
                )
            except Exception as exc:
                logger.warning("metrics: %s did not answer: %s", name, exc)
                continue
            texts += [(f"{name}#{i}", a) for i, a in enumerate(answers) if isinstance(a, str)]
        body = metrics.merge_replica_texts(texts)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def metrics_text(self) -> str:
        return metrics.registry_text()

    def _self_handle(self):
        if self._own is None:
            self._own = serve.get_deployment_handle("Ingress", serve.get_replica_context().app_name)
        return self._own

    async def observe(self, tenant: str, events: list[dict]) -> int:
        """Fold accepted events into this replica's online state (broadcast by ``_push``)."""
        pipeline = self.pipelines.get(tenant)
        if pipeline is None:
            return 0
        for event in events:
            pipeline.runtime.observe(event)
        return len(events)

    async def set_faults(self, faults: dict) -> None:
        """Test/game-day switches (handle call only, never HTTP). Source delays are read per
        call; the policy switch swaps in a runtime copy without its rule chain."""
        self.faults = FaultInjection.model_validate(faults)
        self._apply_policy_fault()
