"""Tenant authentication: the tenant comes only from ``Authorization: Bearer <key>``.

The presented key is hashed (``core.config.hash_api_key``) and looked up among the configured
hashes; keys themselves are never stored or logged. Nothing in a request body or path can
choose the tenant.
"""

from __future__ import annotations

from core.config import PlatformConfig, hash_api_key
from deployments.errors import ApiError

MAX_KEY_LENGTH = 512


class BearerKeyAuthenticator:
    """Maps an ``Authorization`` header to a tenant id, or raises a 401 :class:`ApiError`."""

    def __init__(self, config: PlatformConfig):
        self._tenant_by_hash = {h: t.id for t in config.tenants for h in t.api_key_hashes}

    def tenant_for(self, authorization: str | None) -> str:
        if not authorization:
            raise ApiError(401, "unauthorized", "missing Authorization: Bearer <api key> header")
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "expected Authorization: Bearer <api key>")
        if len(key) > MAX_KEY_LENGTH:
            raise ApiError(401, "unauthorized", "unknown API key")
        tenant = self._tenant_by_hash.get(hash_api_key(key))
        if tenant is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        return tenant
