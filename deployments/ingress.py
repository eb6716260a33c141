"""HTTP ingress: authenticate → parse → run the tenant's pipeline → answer. Nothing else.

The pipelines (one per tenant, :mod:`deployments.tenants`), the event fan-out
(:mod:`deployments.broadcast`), the recent-decision memory (:mod:`deployments.recent`) and the
metrics (:mod:`deployments.metrics`) live in their own modules, testable without Ray. The
tenant comes only from the API key, checked before the body is read. The API: ``docs/api.md``.
"""

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import HTMLResponse
from ray import serve

from core.contracts import DecisionRecord, Query
from core.decision_log import new_request_id
from core.eventlog import EventLog
from core.experiments import NO_EXPERIMENT
from core.rate_limit import retry_after_header
from core.registry import Registry
from deployments import api_models as m
from deployments import metrics
from deployments.api_docs import remove_api_docs, serve_lean
from deployments.auth import BearerKeyAuthenticator
from deployments.broadcast import EventBroadcast
from deployments.decision_log import DecisionForwarder, LocalDecisionLog
from deployments.errors import ApiError, BodySizeLimit, install_error_handlers
from deployments.explain import CONTENT_SECURITY_POLICY, render_explain, render_not_found
from deployments.loaders import ServingContext, load_catalogues, settle_replica
from deployments.model_slots import RankerSlots, TwoTowerSlots
from deployments.quotas import AdmissionControl, AdmissionMiddleware
from deployments.recent import RecentDecisions
from deployments.settings import AppArgs
from deployments.tenants import LivePopularity, TenantPipelines, served_versions
from serving.errors import ServiceUnavailable, UnknownSurface

Auth = Annotated[str | None, Header(alias="Authorization")]
# FastAPI's own request span would start a trace of its own (it takes the parent from headers
# only); Serve's span for the request is the parent of the pipeline's (serving/tracing.py).
api = FastAPI(title="recsys", version="1", description="See docs/api.md.", telemetry={"tracing": False},
              responses={s: {"model": m.ErrorResponse} for s in (401, 403, 404, 413, 422, 429, 503)})  # fmt: skip
install_error_handlers(api)
_LIMITS = {"max_body_bytes": 1_000_000}
api.add_middleware(BodySizeLimit, max_bytes=lambda: _LIMITS["max_body_bytes"])
_ADMISSION: dict = {}  # "gate": (authenticator, AdmissionControl), set by the replica
api.add_middleware(AdmissionMiddleware, gate=lambda: _ADMISSION.get("gate"))  # runs first
_HTML = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store",
         "X-Content-Type-Options": "nosniff"}  # fmt: skip


def _ms(started: float) -> float:  # defined above the class: Serve pickles the class by value
    return (time.perf_counter() - started) * 1e3


def _body(model) -> dict:  # the request schema in OpenAPI, though the body is parsed by hand
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}}}}


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.4}, max_ongoing_requests=64)
@serve.ingress(api)
class Ingress:
    async def __init__(self, ctx: ServingContext, args: AppArgs, handles: dict):
        """``handles``: deployment name → handle, for every deployment in the graph."""
        _LIMITS["max_body_bytes"] = args.max_body_bytes
        self.args, self.config = args, ctx.platform()
        self.auth = BearerKeyAuthenticator(self.config)
        _ADMISSION["gate"] = (self.auth, AdmissionControl(
            self.config, max_in_flight=args.admission.max_in_flight,
            retry_after_s=args.admission.retry_after_s))  # fmt: skip
        if not args.api_docs:
            remove_api_docs(api)
        self.events = EventLog(ctx.events)
        self.registry = Registry(ctx.registry)
        self.handles = {k: h for k, h in handles.items() if h is not None}
        # One catalogue per tenant in this replica, shared by the rules, the sources and the
        # models loaded here: a request's candidates are looked up in it once (a batch keeps
        # its rows per catalogue object; two copies meant every lookup twice, and twice the memory).
        catalogues = load_catalogues(ctx, [t.id for t in self.config.tenants])
        # Models the placement puts in this replica: loaded and hot-swapped here.
        self.two_tower = self.ranker = None
        if args.placement.two_tower_in_ingress:
            self.two_tower = TwoTowerSlots(ctx, catalogues=catalogues)
            await self.two_tower.refresh_all()
        if args.placement.ranker == "ingress":  # its popularity feature: this replica's counter
            self.ranker = RankerSlots(ctx, lambda t: LivePopularity(lambda: self.tenants.pipelines[t].stages.popularity),
                                      catalogues=catalogues,
                                      towers=self.two_tower.loaded_models if self.two_tower else None)  # fmt: skip
        self.tenants = TenantPipelines(ctx, args, self.config, self.handles, self.two_tower,
                                       self.ranker, catalogues=catalogues)  # fmt: skip
        if self.ranker is not None:
            await self.ranker.refresh_all()
        self.fanout = EventBroadcast(self.handles, self._own if self.tenants.holds_state else None,
                                     args.events_push_timeout_s)  # fmt: skip
        # Decision records: written by this replica (placement.decision_log: ingress) or
        # shipped in batches to the DecisionLog deployment (deployments/decision_log.py).
        if args.placement.decision_log == "ingress":
            self.decisions = LocalDecisionLog(ctx.decisions, args.decision_queue_size)
        else:
            self.decisions = DecisionForwarder(self.handles["DecisionLog"], args.decision_queue_size,
                                               interval_s=args.decision_ship_interval_s)  # fmt: skip
        self.recent = RecentDecisions(args.decision_lru_size, int(args.decision_lru_mb * 2**20))
        # The hot routes without FastAPI's per-request work (deployments/api_docs.serve_lean):
        # the same methods, their OpenAPI unchanged.
        serve_lean(api, "/v1/recommend", "POST", self.recommend)
        serve_lean(api, "/v1/events", "POST", self.post_events)
        settle_replica()
        for slots in (self.two_tower, self.ranker, self.tenants):  # models; tenant configs
            if slots is not None:
                slots.ensure_polling(lambda: self.args.model_poll_interval_s)

    def __del__(self):
        # Serve calls __del__ on a graceful replica shutdown (scale-down, redeploy): the
        # records this replica writes itself are written before it goes.
        try:
            self.decisions.close(2.0)
        except Exception:
            pass

    def _own(self):
        return serve.get_deployment_handle("Ingress", serve.get_replica_context().app_name)

    @api.post("/v1/recommend", response_model=m.RecommendResponse, openapi_extra=_body(m.RecommendRequest))
    async def recommend(self, request: Request, authorization: Auth = None):
        started, tenant = time.perf_counter(), self.auth.authenticate(authorization, "serve")
        body = m.parse_request(m.RecommendRequest, await request.body())
        now = datetime.now(UTC)
        query = Query(request_id=new_request_id(now), tenant_id=tenant, user_id=body.user_id,
                      surface=body.surface, k=body.k, now=now, context=body.context,
                      exclude_item_ids=frozenset(body.exclude_item_ids))  # fmt: skip
        try:
            result = await self.tenants.pipelines[tenant].recommend(query)
        except UnknownSurface:
            raise ApiError(404, "unknown_surface", f"no surface {body.surface!r}", "surface") from None
        except ServiceUnavailable as exc:
            metrics.FALLBACKS.labels(tenant, f"{exc.reason}_503").inc()
            raise ApiError(503, exc.reason, "no safe recommendation is available right now") from None
        record = result.decision
        self.decisions.ensure_running()
        self.decisions.submit((tenant, record.request_id, record.at, self.recent.add(record)))
        metrics.observe_decision(record)
        exp = record.experiment if record.experiment.get("id") != NO_EXPERIMENT else None
        items = [{"item_id": i.item_id, "score": i.score, "rank": i.rank, "sources": list(i.sources),
                  "reasons": list(i.reasons)} for i in result.slate]  # fmt: skip
        answer = m.RecommendResponse(request_id=query.request_id, items=items, versions=record.versions,
                                     experiment=exp, fallback=record.fallback, degraded=record.degraded,
                                     latency_ms=round(_ms(started), 3), trace_id=record.trace_id)  # fmt: skip
        # Serialised here, once: returned as a model, FastAPI would validate it again against
        # the response model and encode it through jsonable_encoder (the schema stays in OpenAPI).
        return Response(answer.model_dump_json(), media_type="application/json")

    @api.post("/v1/events", response_model=m.EventsResponse, openapi_extra=_body(m.EventsRequest))
    async def post_events(self, request: Request, authorization: Auth = None):
        tenant = self.auth.authenticate(authorization, "serve")
        body = m.parse_request(m.EventsRequest, await request.body())
        rows = [{"tenant_id": tenant, **r} if "tenant_id" not in r else r for r in body.events]
        try:
            result = await asyncio.to_thread(
                self.events.append, rows, tenant=tenant, items=self.tenants.catalogues[tenant],
                surfaces=self.tenants.surfaces(tenant))  # fmt: skip
        except OSError:
            raise ApiError(503, "storage_unavailable", "events could not be stored; retry") from None
        if result.accepted_rows:  # exactly what was stored, applied to online state
            await self.fanout.push(tenant, result.accepted_rows)
        for outcome, ids in (("accepted", result.accepted), ("duplicate", result.duplicates),
                             ("conflict", result.conflicts), ("rejected", result.rejected)):  # fmt: skip
            if ids:
                metrics.EVENTS.labels(tenant, outcome).inc(len(ids))
        answer = m.EventsResponse(
            accepted=result.accepted, duplicates=result.duplicates, conflicts=result.conflicts,
            rejected=[m.RejectedEvent(index=r.index, event_id=r.event_id, field=r.field,
                                      reason=r.reason) for r in result.rejected])  # fmt: skip
        return Response(answer.model_dump_json(), media_type="application/json")

    async def _decision(self, tenant: str, request_id: str) -> bytes | DecisionRecord | None:
        data = self.recent.get(tenant, request_id)
        if data is not None or len(request_id) > 128:
            return data
        record, wait = await self.decisions.lookup(tenant, request_id)
        if wait:
            raise ApiError(429, "rate_limited", "too many lookups of unknown ids; retry later",
                           headers={"Retry-After": retry_after_header(wait)})  # fmt: skip
        return record

    @api.get("/v1/decisions/{request_id}", response_model=DecisionRecord)
    async def decision(self, request_id: str, authorization: Auth = None):
        found = await self._decision(self.auth.authenticate(authorization, "debug"), request_id)
        if found is None:  # another tenant's id looks exactly like an unknown one
            raise ApiError(404, "not_found", "no such decision", "request_id")
        return Response(found, media_type="application/json") if isinstance(found, bytes) else found

    @api.get("/v1/explain/{request_id}", response_class=HTMLResponse, include_in_schema=False)
    async def explain(self, request_id: str, authorization: Auth = None):
        tenant = self.auth.authenticate(authorization, "debug")
        found = await self._decision(tenant, request_id)
        if found is None:
            return HTMLResponse(render_not_found(), status_code=404, headers=_HTML)
        record = DecisionRecord.model_validate_json(found) if isinstance(found, bytes) else found
        recent = self.recent.by_user.recent(tenant, record.user_id)
        return HTMLResponse(render_explain(record, recent), headers=_HTML)

    @api.get("/v1/healthz", response_model=m.HealthResponse)
    async def healthz(self):
        return m.HealthResponse(status="ok", config=self.config.version)

    @api.get("/v1/versions", response_model=m.VersionsResponse)
    async def versions(self, authorization: Auth = None):
        tenant = self.auth.authenticate(authorization, "admin")
        local: dict[str, str] = {}
        for slots in (self.two_tower, self.ranker):
            local.update(slots.versions().get(tenant, {}) if slots is not None else {})
        found = await served_versions(self.handles, tenant, local)
        production = await asyncio.to_thread(self.registry.production_versions, tenant)
        served = await asyncio.to_thread(self.tenants.served, tenant)
        return m.VersionsResponse(tenant=tenant, config=self.config.version, artifacts=found,
                                  production={k: r.model_dump(mode="json") for k, r in production.items()},
                                  **served)  # fmt: skip

    @api.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(self, authorization: Auth = None):
        """Prometheus text of every replica of every deployment, for an ``admin`` key."""
        self.auth.authenticate(authorization, "admin")
        own = f"Ingress#{serve.get_replica_context().replica_id.unique_id}"
        text = await metrics.gather_text(own, self.handles)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- handle calls (inside the cluster only, never HTTP) ----

    async def metrics_text(self) -> str:
        return metrics.registry_text()

    async def observe(self, tenant: str, events: list[dict]) -> int:
        """Fold accepted events into this replica's online state (broadcast by ``post_events``)."""
        return self.tenants.observe(tenant, events)

    async def refresh_now(self) -> dict[str, bool]:
        """Check the aliases of the models this replica holds now: ``tenant → swapped``
        (any of them); ``{}`` when it holds none."""
        out: dict[str, bool] = {}
        for slots in (self.two_tower, self.ranker):
            for t, swapped in (await slots.refresh_all() if slots is not None else {}).items():
                out[t] = out.get(t, False) or swapped
        return out

    async def refresh_config_now(self) -> dict[str, bool]:
        """Check every tenant's ``tenant_config`` and ``rule_bundle`` aliases and kill switches
        now: ``tenant → swapped``."""
        return await self.tenants.refresh_configs()

    async def set_faults(self, faults: dict) -> None:
        """Test/game-day switches (:class:`serving.faults.FaultInjection`), read per call."""
        self.tenants.set_faults(faults)
