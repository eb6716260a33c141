"""Per-tenant token buckets: one tenant's flood is refused without touching the others.

Used by the decision log to bound lookups of unknown request ids (each costs a storage read)
and usable by the ingress for any per-tenant quota. In-process: with N replicas each holding
one, a tenant gets up to N times the rate; put the limiter where the cost is (the decision-log
deployment) to make it global.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TenantRateLimiter:
    """``rate_per_s`` tokens per second per tenant, at most ``burst`` saved up.

    :meth:`acquire` spends one token or says how long to wait; :meth:`peek` and :meth:`charge`
    split that in two, for costs known only afterwards (a lookup that turned out to miss).
    ``clock`` returns seconds (monotonic); injected by tests. Thread-safe.
    """

    def __init__(self, rate_per_s: float, burst: float, *, clock: Callable[[], float] | None = None):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self.refused: dict[str, int] = {}

    def _tokens(self, tenant: str, now: float) -> float:
        tokens, at = self._buckets.get(tenant, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate_per_s)

    def peek(self, tenant: str) -> float:
        """0.0 if ``tenant`` has a token now, else the seconds until it has one (counted as a
        refusal in :attr:`refused`)."""
        with self._lock:
            tokens = self._tokens(tenant, self.clock())
            if tokens >= 1:
                return 0.0
            self.refused[tenant] = self.refused.get(tenant, 0) + 1
            return (1 - tokens) / self.rate_per_s

    def charge(self, tenant: str, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens of ``tenant`` (the balance may go below zero: it then waits
        longer)."""
        with self._lock:
            now = self.clock()
            self._buckets[tenant] = (self._tokens(tenant, now) - cost, now)

    def acquire(self, tenant: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds to wait (nothing spent)."""
        with self._lock:
            now = self.clock()
            tokens = self._tokens(tenant, now)
            if tokens >= 1:
                self._buckets[tenant] = (tokens - 1, now)
                return 0.0
            self.refused[tenant] = self.refused.get(tenant, 0) + 1
            return (1 - tokens) / self.rate_per_s


def retry_after_header(seconds: float) -> str:
    """A ``Retry-After`` value (whole seconds, at least 1) for a wait of ``seconds``."""
    return str(max(1, math.ceil(seconds)))
