"""Tenant authentication: the tenant comes only from ``Authorization: Bearer <key>``.

The presented key is hashed (``core.config.hash_api_key``) and looked up among the configured
hashes; keys themselves are never stored or logged. Nothing in a request body or path can
choose the tenant.

Scopes: a key carries some of ``serve`` (``POST /v1/recommend``, ``POST /v1/events``),
``debug`` (``GET /v1/decisions/{id}``) and ``admin`` (``GET /v1/versions``, ``/metrics``).
A tenant's ``api_key_scopes`` maps a key hash to its scopes; a key hash it does not list (and
every key of a config without the field) has all scopes, as before scopes existed.

:meth:`BearerKeyAuthenticator.authenticate` is meant to run before the request body is read
or parsed, so an unauthenticated caller learns nothing about the request models (401), and an
authenticated one without the scope gets 403 without its body being parsed either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, get_args

from core.config import PlatformConfig, hash_api_key
from deployments.errors import ApiError

MAX_KEY_LENGTH = 512

Scope = Literal["serve", "debug", "admin"]
SCOPES: frozenset[str] = frozenset(get_args(Scope))
ENDPOINT_SCOPES: Mapping[str, Scope] = {
    "recommend": "serve",
    "events": "serve",
    "decisions": "debug",
    "versions": "admin",
    "metrics": "admin",
}
"""The scope each endpoint requires (``authenticate(header, ENDPOINT_SCOPES["events"])``)."""


def _scopes_of(tenant, key_hash: str) -> frozenset[str]:
    configured: Mapping[str, Iterable[str]] = getattr(tenant, "api_key_scopes", None) or {}
    scopes = configured.get(key_hash)
    return SCOPES if scopes is None else frozenset(scopes) & SCOPES


class BearerKeyAuthenticator:
    """Maps an ``Authorization`` header to a tenant id (and the key's scopes), or raises a
    401/403 :class:`ApiError`."""

    def __init__(self, config: PlatformConfig):
        self._keys: dict[str, tuple[str, frozenset[str]]] = {
            h: (t.id, _scopes_of(t, h)) for t in config.tenants for h in t.api_key_hashes
        }

    def authenticate(self, authorization: str | None, scope: Scope) -> str:
        """The tenant of the key in ``authorization`` if the key has ``scope``.

        401 ``unauthorized`` (with ``WWW-Authenticate: Bearer`` from the error handler) for
        a missing, malformed or unknown key; 403 ``forbidden`` for a valid key without
        ``scope``. ``ValueError`` for a scope that does not exist (a bug in the caller)."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; expected one of {sorted(SCOPES)}")
        tenant, scopes = self._lookup(authorization)
        if scope not in scopes:
            raise ApiError(403, "forbidden", f"this API key does not have the {scope!r} scope")
        return tenant

    def tenant_for(self, authorization: str | None) -> str:
        """The tenant of a valid key, whatever its scopes (prefer :meth:`authenticate`)."""
        return self._lookup(authorization)[0]

    def scopes_for(self, authorization: str | None) -> frozenset[str]:
        return self._lookup(authorization)[1]

    def _lookup(self, authorization: str | None) -> tuple[str, frozenset[str]]:
        if not authorization:
            raise ApiError(401, "unauthorized", "missing Authorization: Bearer <api key> header")
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "expected Authorization: Bearer <api key>")
        if len(key) > MAX_KEY_LENGTH:
            raise ApiError(401, "unauthorized", "unknown API key")
        try:
            found = self._keys.get(hash_api_key(key))
        except UnicodeEncodeError:  # a lone surrogate (not from HTTP headers, which are bytes)
            found = None
        if found is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        return found
