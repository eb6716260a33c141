"""Batch scoring gives every user the slate the one-request pipeline gives them.

``serving.batch.recommend_many`` (what ``training.batch_score`` runs: shared non-personal
sources, one two-tower pass and one ranker pass per surface, no decision record) against
``RecommendationPipeline.recommend`` one request at a time, on the same stages' versions and
the tiny preset's users; and a batch whose policy cannot be read gets the pipeline's own
fail-closed answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.catalogue import Catalogue
from core.contracts import Query
from core.registry import Registry
from serving.batch import recommend_many
from serving.errors import ServiceUnavailable
from serving.pipeline import RecommendationPipeline
from tests.integration.serving_artifacts import publish_ranker, publish_two_tower
from tests.unit.tenant_world import write_platform_yaml
from training.batch_score import build_stages, production_versions
from training.quality_checks import users_table

SURFACES = ["email", "home"]
NOW = datetime(2026, 12, 2, 12, 17, tzinfo=UTC)
"""Every query's ``now`` and the index's item ages (the fixture): fixed, never the wall clock.
The slates depend on it (hour of day, item ages, popularity decay), so with ``datetime.now``
each run was a different test. The batch encodes many users in one float32 query-tower pass
and the pipeline one user alone, and the two can differ in the last bit; where two
utilities are that close, the ``utility_rank`` reasons differ. Sampled every 11 minutes of
2026-12-02, 3 of 131 runs did, and so did 12:02-12:05 UTC (item_page): a run then failed."""


@pytest.fixture(scope="module")
def world(tiny_data: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_recommend")
    registry = Registry(str(root / "registry"))
    catalogue = Catalogue.load(str(tiny_data), "acme")
    two_tower, _ = publish_two_tower(registry, catalogue, now=NOW.timestamp())
    publish_ranker(registry, catalogue, two_tower=two_tower)
    platform = write_platform_yaml(tiny_data, root)
    versions = production_versions(registry, "acme", "production")
    users = sorted(users_table(str(tiny_data), "acme")["user_id"].to_pylist())[:24]
    users.append("someone-new")  # no history: cold start
    return str(platform), versions, users


def _queries(users: list[str], now: datetime, surfaces: list[str] = SURFACES) -> list[Query]:
    return [Query(request_id=f"t-{s}-{u}", tenant_id="acme", user_id=u, surface=s, k=10, now=now)
            for s in surfaces for u in users]  # fmt: skip


def _one_at_a_time(pipe: RecommendationPipeline, queries: list[Query]) -> list:
    async def run() -> list:
        return [await pipe.recommend(q) for q in queries]

    return asyncio.run(run())


def _slate(items) -> list[tuple]:
    return [(s.item_id, s.rank, s.reasons, s.sources) for s in items]


def test_batch_slates_equal_the_one_request_pipelines(world) -> None:
    platform, versions, users = world
    now = NOW
    queries = _queries(users, now)
    batched = build_stages("acme", platform, SURFACES, versions, max_batch=64)
    plain = build_stages("acme", platform, SURFACES, versions, batched=False)

    answers = asyncio.run(recommend_many(RecommendationPipeline(batched), queries))
    expected = _one_at_a_time(RecommendationPipeline(plain), queries)

    assert len(answers) == len(queries)
    assert not any(a.via_pipeline for a in answers)  # every user stayed on the batch path
    for q, got, want in zip(queries, answers, expected, strict=True):
        assert got.query.user_id == q.user_id and got.query.surface == q.surface
        assert _slate(got.slate) == _slate(want.slate), (q.surface, q.user_id)
        assert [s.score for s in got.slate] == pytest.approx([s.score for s in want.slate], rel=1e-5, abs=1e-6)
        assert got.fallback == want.decision.fallback is None
        assert got.degraded == want.decision.degraded
        assert got.versions == want.decision.versions
    assert all(len(a.slate) == 10 for a in answers)


def test_users_whose_ranker_is_missing_get_the_pipelines_degraded_answer(world) -> None:
    platform, versions, users = world
    now = NOW
    queries = _queries(users[:5], now)
    no_ranker = {k: v for k, v in versions.items() if k != "ranker"}
    stages = build_stages("acme", platform, SURFACES, no_ranker, max_batch=64)

    answers = asyncio.run(recommend_many(RecommendationPipeline(stages), queries))
    expected = _one_at_a_time(RecommendationPipeline(stages), queries)

    for got, want in zip(answers, expected, strict=True):
        assert got.via_pipeline  # left the batch path: the pipeline's own degradation
        assert got.fallback == want.decision.fallback == "ranker_unavailable"
        assert got.degraded == want.decision.degraded
        assert _slate(got.slate) == _slate(want.slate) and got.slate


def test_a_batch_whose_policy_cannot_be_read_fails_closed_as_the_pipeline_does(world) -> None:
    platform, versions, users = world
    stages = replace(build_stages("acme", platform, SURFACES, versions, max_batch=64), rules=None)
    queries = _queries(users[:2], NOW)
    pipe = RecommendationPipeline(stages)

    with pytest.raises(ServiceUnavailable, match="policy_unavailable"):  # acme has no safe list
        asyncio.run(pipe.recommend(queries[0]))
    with pytest.raises(ServiceUnavailable, match="policy_unavailable"):
        asyncio.run(recommend_many(pipe, queries))


def _hide_and_show(stages_list, users: list[str], slates: dict, now: datetime) -> dict[str, tuple[set, set]]:
    """Each user hides the first item of their home slate and is shown the next two three
    times in the last hour (a frequency cap of 3 a day); the same events for every stages."""
    ts = (now - timedelta(hours=1)).timestamp()
    out = {}
    for u in users:
        items = [s.item_id for s in slates[u]]
        hidden, capped = {items[0]}, set(items[1:3])
        events = [{"tenant_id": "acme", "user_id": u, "item_id": items[0], "event_type": "hide", "ts": ts}]
        events += [{"tenant_id": "acme", "user_id": u, "item_id": i, "event_type": "impression", "ts": ts + n}
                   for i in sorted(capped) for n in range(3)]  # fmt: skip
        for stages in stages_list:
            for e in events:
                stages.observe(e)
        out[u] = (hidden, capped)
    return out


class _NoSevens:
    """A custom rule with no batched form: the batch path runs the chain per user for it."""

    name = "no_sevens"

    def apply(self, query, candidates, user_state):
        from ranking.rules.base import partition

        return partition(self.name, candidates, lambda c: "seven" if c.item_id.endswith("7") else None)


def test_hidden_items_frequency_caps_custom_rules_and_several_surfaces_match_the_pipeline(world) -> None:
    from ranking.rules import RuleChain

    platform, versions, users = world
    surfaces = ["email", "home", "item_page"]
    now = NOW
    batched = build_stages("acme", platform, surfaces, versions, max_batch=64)
    plain = build_stages("acme", platform, surfaces, versions, batched=False)
    before = _one_at_a_time(RecommendationPipeline(plain), _queries(users[:12], now, ["home"]))
    state_of = _hide_and_show([batched, plain], users[:12], {r.decision.user_id: r.slate for r in before}, now)
    queries = _queries(users, now, surfaces)

    for custom in (False, True):
        b, p = batched, plain
        if custom:
            b = replace(batched, rules=RuleChain([*batched.rules.rules, _NoSevens()]))
            p = replace(plain, rules=RuleChain([*plain.rules.rules, _NoSevens()]))
        answers = asyncio.run(recommend_many(RecommendationPipeline(b), queries))
        expected = _one_at_a_time(RecommendationPipeline(p), queries)
        assert not any(a.via_pipeline for a in answers)
        for q, got, want in zip(queries, answers, expected, strict=True):
            assert _slate(got.slate) == _slate(want.slate), (custom, q.surface, q.user_id)
            assert [s.score for s in got.slate] == pytest.approx([s.score for s in want.slate], rel=1e-5, abs=1e-6)
            assert got.versions == want.decision.versions and got.degraded == want.decision.degraded
            shown = {s.item_id for s in got.slate}
            if q.user_id in state_of:  # what the user hid or was shown too often is gone
                hidden, capped = state_of[q.user_id]
                assert not shown & hidden and not shown & capped, (q.surface, q.user_id)
            if custom:
                assert not any(i.endswith("7") for i in shown)


def test_the_recs_table_is_each_slate_and_flags_what_the_rules_remove_on_a_second_look(world) -> None:
    """``training.batch_score`` writes one row per slate position, built column by column, and
    checks every finished slate against the rules again (an item the rules now remove is
    written with ``eligible`` false): the same rows as checking each user's slate with the
    chain, for the built-in chain (checked over all users at once) and one with a custom rule
    (checked per user); an empty slate and a failed query keep one row with no item."""
    from core.contracts import MergedCandidate
    from ranking.rules import RuleChain
    from training.batch_score import recs_table

    platform, versions, users = world
    stages = build_stages("acme", platform, ["home"], versions, max_batch=64)
    queries = _queries(users[:8], NOW, ["home"])
    answers: list = asyncio.run(recommend_many(RecommendationPipeline(stages), queries))
    answers[0].state.hidden.add(answers[0].slate[2].item_id)  # hidden since the slate was built
    answers[1] = replace(answers[1], slate=[], fallback="no_candidates")
    answers[2] = RuntimeError("boom")

    for rules in (stages.rules, RuleChain([*stages.rules.rules, _NoSevens()])):
        checked = replace(stages, rules=rules)
        want = []
        for q, res in zip(queries, answers, strict=True):
            base = {"surface": q.surface, "user_id": q.user_id, "rank": 0, "item_id": None, "score": None,
                    "reasons": None, "sources": None, "eligible": None}  # fmt: skip
            if isinstance(res, BaseException):
                want.append({**base, "fallback": "error:RuntimeError", "degraded": ["boom"]})
                continue
            if not res.slate:
                want.append({**base, "fallback": res.fallback, "degraded": res.degraded})
                continue
            shown = [MergedCandidate(s.item_id, ()) for s in res.slate]
            removed = {r.item_id for r in rules.apply(q, shown, res.state).removed}
            want += [{**base, "rank": s.rank, "item_id": s.item_id, "score": s.score, "reasons": list(s.reasons),
                      "sources": list(s.sources), "fallback": res.fallback, "degraded": res.degraded,
                      "eligible": s.item_id not in removed} for s in res.slate]  # fmt: skip
        got = recs_table(checked, queries, answers).to_pylist()
        assert got == want
        assert got[2]["item_id"] in answers[0].state.hidden and got[2]["eligible"] is False
