"""Per-tenant quotas and overload shedding (issue 15): a tenant over its rate or its in-flight
cap is answered 429 with ``Retry-After`` and a JSON body, a replica over its in-flight cap 503,
the other tenants are admitted as before, and every refusal is counted (no Ray)."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from fastapi import FastAPI, Request
from pydantic import ValidationError

from core.config import PlatformConfig, hash_api_key, load_platform_config
from deployments import metrics
from deployments.auth import BearerKeyAuthenticator
from deployments.errors import ApiError, install_error_handlers
from deployments.quotas import AdmissionControl, AdmissionMiddleware
from deployments.settings import AdmissionArgs


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _config(**quotas) -> PlatformConfig:
    """configs/platform.yaml with ``quotas`` (tenant id → its ``quotas`` block) set."""
    raw = yaml.safe_load(open("configs/platform.yaml"))
    for tenant in raw["tenants"]:
        tenant.pop("quotas", None)
        if tenant["id"] in quotas:
            tenant["quotas"] = quotas[tenant["id"]]
    return PlatformConfig.model_validate(raw)


def _refused(admission, tenant, endpoint="recommend") -> ApiError:
    with pytest.raises(ApiError) as err:
        admission.admit(tenant, endpoint)
    return err.value


def test_the_rate_quota_refuses_past_the_burst_says_when_and_refills():
    clock = Clock()
    admission = AdmissionControl(
        _config(acme={"recommend": {"rate_per_s": 2, "burst": 3}}), clock=clock
    )
    for _ in range(3):
        admission.admit("acme", "recommend")
        admission.release("acme", "recommend")
    err = _refused(admission, "acme")
    assert (err.status, err.code, err.headers["Retry-After"]) == (429, "quota_exceeded", "1")
    # the other tenant and the other endpoint of this tenant are not limited
    for tenant, endpoint in (("globex", "recommend"), ("acme", "events")):
        for _ in range(10):
            admission.admit(tenant, endpoint)
            admission.release(tenant, endpoint)
    clock.now += 0.5  # one token back at 2/s
    admission.admit("acme", "recommend")
    admission.release("acme", "recommend")
    assert _refused(admission, "acme").status == 429


def test_a_long_wait_is_announced_in_whole_seconds():
    clock = Clock()
    admission = AdmissionControl(
        _config(acme={"events": {"rate_per_s": 0.1, "burst": 1}}), clock=clock
    )
    admission.admit("acme", "events")
    admission.release("acme", "events")
    assert _refused(admission, "acme", "events").headers["Retry-After"] == "10"
    clock.now += 9.5
    assert _refused(admission, "acme", "events").headers["Retry-After"] == "1"


def test_the_in_flight_quota_is_per_tenant_and_freed_on_release():
    admission = AdmissionControl(_config(acme={"recommend": {"max_in_flight": 2}}))
    admission.admit("acme", "recommend")
    admission.admit("acme", "recommend")
    err = _refused(admission, "acme")
    assert (err.status, err.code) == (429, "quota_exceeded") and "2" in err.message
    for _ in range(5):  # globex has no quota: not held back by acme's requests
        admission.admit("globex", "recommend")
    admission.release("acme", "recommend")
    admission.admit("acme", "recommend")
    assert admission.in_flight == 7


def test_an_overloaded_replica_sheds_with_503_and_recovers():
    admission = AdmissionControl(_config(), max_in_flight=3, retry_after_s=2)
    for tenant in ("acme", "globex", "acme"):
        admission.admit(tenant, "recommend")
    err = _refused(admission, "globex")
    assert (err.status, err.code, err.headers["Retry-After"]) == (503, "overloaded", "2")
    admission.release("globex", "recommend")
    admission.admit("globex", "events")


def test_a_refused_request_spends_nothing():
    """A request shed for overload does not spend its tenant's tokens, and a refused one does
    not hold an in-flight slot."""
    clock = Clock()
    admission = AdmissionControl(
        _config(acme={"recommend": {"rate_per_s": 1, "burst": 1}}), max_in_flight=1, clock=clock
    )
    admission.admit("globex", "recommend")
    assert _refused(admission, "acme").status == 503
    admission.release("globex", "recommend")
    admission.admit("acme", "recommend")  # its one token was still there
    assert admission.in_flight == 1


def test_quota_config_is_strict_and_the_shipped_config_loads():
    with pytest.raises(ValidationError, match="burst needs rate_per_s"):
        _config(acme={"recommend": {"burst": 5}})
    with pytest.raises(ValidationError, match="greater than 0"):
        _config(acme={"recommend": {"rate_per_s": 0}})
    with pytest.raises(ValidationError, match="extra"):
        _config(acme={"recommend": {"rate": 5}})


@pytest.mark.parametrize("path", ["configs/serve.yaml", "configs/serve.gpu.yaml"])
def test_shipped_limits_refuse_in_our_code_and_no_tenant_can_fill_a_replica(path):
    """Each shipped Serve config sheds in the ingress (a JSON 503) before Serve's own slot
    limit, has Serve's queue bounded with a Retry-After, and each tenant's in-flight quota in
    platform.yaml is below the replica's cap, so one tenant alone cannot fill a replica (all
    three per Ingress replica, so they hold for any replica count)."""
    (app,) = yaml.safe_load(open(path))["applications"]
    (ingress,) = [d for d in app["deployments"] if d["name"] == "Ingress"]
    cap = AdmissionArgs.model_validate(app["args"]["admission"]).max_in_flight
    assert cap is not None and cap < ingress["max_ongoing_requests"]
    assert ingress["max_queued_requests"] > 0
    assert ingress["backpressure_config"]["retry_after_s"] > 0
    for tenant in load_platform_config("configs/platform.yaml").tenants:
        for quota in (tenant.quotas.recommend, tenant.quotas.events):
            assert quota.max_in_flight is not None and quota.max_in_flight < cap, tenant.id


def test_api_key_scopes_are_configurable_and_must_name_a_known_key():
    raw = yaml.safe_load(open("configs/platform.yaml"))
    acme = raw["tenants"][0]
    acme["api_key_scopes"] = {acme["api_key_hashes"][0]: ["serve"]}
    auth = BearerKeyAuthenticator(PlatformConfig.model_validate(raw))
    assert auth.scopes_for("Bearer acme-demo-key") == {"serve"}
    acme["api_key_scopes"] = {hash_api_key("not-a-key-of-acme"): ["admin"]}
    with pytest.raises(ValidationError, match="api_key_scopes names hashes"):
        PlatformConfig.model_validate(raw)


# ---- the middleware, over a bare FastAPI app driven in-process -------------------------------


def _served(admission: AdmissionControl, release: asyncio.Event):
    app = FastAPI()
    install_error_handlers(app)
    config = _config()
    auth = BearerKeyAuthenticator(config)
    app.add_middleware(AdmissionMiddleware, gate=lambda: (auth, admission))

    @app.post("/v1/recommend")
    async def recommend():
        await release.wait()
        return {"ok": True}

    @app.get("/v1/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


async def _call(app, method, path, key=None) -> tuple[int, dict, dict]:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "scheme": "http", "server": ("test", 80), "client": ("t", 1), "headers": headers}  # fmt: skip
    sent: list[dict] = []
    done = False

    async def receive():
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body)


def _count(tenant: str, status: int, endpoint: str = "recommend") -> float:
    for family in metrics.REGISTRY.collect():
        for s in family.samples:
            if (s.name == "recsys_requests_total" and s.labels.get("tenant") == tenant
                    and s.labels.get("status") == str(status)
                    and s.labels.get("endpoint") == endpoint):  # fmt: skip
                return s.value
    return 0.0


def test_the_middleware_answers_429_json_with_retry_after_and_counts_it():
    async def scenario():
        release = asyncio.Event()
        admission = AdmissionControl(_config(acme={"recommend": {"max_in_flight": 1}}))
        app = _served(admission, release)
        held = asyncio.create_task(_call(app, "POST", "/v1/recommend", "acme-demo-key"))
        while admission.in_flight == 0:
            await asyncio.sleep(0)
        before = _count("acme", 429)
        refused = await _call(app, "POST", "/v1/recommend", "acme-demo-key")
        other = asyncio.create_task(_call(app, "POST", "/v1/recommend", "globex-demo-key"))
        unknown = asyncio.create_task(_call(app, "POST", "/v1/recommend", "nope"))
        health = await _call(app, "GET", "/v1/healthz")
        release.set()
        return refused, await held, await other, await unknown, health, before, admission

    refused, held, other, unknown, health, before, admission = asyncio.run(scenario())
    status, headers, body = refused
    assert status == 429 and headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == "quota_exceeded"
    assert _count("acme", 429) == before + 1
    assert held[0] == 200 and other[0] == 200 and health[0] == 200
    # no valid key: passed through, the route runs (its own auth answers 401 in the ingress)
    assert unknown[0] == 200
    assert admission.in_flight == 0


def test_every_answer_of_the_quotad_routes_is_counted_once_errors_included():
    """401 (tenant ``-``), 422, 500 from an exception, 200: each counted once with its status,
    by the middleware alone (the handlers count nothing)."""
    from deployments.api_models import RecommendRequest, parse_request

    app = FastAPI()
    install_error_handlers(app)
    config = _config()
    auth = BearerKeyAuthenticator(config)
    admission = AdmissionControl(config)
    app.add_middleware(AdmissionMiddleware, gate=lambda: (auth, admission))

    @app.post("/v1/recommend")
    async def recommend(request: Request):
        auth.authenticate(request.headers.get("authorization"), "serve")
        parse_request(RecommendRequest, await request.body())
        return {"ok": True}

    @app.post("/v1/events")
    async def events():
        raise RuntimeError("a bug")

    async def call(path, key, body):
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("t", 1),
                 "headers": headers}  # fmt: skip
        sent, parts = [], [body]

        async def receive():
            if parts:
                return {"type": "http.request", "body": parts.pop(), "more_body": False}
            await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)

        try:
            await app(scope, receive, send)
        except RuntimeError:
            pass  # Starlette re-raises after its 500 answer
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    good = b'{"user_id": "u1", "surface": "home"}'
    cases = [("/v1/recommend", "globex-demo-key", good, "globex", 200),
             ("/v1/recommend", "globex-demo-key", b'{"k": "1"}', "globex", 422),
             ("/v1/recommend", None, good, "-", 401),
             ("/v1/events", "globex-demo-key", b"{}", "globex", 500)]  # fmt: skip
    for path, key, body, tenant, status in cases:
        endpoint = path.rsplit("/", 1)[1]
        before = _count(tenant, status, endpoint)
        assert asyncio.run(call(path, key, body)) == status
        assert _count(tenant, status, endpoint) == before + 1, (path, status)
    assert admission.in_flight == 0


def test_api_docs_can_be_taken_off_and_other_routes_stay():
    from deployments.api_docs import remove_api_docs

    app = FastAPI()

    @app.get("/v1/healthz")
    async def healthz():
        return {"status": "ok"}

    async def status(path):
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "scheme": "http", "server": ("t", 80), "client": ("t", 1), "headers": []}  # fmt: skip
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    assert asyncio.run(status("/openapi.json")) == 200 and asyncio.run(status("/docs")) == 200
    assert remove_api_docs(app) == 4
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert asyncio.run(status(path)) == 404, path
    assert asyncio.run(status("/v1/healthz")) == 200


def test_a_replaced_authenticator_is_not_answered_from_the_old_keys():
    """The middleware remembers which tenant a header names; a new authenticator (new keys)
    starts afresh, so a key that is gone is not let through as its old tenant."""
    admission = AdmissionControl(_config(acme={"recommend": {"rate_per_s": 0.001, "burst": 1}}))
    config = _config()
    gate = {"auth": BearerKeyAuthenticator(config)}
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(AdmissionMiddleware, gate=lambda: (gate["auth"], admission))

    @app.post("/v1/recommend")
    async def recommend():
        return {"ok": True}

    async def scenario():
        first = await _call(app, "POST", "/v1/recommend", "acme-demo-key")
        refused = await _call(app, "POST", "/v1/recommend", "acme-demo-key")
        raw = yaml.safe_load(open("configs/platform.yaml"))
        raw["tenants"][0]["api_key_hashes"] = [hash_api_key("acme-new-key")]  # acme's key rotated
        gate["auth"] = BearerKeyAuthenticator(PlatformConfig.model_validate(raw))
        after = await _call(app, "POST", "/v1/recommend", "acme-demo-key")
        return first, refused, after

    first, refused, after = asyncio.run(scenario())
    assert first[0] == 200 and refused[0] == 429
    assert after[0] == 200  # no longer acme's: passed to the route (which answers 401 in the ingress)
