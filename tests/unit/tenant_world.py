"""A small world for tenant-config tests, without Ray: the tiny synthetic data, toy models
published and promoted through the launch review in a temp registry (both tenants), a
platform config pointing at both, and a decision log of real requests served by the
in-process pipeline (what the config review replays)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from core.catalogue import Catalogue
from core.config import PlatformConfig
from core.contracts import Candidate, MergedCandidate, Query
from core.decision_log import DecisionLogWriter, new_request_id
from core.registry import Registry
from core.tenant_config import BOOTSTRAP
from serving.assembly import TenantData, TenantModels
from serving.pipeline import RecommendationPipeline
from serving.served_config import build_served_stages
from tests.integration.serving_artifacts import publish_ranker, publish_two_tower

ROOT = Path(__file__).resolve().parents[2]
TENANTS = ("acme", "globex")


def write_world(tiny_data: Path, root: Path) -> tuple[Path, Registry, dict[str, Catalogue]]:
    """Publish the models and write ``root/platform.yaml``; returns it, the registry and the
    catalogues. Set ``RECSYS_CONFIG`` / ``RECSYS_REGISTRY`` before :func:`log_requests`."""
    registry = Registry(str(root / "registry"))
    catalogues = {t: Catalogue.load(str(tiny_data), t) for t in TENANTS}
    for catalogue in catalogues.values():
        tt, _ = publish_two_tower(registry, catalogue)
        publish_ranker(registry, catalogue, two_tower=tt)
    return write_platform_yaml(tiny_data, root), registry, catalogues


def write_platform_yaml(tiny_data: Path, root: Path) -> Path:
    """``configs/platform.yaml`` with its storage at the tiny data and ``root``'s registry and
    decision log, written to ``root/platform.yaml`` (returned)."""
    config = yaml.safe_load((ROOT / "configs/platform.yaml").read_text())
    config["storage"] = {"data": str(tiny_data), "events": str(tiny_data / "events"),
                         "registry": str(root / "registry"), "decisions": str(root / "decisions")}  # fmt: skip
    (root / "platform.yaml").write_text(yaml.safe_dump(config))
    return root / "platform.yaml"


def pipeline(platform: PlatformConfig, registry: Registry, catalogue: Catalogue, tenant: str = "acme",
             document=None, version: str = BOOTSTRAP, switches=None) -> RecommendationPipeline:  # fmt: skip
    from serving.fallback_list import load_fallback_list

    models = TenantModels(fallback_list=load_fallback_list(registry, tenant), extra={"registry": registry})
    data = TenantData(catalogue, None, None)
    return RecommendationPipeline(build_served_stages(platform, tenant, data, models, document=document,
                                                      version=version, switches=switches))  # fmt: skip


def log_requests(platform: PlatformConfig, registry: Registry, catalogues: dict[str, Catalogue],
                 decisions: Path, n: int = 24) -> None:  # fmt: skip
    """Serve ``n`` requests per tenant (acme: home and item_page) into the decision log."""
    writer = DecisionLogWriter(str(decisions))

    async def serve() -> None:
        for tenant, catalogue in catalogues.items():
            pipe = pipeline(platform, registry, catalogue, tenant)
            surfaces = list(platform.tenant(tenant).surfaces)
            surfaces = [s for s in surfaces if platform.tenant(tenant).surfaces[s].mode == "online"]
            for i in range(n):
                now = datetime.now(UTC) - timedelta(minutes=i)
                q = Query(request_id=new_request_id(now), tenant_id=tenant, user_id=f"u{i % 8}",
                          surface=surfaces[i % len(surfaces)], k=10, now=now)  # fmt: skip
                writer.submit((await pipe.recommend(q)).decision)

    asyncio.run(serve())
    assert writer.flush()
    writer.close()


def eligible(platform: PlatformConfig, catalogue: Catalogue, tenant: str = "acme") -> list[str]:
    """Items the tenant's own rules keep for an unknown user now (a valid safe fallback list)."""
    from ranking.rules import RuleChain
    from serving.user_state import ServingUserState

    items = [MergedCandidate(str(i), (Candidate(str(i), "t", "v", 1.0, 0),)) for i in catalogue.item_ids]
    q = Query(request_id="r", tenant_id=tenant, user_id="x", surface="home", k=10, now=datetime.now(UTC))
    chain = RuleChain.from_policy(platform.tenant(tenant).policy, catalogue)
    return [c.item_id for c in chain.apply(q, items, ServingUserState(user_id="x")).kept]


def freeze_now(tmp_path: Path, monkeypatch, kind: str) -> None:
    """A promotion freeze over ``kind`` from an hour ago to an hour from now: the shipped
    ``configs/promotion.yaml`` with it, in ``tmp_path``, made the policy the CLI reads."""
    now = datetime.now(UTC)
    policy = yaml.safe_load((ROOT / "configs/promotion.yaml").read_text())
    policy["freezes"] = [{"name": "peak", "start": (now - timedelta(hours=1)).isoformat(),
                          "end": (now + timedelta(hours=1)).isoformat(), "kinds": [kind]}]  # fmt: skip
    (tmp_path / "promotion.yaml").write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("RECSYS_PROMOTION_POLICY", str(tmp_path / "promotion.yaml"))
