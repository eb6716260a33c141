from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from core.config import SlateConfig
from core.contracts import Candidate, ScoredCandidate
from core.features import UserState
from ranking.slate import ExplorationStep, SlatePolicy
from tests.unit.serving_fixtures import NOW, catalogue, query, scored

# Twelve items: a0..a5 in category "a" with the highest utilities, b0..b3 in "b", c0, c1 in "c".
ITEMS = [(f"a{i}", 1.0 - i * 0.01) for i in range(6)] + [
    (f"b{i}", 0.8 - i * 0.01) for i in range(4)
]
ITEMS += [("c0", 0.5), ("c1", 0.49)]
CAT = catalogue([{"item_id": i, "category": i[0]} for i, _ in ITEMS])


def policy(**cfg) -> SlatePolicy:
    """The default steps (pinned, frequency cap, exploration, diversity) with these settings;
    no exploration and no category limit unless asked."""
    diversity = {"kind": "diversity", "max_per_category": cfg.pop("max_per_category", None)}
    if "diversity" in cfg:
        diversity["method"] = cfg.pop("diversity")
    for key in ("mmr_lambda", "source_quotas"):
        if key in cfg:
            diversity[key] = cfg.pop(key)
    steps = [
        {"kind": "pinned", "items": cfg.pop("pinned", [])},
        {"kind": "frequency_cap", **cfg.pop("frequency_cap", {})},
        {"kind": "exploration", **cfg.pop("exploration", {"slots": 0})},
        diversity,
    ]
    assert not cfg, f"unknown settings {cfg}"
    return SlatePolicy.from_config(SlateConfig(steps=steps), CAT)


def ids(outcome) -> list[str]:
    return [i.item_id for i in outcome.items]


def test_plain_utility_order_without_diversity() -> None:
    out = policy(diversity="none")(query(k=4), scored(ITEMS), UserState(user_id="u1"))
    assert ids(out) == ["a0", "a1", "a2", "a3"]
    assert [i.rank for i in out.items] == [0, 1, 2, 3]
    assert out.items[2].reasons == ("utility_rank:2",)


def test_mmr_diversifies_categories() -> None:
    out = policy(diversity="mmr", mmr_lambda=0.5)(
        query(k=3), scored(ITEMS), UserState(user_id="u1")
    )
    assert {i.item_id[0] for i in out.items} == {"a", "b", "c"}
    assert "mmr_diversity" in out.items[1].reasons


def test_max_per_category() -> None:
    out = policy(diversity="none", max_per_category=2)(
        query(k=6), scored(ITEMS), UserState(user_id="u1")
    )
    assert Counter(i.item_id[0] for i in out.items) == {"a": 2, "b": 2, "c": 2}


def test_source_quotas_count_best_source() -> None:
    cands = [
        ScoredCandidate(
            i, (Candidate(i, "fresh" if i.startswith("a") else "tt", "v", u, r),), {}, u
        )
        for r, (i, u) in enumerate(ITEMS)
    ]
    out = policy(diversity="none", source_quotas={"fresh": 2})(
        query(k=5), cands, UserState(user_id="u1")
    )
    assert ids(out) == ["a0", "a1", "b0", "b1", "b2"]


def test_frequency_cap_drops_items_seen_too_often() -> None:
    state = UserState(user_id="u1")
    for h in (1, 2, 3):
        state.impressions.append(((NOW - timedelta(hours=h)).timestamp(), "a0"))
    state.impressions.append(((NOW - timedelta(hours=30)).timestamp(), "a1"))  # outside window
    for h in (1, 2):
        state.impressions.append(((NOW - timedelta(hours=h)).timestamp(), "a2"))  # under the cap
    pol = policy(diversity="none", frequency_cap={"max_impressions": 3, "window_hours": 24})
    out = pol(query(k=3), scored(ITEMS), state)
    assert ids(out) == ["a1", "a2", "a3"]
    assert [(r.item_id, r.rule, r.reason) for r in out.removed] == [
        ("a0", "frequency_cap", "frequency_cap")
    ]


def test_exploration_samples_below_the_slate_and_logs_propensity() -> None:
    pol = policy(diversity="none", exploration={"slots": 1, "pool": 4})
    out = pol(query(k=4, request_id="req-7"), scored(ITEMS), UserState(user_id="u1"))
    assert len(out.items) == 4
    explored = [i for i in out.items if "exploration" in i.reasons]
    assert len(explored) == 1
    item = explored[0]
    assert item.item_id in {"a4", "a5", "b0", "b1"}  # utility ranks k .. k + pool
    assert item.propensity == pytest.approx(0.25)
    assert f"propensity:{0.25:.6g}" in item.reasons
    assert ids(out)[:3] == ["a0", "a1", "a2"]
    # Same request id, same draw; the draws spread over the pool across requests.
    again = pol(query(k=4, request_id="req-7"), scored(ITEMS), UserState(user_id="u1"))
    assert ids(again) == ids(out)
    drawn = {
        ids(pol(query(k=4, request_id=f"r{n}"), scored(ITEMS), UserState(user_id="u1")))[-1]
        for n in range(60)
    }
    assert drawn == {"a4", "a5", "b0", "b1"}


def test_exploration_propensities_without_replacement() -> None:
    picks = ExplorationStep(2, 10).sample("r", scored(ITEMS[:5]))
    assert [p for _, p in picks] == [pytest.approx(1 / 5), pytest.approx(1 / 4)]
    assert len({c.item_id for c, _ in picks}) == 2


def test_exploration_draws_replay_across_versions() -> None:
    # Logged exploration decisions are replayed from the request id: the draws must be those of
    # ``default_rng`` seeded with the id's hash, as every earlier version drew them.
    import hashlib

    import numpy as np

    from ranking.slate import request_rng

    for rid in ["r0", "req-7", "x" * 80, "é"]:
        seed = int.from_bytes(hashlib.sha256(rid.encode()).digest()[:8], "big")
        want = np.random.default_rng(seed)
        got = request_rng(rid)
        assert [int(got.integers(n)) for n in (50, 49, 3, 1000)] == [int(want.integers(n)) for n in (50, 49, 3, 1000)]


def test_pinned_items_at_fixed_positions_only_when_eligible() -> None:
    pol = policy(
        diversity="none",
        pinned=[{"item_id": "c1", "position": 1}, {"item_id": "gone", "position": 0}],
    )
    out = pol(query(k=4), scored(ITEMS), UserState(user_id="u1"))
    assert ids(out) == ["a0", "c1", "a1", "a2"]
    assert out.items[1].reasons == ("pinned",)


def test_slate_never_longer_than_k_and_no_repeats() -> None:
    pol = policy(exploration={"slots": 2, "pool": 3}, pinned=[{"item_id": "b3", "position": 0}])
    for k in (1, 2, 5, 20):
        out = pol(query(k=k), scored(ITEMS), UserState(user_id="u1"))
        assert len(out.items) <= k and len(set(ids(out))) == len(out.items)
