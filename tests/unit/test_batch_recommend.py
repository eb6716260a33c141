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
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from core.catalogue import Catalogue
from core.contracts import Query
from core.registry import Registry
from serving.batch import recommend_many
from serving.errors import ServiceUnavailable
from serving.pipeline import RecommendationPipeline
from tests.integration.serving_artifacts import publish_ranker, publish_two_tower
from training.batch_score import build_stages, production_versions
from training.quality_checks import users_table

ROOT = Path(__file__).resolve().parents[2]
SURFACES = ["email", "home"]


@pytest.fixture(scope="module")
def world(tiny_data: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_recommend")
    registry = Registry(str(root / "registry"))
    catalogue = Catalogue.load(str(tiny_data), "acme")
    two_tower, _ = publish_two_tower(registry, catalogue)
    publish_ranker(registry, catalogue, two_tower=two_tower)
    config = yaml.safe_load((ROOT / "configs/platform.yaml").read_text())
    config["storage"] = {"data": str(tiny_data), "events": str(tiny_data / "events"),
                         "registry": str(root / "registry"), "decisions": str(root / "decisions")}  # fmt: skip
    (root / "platform.yaml").write_text(yaml.safe_dump(config))
    versions = production_versions(registry, "acme", "production")
    users = sorted(users_table(str(tiny_data), "acme")["user_id"].to_pylist())[:24]
    users.append("someone-new")  # no history: cold start
    return str(root / "platform.yaml"), versions, users


def _queries(users: list[str], now: datetime) -> list[Query]:
    return [Query(request_id=f"t-{s}-{u}", tenant_id="acme", user_id=u, surface=s, k=10, now=now)
            for s in SURFACES for u in users]  # fmt: skip


def _one_at_a_time(pipe: RecommendationPipeline, queries: list[Query]) -> list:
    async def run() -> list:
        return [await pipe.recommend(q) for q in queries]

    return asyncio.run(run())


def _slate(items) -> list[tuple]:
    return [(s.item_id, s.rank, s.reasons, s.sources) for s in items]


def test_batch_slates_equal_the_one_request_pipelines(world) -> None:
    platform, versions, users = world
    now = datetime.now(UTC)
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
    now = datetime.now(UTC)
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
    queries = _queries(users[:2], datetime.now(UTC))
    pipe = RecommendationPipeline(stages)

    with pytest.raises(ServiceUnavailable, match="policy_unavailable"):  # acme has no safe list
        asyncio.run(pipe.recommend(queries[0]))
    with pytest.raises(ServiceUnavailable, match="policy_unavailable"):
        asyncio.run(recommend_many(pipe, queries))
