"""Fanning accepted events out to every replica that holds online state.

The events are already durable when this runs, so a replica that misses them catches up from
the event log when it restarts; a failed push is logged and counted, never the request's
failure. Bounded by ``timeout_s`` per deployment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from deployments import metrics

logger = logging.getLogger("ray.serve")

STATEFUL = ("UserState", "CandidateSources", "Ranker")
"""Deployments whose replicas fold live events (``observe``) when they are in the graph."""


class EventBroadcast:
    """``handles``: deployment name → handle (those in :data:`STATEFUL` are pushed to);
    ``own``: a callable giving this deployment's own handle when its replicas hold state too
    (the ingress with colocated user state or sources), else None."""

    def __init__(self, handles: Mapping[str, Any], own: Callable[[], Any] | None,
                 timeout_s: float):  # fmt: skip
        self.targets = {n: h for n, h in handles.items() if n in STATEFUL}
        self.own = own
        self.timeout_s = timeout_s

    async def push(self, tenant: str, events: list[dict]) -> list[str]:
        """Deliver ``events`` to every replica; returns the deployments that failed."""
        names = list(self.targets)
        calls = [self.targets[n].broadcast("observe", tenant, events) for n in names]
        if self.own is not None:
            names.append("Ingress")
            calls.append(self.own().broadcast("observe", tenant, events))
        answers = await asyncio.gather(
            *(c.results_async(timeout_s=self.timeout_s, return_exceptions=True) for c in calls),
            return_exceptions=True,
        )
        failed = []
        for name, answer in zip(names, answers, strict=True):
            items = answer if isinstance(answer, list) else [answer]
            if any(isinstance(a, BaseException) for a in items):
                logger.warning("events: pushing to %s failed: %s", name, answer)
                metrics.DEGRADATIONS.labels(tenant, f"event_push_failed:{name}").inc()
                failed.append(name)
        return failed
