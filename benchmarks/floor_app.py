"""The *framework floor* of the serving benchmark: a no-op Serve app of the recommendation
graph's shape (HTTP proxy → FastAPI ingress parsing the same request body → two sequential
handle calls), so what Serve itself costs per request is measured next to the real graph.

No ``from __future__ import annotations`` here: Serve's class-based FastAPI views need the
route annotations as real objects.
"""

from fastapi import FastAPI
from ray import serve

from deployments.api_models import RecommendRequest

api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Leaf:
    async def call(self, user_id: str) -> list[float]:
        return [0.0] * 10


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Front:
    def __init__(self, first, second):
        self.first, self.second = first, second

    @api.post("/v1/recommend")
    async def recommend(self, body: RecommendRequest) -> dict:
        await self.first.call.remote(body.user_id)
        return {"items": await self.second.call.remote(body.user_id)}
