"""Auth, error shapes and body limits of the HTTP API, on a bare FastAPI app (no Ray)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import pytest
from fastapi import FastAPI, Header, Request, Response

from core.config import load_platform_config
from deployments.api_docs import serve_lean
from deployments.api_models import EventsRequest, RecommendRequest, RecommendResponse, parse_request
from deployments.auth import BearerKeyAuthenticator
from deployments.errors import ApiError, BodySizeLimit, field_path, install_error_handlers


@pytest.fixture(scope="module")
def auth() -> BearerKeyAuthenticator:
    return BearerKeyAuthenticator(load_platform_config("configs/platform.yaml"))


def test_demo_keys_map_to_their_tenants(auth):
    assert auth.tenant_for("Bearer acme-demo-key") == "acme"
    assert auth.tenant_for("bearer globex-demo-key") == "globex"


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic acme-demo-key", "Bearer nope", "acme-demo-key",
               "Bearer " + "x" * 10_000],
)  # fmt: skip
def test_missing_or_unknown_keys_are_401(auth, header):
    with pytest.raises(ApiError) as err:
        auth.tenant_for(header)
    assert err.value.status == 401 and err.value.code == "unauthorized"


def test_field_path_drops_the_request_part():
    assert field_path(("body", "events", 0, "ts")) == "events.0.ts"
    assert field_path(("body",)) is None
    assert field_path(("query", "k")) == "k"


class _Response:
    def __init__(self, status: int, body: bytes):
        self.status_code, self.text = status, body.decode()

    def json(self):
        return json.loads(self.text)


class _AsgiClient:
    """Drives an ASGI app in-process (the venv has no httpx for Starlette's TestClient)."""

    def __init__(self, app):
        self.app = app

    def request(self, method, path, body=b"", headers=None, chunks=None) -> _Response:
        headers = dict(headers or {})
        if chunks is None:
            headers.setdefault("content-length", str(len(body)))
            chunks = [body]
        parts = list(chunks)
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "scheme": "http", "server": ("test", 80), "client": ("t", 1),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}  # fmt: skip
        sent: list[dict] = []

        async def receive():
            if parts:
                chunk = parts.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        try:
            asyncio.run(self.app(scope, receive, send))
        except Exception:
            # Starlette re-raises after its 500 handler has answered (for server logs).
            if not any(m["type"] == "http.response.start" for m in sent):
                raise
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return _Response(status, body)

    def post(self, path, json=None, content=None, headers=None):
        headers = dict(headers or {})
        headers.setdefault("content-type", "application/json")
        if json is not None:
            content = globals()["json"].dumps(json).encode()
        if content is not None and not isinstance(content, bytes):
            return self.request("POST", path, headers=headers, chunks=content)
        return self.request("POST", path, content or b"", headers)

    def get(self, path):
        return self.request("GET", path)


def _app(max_bytes: int = 2048) -> _AsgiClient:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)

    @app.post("/recommend")
    async def recommend(body: RecommendRequest):
        return {"ok": body.k}

    @app.post("/events")
    async def events(body: EventsRequest):
        return {"n": len(body.events)}

    @app.get("/forbidden")
    async def forbidden():
        raise ApiError(403, "forbidden", "no")

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    return _AsgiClient(app)


def test_validation_errors_name_the_field():
    client = _app()
    r = client.post("/recommend", json={"user_id": "u", "surface": "home", "k": 0})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["field"] == "k"
    r = client.post("/recommend", json={"user_id": "u", "surface": "home", "kk": 3})
    assert r.json()["error"] == {"code": "validation_error", "message": "unknown field", "field": "kk"}
    r = client.post("/recommend", json={"surface": "home"})
    assert r.json()["error"]["field"] == "user_id"
    r = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_oversized_bodies_are_413_with_or_without_content_length():
    client = _app(max_bytes=2048)
    big = {"events": [{"event_id": str(i), "pad": "x" * 100} for i in range(50)]}
    r = client.post("/events", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/events", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_other_errors_keep_the_shape_and_hide_internals():
    client = _app()
    r = client.get("/forbidden")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/boom")
    assert r.status_code == 500 and "secret" not in r.text
    assert set(r.json()["error"]) == {"code", "message", "field"}


_Auth = Annotated[str | None, Header(alias="Authorization")]


def test_a_lean_route_answers_as_its_documented_route_and_keeps_its_schema():
    """``serve_lean`` (the ingress's hot routes without FastAPI's per-request work): every
    answer — 200, 401 with ``WWW-Authenticate``, 403, 422 naming the field, 413, 405 — is the
    one the FastAPI route gives, and ``/openapi.json`` is unchanged."""
    keys = BearerKeyAuthenticator(load_platform_config("configs/platform.yaml"))
    calls = []

    def build(lean: bool) -> FastAPI:
        app = FastAPI()
        install_error_handlers(app)
        app.add_middleware(BodySizeLimit, max_bytes=256)

        @app.post("/v1/recommend", response_model=RecommendResponse)
        async def recommend(request: Request, authorization: _Auth = None):
            tenant = keys.authenticate(authorization, "serve")
            body = parse_request(RecommendRequest, await request.body())
            calls.append(request.scope["endpoint"].__qualname__)
            return Response(f'{{"tenant":"{tenant}","k":{body.k}}}', media_type="application/json")

        if lean:
            serve_lean(app, "/v1/recommend", "POST", recommend)
            serve_lean(app, "/v1/recommend", "POST", recommend)  # a second time replaces the first
        return app

    def answer(app, method, headers, body=b""):
        sent = []
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "path": "/v1/recommend", "raw_path": b"/v1/recommend", "query_string": b"",
                 "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("t", 1),
                 "headers": [(k, v) for k, v in headers] + [(b"content-length", str(len(body)).encode())]}  # fmt: skip

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], sorted(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])

    documented, lean = build(False), build(True)
    assert sum(isinstance(r, type(lean.router.routes[0])) for r in lean.router.routes) == 1
    key = [(b"authorization", b"Bearer acme-demo-key")]
    cases = [
        ("POST", key, b'{"user_id": "u1", "surface": "home", "k": 3}', 200),
        ("POST", [], b'{"user_id": "u1", "surface": "home"}', 401),
        ("POST", [(b"authorization", b"Bearer nope")], b"{}", 401),
        ("POST", key, b'{"user_id": "u1", "surface": "home", "k": "3"}', 422),
        ("POST", key, b'{"user_id": "u1", "surface": "home", "k": 3, "k": 4}', 422),
        ("POST", key, b'{"user_id": "' + b"u" * 300 + b'", "surface": "home"}', 413),
        ("GET", key, b"", 405),
    ]
    for method, headers, body, status in cases:
        expected = answer(documented, method, headers, body)
        assert expected[0] == status, (body, expected)
        assert answer(lean, method, headers, body) == expected, body
    # The 200s: the documented app's through FastAPI, the lean app's through the lean route.
    assert [c.split(".")[-1] for c in calls] == ["recommend", "endpoint"]
    assert lean.openapi() == documented.openapi()
