"""Scoped API keys and strict request parsing (issue 15): scopes give 401/403 before any body
is parsed; ``k: "10"``, ``k: true``, NUL bytes, duplicate JSON keys and NaN are 422s naming
the field."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.config import hash_api_key, load_platform_config
from deployments.api_models import (
    EventsRequest,
    EventsResponse,
    RecommendRequest,
    parse_json_body,
    parse_request,
)
from deployments.auth import ENDPOINT_SCOPES, BearerKeyAuthenticator
from deployments.errors import ApiError
from tests.unit.test_api_auth_errors import _app

GOOD = b'{"user_id": "u1", "surface": "home", "k": 5}'


def _config(**scopes_by_key):
    hashes = {key: hash_api_key(key) for key in ("serve-key", "debug-key", "admin-key", "old-key")}
    tenant = SimpleNamespace(
        id="acme", api_key_hashes=list(hashes.values()),
        api_key_scopes={hashes[k]: v for k, v in scopes_by_key.items()},
    )  # fmt: skip
    return SimpleNamespace(tenants=[tenant])


@pytest.fixture
def auth() -> BearerKeyAuthenticator:
    return BearerKeyAuthenticator(
        _config(**{"serve-key": ["serve"], "debug-key": ["serve", "debug"], "admin-key": ["admin"]})
    )


def test_keys_carry_scopes_and_a_missing_scope_is_403(auth):
    allowed = {
        "serve-key": {"recommend", "events"},
        "debug-key": {"recommend", "events", "decisions"},
        "admin-key": {"versions", "metrics"},
        "old-key": set(ENDPOINT_SCOPES),  # not listed in api_key_scopes: every scope
    }
    for key, endpoints in allowed.items():
        for endpoint, scope in ENDPOINT_SCOPES.items():
            if endpoint in endpoints:
                assert auth.authenticate(f"Bearer {key}", scope) == "acme"
            else:
                with pytest.raises(ApiError) as err:
                    auth.authenticate(f"Bearer {key}", scope)
                assert (err.value.status, err.value.code) == (403, "forbidden"), (key, endpoint)
    with pytest.raises(ApiError) as err:
        auth.authenticate("Bearer nope", "serve")
    assert err.value.status == 401
    with pytest.raises(ApiError) as err:
        auth.authenticate(None, "admin")
    assert err.value.status == 401
    with pytest.raises(ValueError):
        auth.authenticate("Bearer serve-key", "everything")


def test_configs_without_scopes_keep_every_scope():
    auth = BearerKeyAuthenticator(load_platform_config("configs/platform.yaml"))
    for scope in ("serve", "debug", "admin"):
        assert auth.authenticate("Bearer acme-demo-key", scope) == "acme"
    assert auth.tenant_for("Bearer globex-demo-key") == "globex"


@pytest.mark.parametrize(
    "body,field",
    [
        (b'{"user_id": "u1", "surface": "home", "k": "10"}', "k"),
        (b'{"user_id": "u1", "surface": "home", "k": true}', "k"),
        (b'{"user_id": "u1", "surface": "home", "k": 10.0}', "k"),
        (b'{"user_id": "u\\u0000", "surface": "home"}', "user_id"),
        (b'{"user_id": "u\\ud800", "surface": "home"}', "user_id"),
        (b'{"user_id": "u1", "surface": "home", "exclude_item_ids": ["a", "b\\u0000"]}',
         "exclude_item_ids.1"),
        (b'{"user_id": 7, "surface": "home"}', "user_id"),
        (b'{"user_id": "u1", "surface": "home", "k": 5, "k": 50}', "k"),
        (b'{"user_id": "u1", "surface": "home", "context": {"a": 1, "a": 2}}', "a"),
        (b'{"user_id": "u1", "surface": "home", "k": NaN}', None),
        (b'{"user_id": "u1", "surface": "home"', None),
        (b'\xff\xfe', None),
    ],
)  # fmt: skip
def test_loose_bodies_are_422_naming_the_field(body, field):
    with pytest.raises(ApiError) as err:
        parse_request(RecommendRequest, body)
    assert (err.value.status, err.value.code, err.value.field) == (422, "validation_error", field)
    assert err.value.message


def test_good_bodies_parse():
    assert parse_request(RecommendRequest, GOOD).k == 5
    events = parse_request(EventsRequest, b'{"events": [{"event_id": "e1"}]}')
    assert events.events == [{"event_id": "e1"}]
    assert parse_json_body('{"a": [{"b": 1}, {"b": 2}]}') == {"a": [{"b": 1}, {"b": 2}]}
    assert EventsResponse(accepted=[], duplicates=[], rejected=[]).conflicts == []


def test_fastapi_validation_is_strict_too():
    client = _app()
    response = client.post("/recommend", json={"user_id": "u1", "surface": "home", "k": "10"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "k"
    response = client.post("/recommend", json={"user_id": "u\x00", "surface": "home"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "user_id"
    assert client.post("/recommend", json={"user_id": "u", "surface": "s", "k": 3}).json() == {
        "ok": 3}  # fmt: skip


def test_api_errors_carry_retry_after_and_401_asks_for_bearer():
    import asyncio

    from core.rate_limit import retry_after_header
    from deployments.errors import _api_error

    limited = ApiError(429, "rate_limited", "too many unknown decision ids",
                       headers={"Retry-After": retry_after_header(0.3)})  # fmt: skip
    response = asyncio.run(_api_error(None, limited))
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    unauthorized = asyncio.run(_api_error(None, ApiError(401, "unauthorized", "no key")))
    assert unauthorized.headers["www-authenticate"] == "Bearer"
