"""User-state deployment: online per-user state shared by every ingress replica.

Thin wrapper over :class:`serving.user_state.OnlineUserStateStore`, one per tenant, bootstrapped
from the event log. Writes arrive by *broadcast* (``observe`` on every replica, awaited by
``POST /v1/events`` before it answers), reads go to any one replica, so the deployment scales
out for reads and an accepted event is in every replica's state before the client hears
"accepted". A replica started later bootstraps from the event log, where accepted events are
already durable.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from deployments import metrics
from deployments.loaders import (
    ServingContext,
    load_catalogue,
    load_events,
    load_users,
    settle_replica,
)
from serving.user_state import OnlineUserStateStore, ServingUserState

logger = logging.getLogger("ray.serve")


@serve.deployment(name="UserState", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
class UserStateDeployment:
    def __init__(self, ctx: ServingContext):
        self.stores: dict[str, OnlineUserStateStore] = {}
        for tenant in ctx.platform().tenants:
            catalogue = load_catalogue(ctx, tenant.id)
            if catalogue is None:
                continue  # get() raises: the pipeline records user_state_missing
            self.stores[tenant.id] = OnlineUserStateStore.bootstrap(
                catalogue, tenant.id, load_events(ctx, tenant.id), load_users(ctx, tenant.id)
            )
            logger.info("user state %s: %d users", tenant.id, len(self.stores[tenant.id]))
        settle_replica()

    async def get(self, tenant: str, user_id: str) -> ServingUserState:
        return self.stores[tenant].get(user_id)

    async def observe(self, tenant: str, events: list[dict]) -> int:
        store = self.stores.get(tenant)
        if store is None:
            return 0
        return await asyncio.to_thread(lambda: sum(store.observe(e) for e in events))

    async def metrics_text(self) -> str:
        return metrics.registry_text()
