"""Admission control: per-tenant quotas and early overload shedding, before any body is read.

Two questions, asked of every ``POST /v1/recommend`` and ``POST /v1/events`` as soon as its
headers arrive (an ASGI middleware: before routing, body reading or parsing):

1. **Is the tenant within its quota on this replica?** ``tenants[].quotas.<endpoint>`` in
   ``configs/platform.yaml`` (:class:`core.config.EndpointQuota`): a token bucket
   (``rate_per_s``, ``burst``) and a cap on its requests in flight (``max_in_flight``). Over
   either: **429** ``quota_exceeded``, ``Retry-After`` (when the bucket has a token again; one
   second for the in-flight cap), a JSON body. The other tenants never wait on this tenant's
   refused requests, which cost dictionary look-ups and a kept response body
   (``benchmarks/bench_refusal.py``).
2. **Is this replica overloaded?** More than ``args.admission.max_in_flight`` admitted
   requests being answered at once: **503** ``overloaded`` with ``Retry-After`` at once,
   instead of queueing work the replica cannot finish in time. Serve's own queue in front of
   the replica (``max_queued_requests`` in ``configs/serve.yaml``) answers 503 with
   ``Retry-After`` the same way when it is full (``backpressure_config``).

Every answer of these routes is counted here, once, in ``recsys_requests_total`` and the
latency histogram, with its status — refusals, 401/403/413/422 and a 500 from an exception
included (tenant ``-`` without a valid key). A request with no valid key passes through
untouched: the endpoint answers it 401 (authentication stays in one place,
:mod:`deployments.auth`). State is per replica and in memory (see
:class:`core.config.EndpointQuota`); the clock is injectable for tests.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.config import EndpointQuota, PlatformConfig
from core.rate_limit import TenantRateLimiter, retry_after_header
from deployments import metrics
from deployments.auth import BearerKeyAuthenticator
from deployments.errors import ApiError, error_body

ENDPOINTS = {("POST", "/v1/recommend"): "recommend", ("POST", "/v1/events"): "events"}
"""The quota'd routes: (method, path) → endpoint name (the ``quotas`` key and metric label)."""
UNAUTHENTICATED = "-"
"""The ``tenant`` label of a request without a valid key (no tenant id can be ``-``)."""


@dataclass
class _Quota:
    limiter: TenantRateLimiter | None
    max_in_flight: int | None


class AdmissionControl:
    """Decides whether a tenant's request may start; :meth:`admit` then :meth:`release`.

    ``max_in_flight``: admitted requests this replica answers at once before it sheds with
    503 (None: no cap). ``retry_after_s``: the ``Retry-After`` of a 503 and of an in-flight
    429. Not thread-safe on its own: called from the replica's event loop only.
    """

    def __init__(self, config: PlatformConfig, *, max_in_flight: int | None = None,
                 retry_after_s: float = 1.0, clock: Callable[[], float] | None = None):  # fmt: skip
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self._quotas: dict[tuple[str, str], _Quota] = {}
        for tenant in config.tenants:
            for endpoint in ("recommend", "events"):
                q: EndpointQuota = getattr(tenant.quotas, endpoint)
                limiter = None
                if q.rate_per_s is not None:
                    burst = q.burst or max(1, math.ceil(q.rate_per_s))
                    limiter = TenantRateLimiter(q.rate_per_s, burst, clock=clock)
                self._quotas[(tenant.id, endpoint)] = _Quota(limiter, q.max_in_flight)
        self.in_flight = 0
        self._tenant_in_flight: dict[tuple[str, str], int] = {}

    def admit(self, tenant: str, endpoint: str) -> None:
        """Count the request in, or raise :class:`ApiError` 429 (tenant over its quota) /
        503 (replica overloaded); nothing is counted in when it raises."""
        key = (tenant, endpoint)
        quota = self._quotas.get(key)
        if quota is not None:
            if quota.max_in_flight is not None and (
                self._tenant_in_flight.get(key, 0) >= quota.max_in_flight
            ):
                raise self._refusal(429, "quota_exceeded", self.retry_after_s,
                                    f"more than {quota.max_in_flight} {endpoint} requests of this "
                                    "tenant in flight; retry later")  # fmt: skip
            if quota.limiter is not None:
                wait = quota.limiter.peek(tenant)
                if wait:
                    raise self._refusal(429, "quota_exceeded", wait,
                                        f"over this tenant's {endpoint} rate of "
                                        f"{quota.limiter.rate_per_s:g}/s; retry later")  # fmt: skip
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            raise self._refusal(503, "overloaded", self.retry_after_s,
                                "the service is overloaded; retry later")  # fmt: skip
        if quota is not None and quota.limiter is not None:
            quota.limiter.charge(tenant)
        self.in_flight += 1
        self._tenant_in_flight[key] = self._tenant_in_flight.get(key, 0) + 1

    def release(self, tenant: str, endpoint: str) -> None:
        """The admitted request of ``tenant`` on ``endpoint`` has been answered."""
        key = (tenant, endpoint)
        self.in_flight -= 1
        left = self._tenant_in_flight[key] - 1
        if left:
            self._tenant_in_flight[key] = left
        else:
            del self._tenant_in_flight[key]

    @staticmethod
    def _refusal(status: int, code: str, wait_s: float, message: str) -> ApiError:
        return ApiError(status, code, message, headers={"Retry-After": retry_after_header(wait_s)})


class AdmissionMiddleware:
    """ASGI middleware applying an :class:`AdmissionControl` to the quota'd routes, and counting
    every answer of them.

    ``gate`` returns ``(authenticator, admission)`` or None while the replica is starting (then
    everything passes). A refusal is answered here, in the error shape of
    :mod:`deployments.errors`, and counted in the request metrics.
    """

    def __init__(
        self, app, gate: Callable[[], tuple[BearerKeyAuthenticator, AdmissionControl] | None]
    ):
        self.app = app
        self._gate = gate
        # A refusal must cost the replica as little as possible (it is answered while the
        # tenant floods): the tenant of a header already seen, and each refusal's body, are
        # kept rather than recomputed (a key hash, a JSON encoding, a response object).
        self._tenants: dict[bytes, str] = {}
        self._cached_for: BearerKeyAuthenticator | None = None
        self._bodies: dict[tuple[int, str, str], bytes] = {}

    async def __call__(self, scope, receive, send):
        gate = self._gate() if scope["type"] == "http" else None
        endpoint = ENDPOINTS.get((scope.get("method"), scope.get("path"))) if gate else None
        if endpoint is None:
            return await self.app(scope, receive, send)
        auth, admission = gate
        started = time.perf_counter()
        if auth is not self._cached_for:  # new keys (a new authenticator): forget the old ones
            self._tenants, self._cached_for = {}, auth
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        tenant = self._tenants.get(header) if header is not None else None
        if tenant is None:
            try:
                tenant = auth.tenant_for(header.decode("latin-1") if header is not None else None)
                if len(self._tenants) < 1024:  # valid keys only: bounded by the config
                    self._tenants[header] = tenant
            except ApiError:  # no valid key: the endpoint answers 401 itself (counted below)
                tenant = None
        if tenant is not None:
            try:
                admission.admit(tenant, endpoint)
            except ApiError as refused:
                await self._refuse(refused, send)
                metrics.observe_request(tenant, endpoint, refused.status, _ms(started))
                return None
        status = 500  # unless the app answers: an exception that escapes it is a 500

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if tenant is not None:
                admission.release(tenant, endpoint)
            metrics.observe_request(tenant or UNAUTHENTICATED, endpoint, status, _ms(started))

    async def _refuse(self, refused: ApiError, send) -> None:
        """The refusal in :mod:`deployments.errors`'s shape, as two ASGI messages; the body
        is encoded once per distinct refusal. The request body is never read."""
        key = (refused.status, refused.code, refused.message)
        body = self._bodies.get(key)
        if body is None:
            body = json.dumps(error_body(refused.code, refused.message, None),
                              separators=(",", ":")).encode()  # fmt: skip
            if len(self._bodies) < 256:
                self._bodies[key] = body
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (refused.headers or {}).items()]
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1e3

