"""The batch path's stages over many users at once give each user what the per-request stage
gives: :func:`serving.batch_stages.merge_many` against :func:`serving.merge.merge`,
:func:`ranking.rules.batched.kept_many` against :meth:`RuleChain.apply`,
:func:`ranking.slate.batched.slates_many` against :class:`SlatePolicy`, on random users
built to hit the awkward cases (duplicates within and across sources, shared answers, unknown
items, hidden items, frequency caps, ties in MMR, pools shorter than the slate, empty pools)."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from core.candidates import CandidateBatch, ScoredBatch
from core.config import PolicyConfig
from core.contracts import Candidate, PolicyUnavailable, SourceResult
from core.features import UserState
from ranking.rules import RuleChain
from ranking.rules.batched import batchable as rules_batchable
from ranking.rules.batched import kept_many
from ranking.slate import (
    ExplorationStep,
    FrequencyCapStep,
    MmrDiversityStep,
    PinnedStep,
    SlatePolicy,
)
from ranking.slate.batched import batchable as slate_batchable
from ranking.slate.batched import slates_many
from serving.batch_stages import merge_many
from serving.merge import merge
from tests.unit.serving_fixtures import NOW, catalogue, query

CATS = ["books", "film", "music", "games"]
MATURITY = ["general", "teen", "mature"]


@pytest.fixture(scope="module")
def cat():
    rnd = random.Random(7)
    items = []
    for n in range(120):
        it = {"item_id": f"i{n}", "category": rnd.choice(CATS), "maturity": rnd.choice(MATURITY)}
        if n % 17 == 0:
            it["available_until"] = NOW - timedelta(hours=1)  # expired
        if n % 23 == 0:
            it["created_at"] = NOW + timedelta(hours=1)  # not created yet
        items.append(it)
    return catalogue(items)


def _answer(rnd: random.Random, source: str, n: int, pool: int = 130) -> SourceResult:
    ids = [f"i{rnd.randrange(pool)}" for _ in range(n)]  # ids >= 120: not in the catalogue
    if n > 3:
        ids[2] = ids[0]  # the same item twice in one answer
    cands = tuple(Candidate(i, source, "v1", round(rnd.random(), 2), r) for r, i in enumerate(ids))
    return SourceResult(source, "v1", cands)


def _batch_columns(b: CandidateBatch, cat) -> tuple:
    """The columns a merged batch carries, computed here from its rows (the reference)."""
    rows = [cat.index_of([c.item_id])[0] for c in b]
    retrieval = [next((p.score for p in c.provenance if p.source == "two_tower"), np.nan) for c in b]
    return rows, retrieval, [c.best.source for c in b]


def test_merge_many_is_merge_per_user(cat) -> None:
    rnd = random.Random(1)
    shared = _answer(rnd, "trending", 30)
    empty = SourceResult("fresh", "v1", ())
    pinned = (Candidate("i5", "pinned", "config", 0.0, 1), Candidate("i999", "pinned", "config", 0.0, 0))
    users = []
    for u in range(40):
        tt = _answer(rnd, "two_tower", rnd.choice([0, 1, 5, 60]))
        i2i = _answer(rnd, "item_to_item", rnd.choice([0, 3, 25]))
        users.append([tt, i2i, shared, empty if u % 3 else _answer(rnd, "fresh", 8)])
    for extra in ((), pinned):
        got = merge_many(users, extra, cat)
        assert len(got) == len(users)
        for results, batch in zip(users, got, strict=True):
            want = merge(results, extra)
            assert batch.item_ids == want.item_ids
            assert batch.provenance == want.provenance
            rows, retrieval, best = _batch_columns(want, cat)
            assert batch.rows(cat).tolist() == rows
            np.testing.assert_array_equal(batch.retrieval_scores(), np.array(retrieval, dtype=np.float32))
            assert batch.best_sources() == best


def _state(rnd: random.Random, user: str, candidates: list[str]) -> UserState:
    s = UserState(user_id=user)
    for i in rnd.sample(candidates, min(3, len(candidates))) if rnd.random() < 0.5 else []:
        s.hidden.add(i)
    for i in rnd.sample(candidates, min(2, len(candidates))) if rnd.random() < 0.5 else []:
        s.history.append(i)
    if rnd.random() < 0.3:
        s.positives.add(rnd.choice(candidates))
    if rnd.random() < 0.5:
        s.max_maturity = rnd.choice(MATURITY)
    return s


@pytest.mark.parametrize("policy", [
    PolicyConfig(),
    PolicyConfig(blocked_items=["i3", "i4", "i200"], blocked_categories=["music"], default_max_maturity="general"),
])  # fmt: skip
def test_kept_many_is_the_chains_kept_per_user(cat, policy) -> None:
    rnd = random.Random(2)
    chain = RuleChain.from_policy(policy, cat)
    assert rules_batchable(chain)
    batches = merge_many([[_answer(rnd, "two_tower", rnd.choice([0, 4, 40]))] for _ in range(30)], (), cat)
    queries = [query(10, user=f"u{u}", request_id=f"r{u}", now=NOW,
                     exclude_item_ids=("i1", "i2") if u % 4 == 0 else ()) for u in range(30)]  # fmt: skip
    states = [_state(rnd, f"u{u}", b.item_ids or ["i0"]) for u, b in enumerate(batches)]
    states[5] = None  # no user state: the hidden rule cannot look, the chain fails closed
    got = kept_many(chain, queries, batches, states)
    for q, b, s, kept in zip(queries, batches, states, got, strict=True):
        if s is None:
            assert kept is None
            with pytest.raises(PolicyUnavailable):
                chain.apply(q, b, s)
            continue
        want = CandidateBatch.of(chain.apply(q, b, s).kept)
        assert kept.item_ids == want.item_ids and kept.provenance == want.provenance


def test_a_chain_with_a_rule_that_has_no_batched_form_is_not_batched(cat) -> None:
    class OnlyBooks:
        name = "only_books"

        def apply(self, query, candidates, user_state):
            raise NotImplementedError

    assert not rules_batchable(RuleChain([*RuleChain.from_policy(PolicyConfig(), cat).rules, OnlyBooks()]))


def _scored(rnd: random.Random, cat, n: int, ties: bool | str) -> ScoredBatch:
    ids = rnd.sample([f"i{k}" for k in range(125)], n)
    prov = [(Candidate(i, rnd.choice(["two_tower", "fresh", "trending"]), "v", 0.5, r),) for r, i in enumerate(ids)]
    u = [round(rnd.random(), 1) if ties else rnd.random() for _ in ids]  # rounded: many ties
    if ties == "near":  # within MMR's tie margin (1e-12) of each other: the scan's rule decides
        u = [x + rnd.choice([0.0, 4e-13, 8e-13, 1.6e-12]) for x in u]
    return ScoredBatch(CandidateBatch(ids, prov), {"click": u}, u)


def _policy(cat, lam: float, cap: int | None, quotas: dict) -> SlatePolicy:
    return SlatePolicy([PinnedStep([]), FrequencyCapStep(2, 24.0), ExplorationStep(1, 6),
                        MmrDiversityStep(lam, category_of=cat.category_of, max_per_category=cap,
                                         source_quotas=quotas, catalogue=cat)])  # fmt: skip


@pytest.mark.parametrize("lam,cap,quotas,ties", [
    (0.8, None, {"fresh": 2}, False),
    (0.8, None, {"fresh": 2}, True),
    (0.5, 2, {}, True),
    (1.0, 3, {"fresh": 1, "trending": 2}, False),
    (0.0, None, {}, True),
    (1.0, None, {}, "near"),
    (0.8, None, {"fresh": 2}, "near"),
])  # fmt: skip
def test_slates_many_are_the_policys_slates(cat, lam, cap, quotas, ties) -> None:
    rnd = random.Random(3)
    policy = _policy(cat, lam, cap, quotas)
    assert slate_batchable(policy)
    pools, queries, states = [], [], []
    for u in range(40):
        n = rnd.choice([0, 1, 3, 9, 30, 80])  # pools shorter than the slate, and empty ones
        pools.append(_scored(rnd, cat, n, ties))
        queries.append(query(rnd.choice([5, 10]), user=f"u{u}", request_id=f"r{u}", now=NOW))
        s = UserState(user_id=f"u{u}")
        for i in pools[-1].item_ids[:6] if u % 2 else []:  # shown often recently: capped
            for back in (1, 2, 30):  # the last one is outside the window
                s.impressions.append((NOW.timestamp() - back * 3600, i))
        states.append(s)
    pools.append(_scored(rnd, cat, 12, ties))
    nan = ScoredBatch(pools[-1].candidates, {"click": [float("nan")] * 12}, [float("nan")] * 12)
    pools[-1] = nan
    queries.append(query(5, user="nan", request_id="rnan", now=NOW))
    states.append(UserState(user_id="nan"))
    got = slates_many(policy, queries, pools, states)
    assert got[-1] is None  # not every utility finite: the per-user policy's business
    for q, pool, s, items in zip(queries[:-1], pools[:-1], states[:-1], got[:-1], strict=True):
        want = policy(q, pool, s).items
        assert items == want, (q.user_id, len(pool))
    assert any(any("mmr_diversity" in i.reasons for i in items) for items in got[:-1]) or lam == 1.0
    assert any(any("exploration" in i.reasons for i in items) for items in got[:-1])


def test_a_policy_with_pins_or_a_custom_step_is_not_batched(cat) -> None:
    from ranking.slate.pinned import PinnedItemConfig

    class Reverse:
        name = "reverse"

        def apply(self, draft):
            raise NotImplementedError

    assert not slate_batchable(SlatePolicy([PinnedStep([PinnedItemConfig(item_id="i1", position=0)])]))
    assert not slate_batchable(SlatePolicy([Reverse()]))


def test_an_mmr_near_tie_goes_to_the_earlier_candidate_as_in_the_per_user_scan() -> None:
    cat = catalogue([{"item_id": "a1", "category": "film"}, {"item_id": "a2", "category": "film"},
                     {"item_id": "b", "category": "books"}, {"item_id": "c", "category": "music"}])  # fmt: skip
    # After a1, a2 scores 0.8 * 0.75 - 0.2 = 0.4 and b 0.8 * (0.5 + 5e-13): b is higher, but by
    # less than the 1e-12 margin, so the earlier candidate (a2, higher utility) keeps the slot.
    ids, u = ["a1", "a2", "b", "c"], [1.0, 0.75, 0.5 + 5e-13, 0.0]
    pool = ScoredBatch(CandidateBatch(ids, [(Candidate(i, "two_tower", "v", 0.5, r),) for r, i in enumerate(ids)]),
                       {"click": u}, u)  # fmt: skip
    policy = SlatePolicy([MmrDiversityStep(0.8, category_of=cat.category_of, catalogue=cat)])
    q, s = query(3, now=NOW), UserState(user_id="u1")
    want = policy(q, pool, s).items
    assert [i.item_id for i in want] == ["a1", "a2", "b"]
    assert slates_many(policy, [q, q], [pool, pool], [s, s]) == [want, want]


def test_stacked_ranker_features_are_each_users_own(cat) -> None:
    """The batch path's ranker features of a micro-batch's users in one pass are, user for
    user and bit for bit, the one-request features (positives, tags, impressions in and out of
    the window, unknown items, several times and surfaces, users with no candidates)."""
    from core.features import ranker_features, ranker_features_many

    rnd = random.Random(5)
    tagged = catalogue([{"item_id": f"i{n}", "category": rnd.choice(CATS), "tags": rnd.sample(["a", "b", "c", "d"], n % 3)}
                        for n in range(120)])  # fmt: skip
    states, ids, sizes, nows, surfaces, scores, sources = [], [], [], [], [], [], []
    for u in range(12):
        s = UserState(user_id=f"u{u}")
        t = NOW.timestamp() - rnd.choice([0, 5400])
        for k in range(rnd.choice([0, 3, 20])):
            s.apply(rnd.choice(["click", "like", "impression", "hide"]), f"i{rnd.randrange(130)}", t - 4000 * (20 - k), tagged)
        mine = [f"i{rnd.randrange(130)}" for _ in range(rnd.choice([0, 1, 7, 40]))]
        states.append(s), ids.extend(mine), sizes.append(len(mine)), nows.append(t)
        surfaces.append(rnd.choice(["home", "email"]))
        scores.extend(rnd.choice([rnd.random(), float("nan")]) for _ in mine)
        sources.extend(rnd.choice(["two_tower", "trending", "mystery"]) for _ in mine)
    popularity = np.array([rnd.random() * 5 for _ in ids])
    cat_m, dense_m = ranker_features_many(states, sizes, ids, tagged, popularity=popularity, now=nows, surface=surfaces,
                                          retrieval_scores=np.array(scores, dtype=np.float32), sources=sources)  # fmt: skip
    assert any(s.n_positive for s in states) and any(len(s.impressions) for s in states) and 0 in sizes
    a = 0
    for s, n, t, surface in zip(states, sizes, nows, surfaces, strict=True):
        cat_1, dense_1 = ranker_features(s, ids[a : a + n], tagged, popularity=popularity[a : a + n], now=t, surface=surface,
                                         retrieval_scores=np.array(scores[a : a + n], dtype=np.float32),
                                         sources=sources[a : a + n])  # fmt: skip
        assert np.array_equal(cat_m[a : a + n], cat_1)
        assert dense_m[a : a + n].tobytes() == dense_1.tobytes()  # NaN included
        a += n


def test_item_to_item_answers_many_users_as_it_answers_each() -> None:
    """The batch path's item-to-item source (all users' seeds at once) answers each user what
    ``retrieve`` does: the same items, scores, order (ties by item id), and seeds per item,
    for users with no history, repeated and unknown seeds, a context item and short lists."""
    import asyncio

    from retrieval.cooccurrence import ItemToItemIndex, Neighbour
    from retrieval.sources.item_to_item import ItemToItemSource

    rnd = random.Random(11)
    items = [f"i{k:03d}" for k in range(80)]
    nbrs = {i: tuple(Neighbour(j, rnd.choice([0.5, 0.25, 0.1, 1 / 3, rnd.random()]), rnd.randint(1, 4))
                     for j in rnd.sample(items, rnd.randint(0, 40)) if j != i)
            for i in items[:70]}  # fmt: skip
    src = ItemToItemSource("i2i", ItemToItemIndex(nbrs, "v"), seed_items=5, min_cooccurrence=2)
    queries, states = [], []
    for u in range(30):
        s = UserState(user_id=f"u{u}")
        s.history.extend(rnd.choice(items + ["unknown"]) for _ in range(rnd.choice([0, 1, 3, 9])))
        states.append(s)
        queries.append(query(10, user=f"u{u}", request_id=f"r{u}", now=NOW,
                             context={"item_id": rnd.choice(items)} if u % 4 == 0 else None))  # fmt: skip
    for limit in (4, 100):
        got = src.retrieve_many(queries, states, limit)
        for q, s, res in zip(queries, states, got, strict=True):
            want = asyncio.run(src.retrieve(q, s, limit))
            assert list(res.candidates) == list(want.candidates), (q.user_id, limit)
            assert res.diagnostics == want.diagnostics and res.versions == want.versions
        assert any(not r.candidates for r in got)  # no history: nothing
        assert any(len(r.candidates) == 4 for r in got) if limit == 4 else any(len(r.candidates) > 20 for r in got)


def _events(rows: list[tuple]) -> pa.Table:
    ts = [NOW - timedelta(hours=h) for _, _, _, _, h, _ in rows]
    return pa.table({"tenant_id": [r[0] for r in rows], "user_id": [r[1] for r in rows], "item_id": [r[2] for r in rows],
                     "event_type": [r[3] for r in rows], "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                     "seq": pa.array([r[5] for r in rows], pa.int64())})  # fmt: skip


def test_user_states_built_per_user_equal_the_bootstrapped_stores() -> None:
    """Every user's state, built from its events when a micro-batch asks for it, is the one
    the serving store bootstraps from the whole log by folding event after event: ties in time
    broken by arrival, type and item; an item's repeated positives counted once, with its
    category and tags; the history and the impressions cut to their last entries; another
    tenant's events ignored; a user with no events keeps their maturity limit; a live event
    folds after the user's logged ones."""
    from core.features import HISTORY_LEN, MAX_RECENT_IMPRESSIONS
    from serving.batch_stages import BatchUserStates
    from serving.user_state import OnlineUserStateStore

    rnd = random.Random(3)
    tags = ["a", "b", "c", "d", "e"]
    cat = catalogue([{"item_id": f"i{n}", "category": rnd.choice(CATS), "tags": rnd.sample(tags, rnd.randrange(4))}
                     for n in range(400)])  # fmt: skip
    kinds = ["impression", "click", "like", "hide", "dwell", "rating", "impression"]
    rows = []
    for n in range(3000):
        user = f"u{rnd.randrange(30)}"
        tenant = "globex" if n % 29 == 0 else "acme"
        # few distinct times: many ties, broken by seq (some null), then type and item
        rows.append((tenant, user, f"i{rnd.randrange(130)}", rnd.choice(kinds), rnd.randrange(40) / 4,
                     rnd.choice([None, None, rnd.randrange(5)])))  # fmt: skip
    for n in range(MAX_RECENT_IMPRESSIONS + 200):  # one heavy user: both deques overflow
        rows.append(("acme", "heavy", f"i{n % 390}", "impression", n / 100, None))
        if n < HISTORY_LEN + 60:
            rows.append(("acme", "heavy", f"i{n + 5}", "click" if n % 3 else "like", n / 100, None))
    for n in range(6):  # positives on items the catalogue lacks: history, no affinity
        rows.append(("acme", f"u{n}", f"ghost{n % 2}", "click", 2.5 + n, None))
    rnd.shuffle(rows)
    events = _events(rows)
    users = pa.table({"user_id": ["u3", "u7", "nobody"], "max_maturity": ["teen", "general", "teen"]})
    store = OnlineUserStateStore.bootstrap(cat, "acme", events, users)
    lazy = BatchUserStates(cat, "acme", events, users)
    everyone = [f"u{n}" for n in range(30)] + ["heavy", "nobody", "someone-new"]
    lazy.prepare(everyone[:10])  # one micro-batch, then users one at a time
    for u in everyone:
        assert lazy.get(u) == store.get(u), u
        # the affinity dicts in the fold's insertion order too (features read them in order)
        for name in ("category_counts", "tag_counts"):
            assert list(getattr(lazy.get(u), name).items()) == list(getattr(store.get(u), name).items()), (u, name)
    assert any(store.get(u).hidden for u in everyone) and any(store.get(u).tag_counts for u in everyone)
    assert len(store.get("heavy").impressions) == MAX_RECENT_IMPRESSIONS and len(store.get("heavy").history) == HISTORY_LEN
    assert lazy.get("nobody").max_maturity == "teen"
    assert "ghost0" in lazy.get("u0").history

    live = {"tenant_id": "acme", "user_id": "u12", "item_id": "i5", "event_type": "hide", "ts": NOW.timestamp()}
    fresh = BatchUserStates(cat, "acme", events, users)
    for s in (store, fresh):
        s.observe(live)
    assert fresh.get("u12") == store.get("u12") and "i5" in fresh.get("u12").hidden
