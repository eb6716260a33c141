from __future__ import annotations

import random
from datetime import timedelta

import pytest

from core.config import PolicyConfig
from core.contracts import PolicyUnavailable
from ranking.rules import (
    AvailabilityRule,
    BlockedRule,
    CatalogueRule,
    ExcludeRule,
    HiddenByUserRule,
    MaturityRule,
    RuleChain,
)
from serving.user_state import ServingUserState
from tests.unit.serving_fixtures import NOW, catalogue, merged, query

CAT = catalogue(
    [
        {"item_id": "ok", "category": "books"},
        {"item_id": "news1", "category": "news"},
        {"item_id": "teen1", "maturity": "teen"},
        {"item_id": "mature1", "maturity": "mature"},
        {"item_id": "expired", "available_until": NOW - timedelta(hours=1)},
        {"item_id": "not_yet", "available_from": NOW + timedelta(hours=1)},
    ]
)


def _removed(result) -> dict[str, str]:
    return {r.item_id: r.reason for r in result.removed}


def test_catalogue_rule_removes_unknown_items() -> None:
    res = CatalogueRule(CAT).apply(query(), merged("ok", "ghost"), None)
    assert [c.item_id for c in res.kept] == ["ok"]
    assert _removed(res) == {"ghost": "not_in_catalogue"}
    assert res.removed[0].rule == "catalogue"


def test_availability_rule() -> None:
    res = AvailabilityRule(CAT).apply(query(), merged("ok", "expired", "not_yet", "ghost"), None)
    assert [c.item_id for c in res.kept] == ["ok"]
    assert _removed(res) == {
        "expired": "unavailable",
        "not_yet": "unavailable",
        "ghost": "not_in_catalogue",
    }


def test_blocked_rule_items_and_categories() -> None:
    policy = PolicyConfig(blocked_items=["ok"], blocked_categories=["news"])
    res = BlockedRule(policy, CAT).apply(query(), merged("ok", "news1", "teen1"), None)
    assert [c.item_id for c in res.kept] == ["teen1"]
    assert _removed(res) == {"ok": "blocked_item", "news1": "blocked_category"}


def test_hidden_rule() -> None:
    state = ServingUserState(user_id="u1")
    state.hidden.add("teen1")
    res = HiddenByUserRule().apply(query(), merged("ok", "teen1"), state)
    assert _removed(res) == {"teen1": "hidden_by_user"}


def test_maturity_rule_uses_user_limit_else_policy_default() -> None:
    rule = MaturityRule(PolicyConfig(default_max_maturity="general"), CAT)
    cands = merged("ok", "teen1", "mature1")
    unknown = rule.apply(query(), cands, ServingUserState(user_id="u1"))
    assert [c.item_id for c in unknown.kept] == ["ok"]
    assert _removed(unknown) == {"teen1": "maturity", "mature1": "maturity"}
    teen = rule.apply(query(), cands, ServingUserState(user_id="u1", max_maturity="teen"))
    assert [c.item_id for c in teen.kept] == ["ok", "teen1"]


def test_exclude_rule_request_and_interacted() -> None:
    state = ServingUserState(user_id="u1")
    state.history.append("teen1")
    state.positives.add("news1")
    q = query(exclude_item_ids=frozenset({"ok"}))
    res = ExcludeRule().apply(q, merged("ok", "teen1", "news1", "mature1"), state)
    assert [c.item_id for c in res.kept] == ["mature1"]
    assert _removed(res) == {
        "ok": "excluded_by_request",
        "teen1": "already_interacted",
        "news1": "already_interacted",
    }


@pytest.mark.parametrize("seed", range(10))
def test_id_rules_find_the_same_items_by_catalogue_row(seed: int) -> None:
    """Hidden and exclude judge by id; given the catalogue they find the items by row (ids
    outside it by id, another tenant's catalogue not used): the same removals, in order."""
    rng = random.Random(seed)
    ids = [f"c{k}" for k in range(60)]
    cat = catalogue([{"item_id": i} for i in ids[:45]])
    state = ServingUserState(user_id="u1")
    for i in rng.sample(ids, rng.randint(0, 6)):
        state.hidden.add(i)
    for i in rng.sample(ids, rng.randint(0, 6)):
        state.history.append(i)
    state.positives.update(rng.sample(ids, rng.randint(0, 3)))
    q = query(exclude_item_ids=frozenset(rng.sample(ids + ["elsewhere"], rng.randint(0, 3))))
    cands = merged(*rng.sample(ids, rng.randint(0, 60)))
    for by_id, by_row in ((HiddenByUserRule(), HiddenByUserRule(cat)), (ExcludeRule(), ExcludeRule(cat))):
        want = by_id.apply(q, cands, state)
        got = by_row.apply(q, cands, state)
        assert got.removed == want.removed and list(got.kept) == list(want.kept)
    other = catalogue([{"item_id": i} for i in ids], tenant="other")
    assert ExcludeRule(other).apply(q, cands, state).removed == ExcludeRule().apply(q, cands, state).removed


@pytest.mark.parametrize(
    "rule",
    [
        CatalogueRule(None),
        AvailabilityRule(None),
        BlockedRule(None, CAT),
        BlockedRule(PolicyConfig(blocked_categories=["news"]), None),
        MaturityRule(None, CAT),
        MaturityRule(PolicyConfig(), None),
        CatalogueRule(catalogue([{"item_id": "ok"}], tenant="globex")),
    ],
)
def test_rules_fail_closed_when_policy_data_is_missing(rule) -> None:
    with pytest.raises(PolicyUnavailable):
        rule.apply(query(), merged("ok"), ServingUserState(user_id="u1"))


def test_chain_runs_in_order_collects_removals_and_fails_closed() -> None:
    chain = RuleChain.from_policy(PolicyConfig(blocked_items=["news1"]), CAT)
    assert [r.name for r in chain.rules] == [
        "catalogue",
        "availability",
        "blocked",
        "hidden",
        "maturity",
        "exclude",
    ]
    res = chain.apply(
        query(),
        merged("ghost", "expired", "news1", "mature1", "ok"),
        ServingUserState(user_id="u1"),
    )
    assert [c.item_id for c in res.kept] == ["ok"]
    assert [(r.item_id, r.rule, r.reason) for r in res.removed] == [
        ("ghost", "catalogue", "not_in_catalogue"),
        ("expired", "availability", "unavailable"),
        ("news1", "blocked", "blocked_item"),
        ("mature1", "maturity", "maturity"),
    ]

    class Broken:
        name = "broken"

        def apply(self, query, candidates, user_state):
            raise ValueError("corrupt bundle")

    with pytest.raises(PolicyUnavailable, match="broken"):
        RuleChain([CatalogueRule(CAT), Broken()]).apply(query(), merged("ok"), None)
    with pytest.raises(PolicyUnavailable):
        RuleChain.from_policy(None, CAT)
