"""The request pipeline end to end on the synthetic tiny data with small real models.

Length: one module-scoped world (data and models) shared by every pipeline behaviour test.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import torch

from core.catalogue import Catalogue
from core.components import SOURCES
from core.config import PlatformConfig, read_yaml
from core.contracts import Query
from core.eventlog import EventLog
from core.features import item_features
from retrieval.sources import TwoTowerArtifacts, VersionMismatch
from retrieval.sources.base import make_result
from serving.assembly import TenantData, build_local_pipeline, build_tenant_stages
from serving.pipeline import RecommendationPipeline, ServiceUnavailable

ROOT = Path(__file__).resolve().parents[2]


def platform(**edit) -> PlatformConfig:
    """configs/platform.yaml with generous timeouts (tests assert behaviour, not speed)."""
    raw = read_yaml(ROOT / "configs/platform.yaml")
    for tenant in raw["tenants"]:
        for surface in tenant["surfaces"].values():
            for s in surface["sources"]:
                s["timeout_ms"] = 5000
            surface.setdefault("ranker", {})["timeout_ms"] = 5000
    for fn in edit.values():
        fn(raw)
    return PlatformConfig.model_validate(raw)


@pytest.fixture(scope="module")
def world(tiny_data):
    from ranking.model import MultiTaskRanker
    from retrieval.index import BruteForceIndex
    from retrieval.two_tower import TwoTowerModel

    data = str(tiny_data)
    cat = Catalogue.load(data, "acme")
    log = EventLog(data + "/events").read("acme")
    users = ds.dataset(data + "/users", partitioning="hive").to_table()
    now = pc.max(log["ts"]).as_py() + timedelta(hours=1)
    torch.manual_seed(0)
    tt = TwoTowerModel.from_config(
        {
            "n_items": len(cat),
            "n_categories": len(cat.categories),
            "n_tags": len(cat.tag_vocab),
            "dim": 16,
            "embed_dim": 16,
            "hidden": 32,
        }
    )
    vectors = tt.encode_items(item_features(cat, now.timestamp()))
    index = BruteForceIndex(vectors, cat.item_ids, "tt-v1")
    ranker = MultiTaskRanker.from_config({"n_items": len(cat), "n_categories": len(cat.categories)})
    globex = Catalogue.load(data, "globex")
    return {
        "cat": cat,
        "log": log,
        "users": users,
        "now": now,
        "tt": tt,
        "index": index,
        "ranker": ranker,
        "globex": globex,
    }


def pipeline(world, config=None, **kw) -> RecommendationPipeline:
    return build_local_pipeline(
        config or platform(),
        "acme",
        catalogue=kw.pop("catalogue", world["cat"]),
        events_table=world["log"],
        users_table=world["users"],
        two_tower=world["tt"],
        index=world["index"],
        ranker=kw.pop("ranker", world["ranker"]),
        versions={"two_tower": "tt-v1", "ann_index": "ix-v1", "ranker": "rk-v1"},
        **kw,
    )


def active_user(world) -> str:
    pos = world["log"].filter(pc.equal(world["log"]["event_type"], "click"))
    return pos["user_id"][0].as_py()


def ask(pipe, world, *, user=None, k=10, rid="r1", surface="home", tenant="acme", **kw):
    q = Query(
        request_id=rid,
        tenant_id=tenant,
        user_id=user or active_user(world),
        surface=surface,
        k=k,
        now=world["now"],
        **kw,
    )
    return asyncio.run(pipe.recommend(q))


def test_full_pipeline_and_complete_decision_record(world) -> None:
    res = ask(pipeline(world), world)
    d = res.decision
    assert 0 < len(res.slate) <= 10 and res.fallback is None and d.degraded == []
    assert [i.rank for i in res.slate] == list(range(len(res.slate)))
    assert len({i.item_id for i in res.slate}) == len(res.slate)
    assert d.versions["two_tower"] == "tt-v1" and d.versions["ann_index"] == "ix-v1"
    assert d.versions["ranker"] == "rk-v1" and d.versions["config"] == "2026-11-22.1"
    assert d.experiment["id"] == "acme-home-like-weight" and d.experiment["arm"] in {
        "control",
        "like_heavy",
    }
    assert {o.source: o.status for o in d.sources} == {
        s: "ok" for s in ("two_tower", "item_to_item", "trending", "editorial", "fresh")
    }
    assert set(d.stage_latency_ms) >= {
        "experiment",
        "user_state",
        "sources",
        "merge",
        "rules",
        "ranker",
        "slate",
        "total",
    }
    rows = d.candidates.rows()
    assert len(rows) == len(d.candidates) == len({c["item_id"] for c in rows})
    by_id = {c["item_id"]: c for c in rows}
    for item in res.slate:
        c = by_id[item.item_id]
        assert set(c["task_scores"]) == {"click", "like", "hide"} and c["utility"] is not None
        assert {s["source"] for s in c["sources"]} == set(item.sources) and item.reasons
    assert any(len(c["sources"]) > 1 for c in rows)  # provenance of every source kept
    removed = {r.item_id for r in d.removals}
    assert removed.isdisjoint(i.item_id for i in res.slate)
    assert any(r.reason == "already_interacted" for r in d.removals)
    assert [s.item_id for s in d.slate] == [i.item_id for i in res.slate]


class HangingSource:
    name = "item_to_item"

    async def retrieve(self, query, user_state, limit):
        await asyncio.Event().wait()  # never answers


class Overrides:
    """Stand-ins for stages that would run elsewhere (a :class:`serving.assembly.RemoteStages`):
    source kinds → ``factory(cfg)``, and a user-state reader."""

    def __init__(self, sources=None, user_state=None):
        self.sources, self.reader = sources or {}, user_state

    def source(self, cfg, surface):
        factory = self.sources.get(cfg.kind)
        return factory(cfg) if factory else None

    def ranker(self, version):
        return None

    def user_state(self):
        return self.reader


class FailingSource:
    def __init__(self, name):
        self.name = name

    async def retrieve(self, query, user_state, limit):
        raise ConnectionError("index shard unreachable")


def _set_timeout(name: str, ms: float):
    def edit(raw):
        for s in raw["tenants"][0]["surfaces"]["home"]["sources"]:
            if s["name"] == name:
                s["timeout_ms"] = ms

    return edit


def test_hanging_source_times_out_and_the_others_answer(world) -> None:
    cfg = platform(t=_set_timeout("item_to_item", 50))
    pipe = pipeline(world, cfg, remote=Overrides({"item_to_item": lambda c: HangingSource()}))
    res = ask(pipe, world)
    assert res.fallback is None and len(res.slate) == 10
    assert "source_timeout:item_to_item" in res.decision.degraded
    status = {o.source: o.status for o in res.decision.sources}
    assert status["item_to_item"] == "timeout" and status["two_tower"] == "ok"


class SuspendingSource:
    """Says it is ``inline`` (never suspends) but it does: the pipeline, which ran it on the
    request's task, goes on with it as a task would have, under its timeout. ``broken``:
    answers at once with something that is not an answer (a source error, as in a task)."""

    inline = True

    def __init__(self, how: str):
        self.how = how

    async def retrieve(self, query, user_state, limit):
        if self.how == "broken":  # answers at once, but not a SourceResult
            return None
        await asyncio.sleep(0)
        if self.how == "hangs":
            await asyncio.Event().wait()
        return make_result("suspends", "v1", [("late-item", 1.0)])


SOURCES.register("test_inline_suspends", None, personalised=False)(SuspendingSource)


@pytest.mark.parametrize("how", ["answers", "hangs", "broken"])
def test_an_inline_source_that_suspends_answers_or_times_out(world, how: str) -> None:
    from dataclasses import replace

    from serving.record import Trace
    from serving.stages import SourceStage

    pipe = pipeline(world)
    plan = pipe.stages.plan("home", _default_arm())
    base = plan.sources[0]
    cfg = base.config.model_copy(update={"kind": "test_inline_suspends", "name": "suspends", "timeout_ms": 50})
    stage = SourceStage(cfg, SuspendingSource(how))
    assert stage.inline and all(s.inline for s in plan.sources)
    plan = replace(plan, sources=(stage, *plan.sources))
    q = Query("r1", "acme", active_user(world), "home", 10, world["now"])
    tr = Trace()
    results = asyncio.run(pipe._sources(plan, q, pipe.stages.user_state(q.user_id), tr))
    status = {o.source: o.status for o in tr.outcomes}
    want = {"answers": "ok", "hangs": "timeout", "broken": "error"}[how]
    assert status == {"suspends": want, **{s.config.name: "ok" for s in plan.sources[1:]}}
    assert [r.source for r in results] == [s.config.name for s in plan.sources if want == "ok" or s is not stage]
    if want == "ok":
        assert [c.item_id for c in results[0].candidates] == ["late-item"]


def _default_arm():
    from core.contracts import ExperimentAssignment
    from core.experiments import DEFAULT_ARM, NO_EXPERIMENT

    return ExperimentAssignment(NO_EXPERIMENT, DEFAULT_ARM)


def test_all_personalised_sources_failing_falls_back_to_trending(world) -> None:
    failing = {k: (lambda c: FailingSource(c.name)) for k in ("two_tower", "item_to_item")}
    res = ask(pipeline(world, remote=Overrides(failing)), world)
    assert res.fallback == "sources_failed" and len(res.slate) == 10
    assert {"source_error:two_tower", "source_error:item_to_item"} <= set(res.decision.degraded)
    assert all(i.sources == ("trending",) for i in res.slate)


def test_failing_ranker_gives_fallback_order(world) -> None:
    from ranking.model import MultiTaskRanker

    # A ranker trained without the "like" and "hide" heads cannot serve these task weights.
    click_only = MultiTaskRanker.from_config(
        {"n_items": len(world["cat"]), "n_categories": 12, "tasks": ["click"]}
    )
    res = ask(pipeline(world, ranker=click_only), world)
    assert res.fallback == "ranker_unavailable" and len(res.slate) == 10
    assert any(x.startswith("ranker_error:") for x in res.decision.degraded)
    assert res.decision.versions["ranker"].startswith("fallback:")
    assert all(not c["task_scores"] for c in res.decision.candidates.rows())


def test_missing_policy_data_fails_closed(world) -> None:
    with pytest.raises(ServiceUnavailable):
        ask(pipeline(world, policy=None), world)  # no safe list configured: 503

    safe = [str(i) for i in world["cat"].item_ids[:3]] + ["not-in-catalogue"]

    def with_safe(raw):
        raw["tenants"][0]["policy"]["safe_fallback"] = safe

    res = ask(pipeline(world, platform(s=with_safe), policy=None), world)
    assert res.fallback == "policy_unavailable"
    assert [i.item_id for i in res.slate] == safe[:3]
    assert all(i.reasons == ("safe_fallback",) for i in res.slate)
    assert {"not-in-catalogue": "not_in_catalogue"}.items() <= {
        r.item_id: r.reason for r in res.decision.removals
    }.items()

    # Catalogue unreadable: rules cannot run; only the safe list, unchecked, is served.
    res = ask(pipeline(world, platform(s=with_safe), catalogue=None), world)
    assert res.fallback == "policy_unavailable" and [i.item_id for i in res.slate] == safe[:4]
    assert "safe_fallback_unchecked:catalogue" in res.decision.degraded


def test_hide_and_impressions_take_effect_on_the_next_request(world) -> None:
    pipe = pipeline(world)
    user = active_user(world)
    first = ask(pipe, world, user=user, rid="a")
    hidden, capped = first.slate[0].item_id, first.slate[1].item_id
    rt = pipe.stages
    rt.observe(
        {
            "tenant_id": "acme",
            "user_id": user,
            "item_id": hidden,
            "event_type": "hide",
            "ts": world["now"],
        }
    )
    for _ in range(3):
        rt.observe(
            {
                "tenant_id": "acme",
                "user_id": user,
                "item_id": capped,
                "event_type": "impression",
                "ts": world["now"],
            }
        )
    second = ask(pipe, world, user=user, rid="a")
    items = [i.item_id for i in second.slate]
    assert hidden not in items and capped not in items
    reasons = {(r.item_id, r.reason) for r in second.decision.removals}
    assert (hidden, "hidden_by_user") in reasons and (capped, "frequency_cap") in reasons


def test_another_tenants_items_are_never_returned(world) -> None:
    acme = set(world["cat"].item_ids.tolist())
    foreign = [i for i in world["globex"].item_ids.tolist() if i not in acme][:5] or [
        "globex-only-1"
    ]
    foreign += ["globex/" + str(i) for i in world["globex"].item_ids[:5]]

    def editorial(raw):
        for s in raw["tenants"][0]["surfaces"]["home"]["sources"]:
            if s["kind"] == "editorial":
                s["items"] = foreign

    res = ask(pipeline(world, platform(e=editorial)), world, k=50)
    assert acme >= {i.item_id for i in res.slate}
    assert {r.item_id for r in res.decision.removals if r.reason == "not_in_catalogue"} >= set(
        foreign
    )
    with pytest.raises(PermissionError):
        ask(pipeline(world), world, tenant="globex")


def test_unknown_user_and_missing_user_state(world) -> None:
    res = ask(pipeline(world), world, user="brand-new-user")
    assert res.fallback is None and len(res.slate) == 10
    down = Overrides(user_state=lambda uid: (_ for _ in ()).throw(TimeoutError("state down")))
    broken = build_tenant_stages(
        platform(), "acme", TenantData(world["cat"], world["log"]), remote=down
    )
    res = ask(RecommendationPipeline(broken), world)
    assert "user_state_missing" in res.decision.degraded and res.slate
    assert res.fallback == "ranker_unavailable"  # no ranker was given to this runtime


def test_mismatched_query_tower_and_index_are_refused(world) -> None:
    # The index says item tower tt-v1 built it; the query tower offered is tt-v2.
    with pytest.raises(VersionMismatch):
        build_local_pipeline(
            platform(),
            "acme",
            catalogue=world["cat"],
            events_table=world["log"],
            two_tower=world["tt"],
            index=world["index"],
            versions={"two_tower": "tt-v2", "ann_index": "ix-v1"},
        )
    assert isinstance(
        TwoTowerArtifacts(world["tt"], world["index"], "tt-v1", "ix", "tt-v1"), TwoTowerArtifacts
    )


def test_swap_serves_the_new_runtime(world) -> None:
    pipe = pipeline(world)
    new = build_tenant_stages(platform(), "acme", TenantData(world["cat"], world["log"]))
    old = pipe.swap(new)
    assert old is not new and pipe.stages is new
    res = ask(pipe, world)
    # The new runtime has no two-tower artifacts and no ranker: item-to-item still answers.
    assert res.fallback == "ranker_unavailable"
    assert "source_error:two_tower" in res.decision.degraded
    assert np.all([i.item_id in set(world["cat"].item_ids.tolist()) for i in res.slate])


class _SlowRanker:
    """A ranker stage that never answers in time."""

    async def score(self, query, user_state, candidates, task_weights, *, query_vectors=None):
        await asyncio.sleep(30)


class _RankerOverride(Overrides):
    def ranker(self, version):
        return _SlowRanker()


def test_a_ranker_over_its_timeout_gives_the_fallback_order(world) -> None:
    def fast(raw):
        raw["tenants"][0]["surfaces"]["home"]["ranker"]["timeout_ms"] = 50

    res = ask(pipeline(world, platform(f=fast), remote=_RankerOverride()), world)
    assert res.fallback == "ranker_unavailable" and len(res.slate) == 10
    assert "ranker_timeout" in res.decision.degraded
    assert res.decision.versions["ranker"].startswith("fallback:")
