"""Versions that experiment arms pin, held beside production (no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from core.config import ExperimentConfig
from core.experiments import pinned_versions
from deployments.model_slots import PinnedVersions, ranker_for_version


class _Runtime:
    def __init__(self, tenant: str, version: str):
        self.tenant, self.version = tenant, version


def _cache(max_versions: int = 2, retry_after_s: float = 30.0):
    loads: list[tuple[str, str]] = []

    def load(tenant: str, version: str) -> _Runtime:
        if version.startswith("bad"):
            loads.append((tenant, version))
            raise FileNotFoundError(f"{tenant}/{version} not in the registry")
        loads.append((tenant, version))
        return _Runtime(tenant, version)

    return PinnedVersions(load, max_versions=max_versions, retry_after_s=retry_after_s), loads


def test_pinned_versions_load_once_and_keep_the_most_recently_used() -> None:
    cache, loads = _cache(max_versions=2)

    async def run():
        a = await asyncio.gather(*(cache.get("acme", "rk-a") for _ in range(4)))
        assert {id(x) for x in a} == {id(a[0])} and a[0].version == "rk-a"
        await cache.get("globex", "rk-a")  # tenants do not share runtimes
        await cache.get("acme", "rk-a")  # touch: acme/rk-a is now the most recent
        await cache.get("acme", "rk-b")  # evicts globex/rk-a, the least recently used
        return cache.versions()

    assert asyncio.run(run()) == {"acme": ["rk-a", "rk-b"]}
    assert loads == [("acme", "rk-a"), ("globex", "rk-a"), ("acme", "rk-b")]


def test_a_failed_pinned_load_is_not_retried_until_its_back_off() -> None:
    cache, loads = _cache(retry_after_s=3600)

    async def run():
        for _ in range(3):
            with pytest.raises(FileNotFoundError, match="bad-1"):
                await cache.get("acme", "bad-1")
        return await cache.warm([("acme", "rk-a"), ("acme", "bad-2"), ("acme", "rk-a")])

    warmed = asyncio.run(run())
    assert loads.count(("acme", "bad-1")) == 1
    assert warmed[("acme", "rk-a")] is None and "bad-2" in warmed[("acme", "bad-2")]
    retry_now, loads2 = _cache(retry_after_s=0.0)
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            asyncio.run(retry_now.get("acme", "bad-1"))
    assert loads2.count(("acme", "bad-1")) == 2


def test_production_serves_unpinned_requests_and_a_pin_equal_to_it() -> None:
    cache, loads = _cache()
    production = _Runtime("acme", "rk-prod")

    async def run():
        return [await ranker_for_version(production, cache, "acme", v)
                for v in (None, "rk-prod", "rk-arm")]  # fmt: skip

    got = asyncio.run(run())
    assert got[0] is production and got[1] is production and got[2].version == "rk-arm"
    assert loads == [("acme", "rk-arm")]
    with pytest.raises(ValueError):
        PinnedVersions(lambda t, v: None, max_versions=0)


def test_pinned_versions_of_a_config_are_the_enabled_arms_pins() -> None:
    def exp(id_, enabled, *pins):
        variants = [{"name": "control", "weight": 50}]
        variants += [{"name": f"arm{i}", "weight": 50, "overrides": {"ranker_version": p}}
                     for i, p in enumerate(pins)]  # fmt: skip
        return ExperimentConfig(id=id_, tenant="acme", surfaces=["home"], salt=id_,
                                enabled=enabled, variants=variants)  # fmt: skip

    exps = [exp("a", True, "rk-1", "rk-2"), exp("b", False, "rk-3"), exp("c", True, "rk-1")]
    assert pinned_versions(exps, "ranker_version") == [("acme", "rk-1"), ("acme", "rk-2")]
