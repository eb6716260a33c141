"""Online/offline feature parity: the features the ranker sees online for a logged request equal
those the training dataset builder computes for the same user, items and time.

ONLINE is what a server running at the request's time would hold: the tenant runtime
(:func:`serving.assembly.build_tenant_stages`) bootstrapped from the event log restricted to events
strictly before the request (user state and ``runtime.popularity``), or bootstrapped earlier and
kept current through :meth:`TenantStages.observe`, then the scorer's own
:meth:`ranking.scorer.RankerScorer.features` (what ``RankerScorer.score`` calls inside the
pipeline) for the logged slate, each candidate with source ``logged`` and retrieval score 0 —
what the training log writes for impressions whose serving source is unknown.

OFFLINE is :func:`training.datasets.ranker_dataset`'s two shuffles run without Ray: the same
pure functions (:func:`prepare_events`, :func:`item_popularity` per item, :func:`replay_user`
per user) over groups in shuffled row order, as ``map_groups`` would hand them over.

Everything else is compared column by column: ints exactly, floats to 1e-6.

Length: the logged-request picker and both feature paths are needed together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from core.catalogue import Catalogue
from core.config import PlatformConfig, read_yaml
from core.contracts import Candidate, MergedCandidate, Query
from core.eventlog import EventLog
from core.experiments import DEFAULT_ARM, NO_EXPERIMENT
from core.features import CAT_FEATURES, DENSE_FEATURES
from core.schema import EVENT_SCHEMA, POSITIVE_EVENT_TYPES
from datagen.synth import PERIOD_START
from serving.assembly import TenantData, TenantModels, build_tenant_stages
from serving.stages import TenantStages
from tests.unit.serving_fixtures import NOW, catalogue
from training.datasets import item_popularity, prepare_events, replay_user

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"
N_RANDOM = 3
_col = DENSE_FEATURES.index


class _StubRanker:
    """Satisfies :class:`ranking.scorer.RankerModel`, so the runtime wraps it in the real
    :class:`RankerScorer` (features are what is under test, not the model)."""

    tasks = ("click", "like", "hide")

    def predict(self, cat, dense):
        return {t: np.zeros(len(cat)) for t in self.tasks}


@dataclass(frozen=True)
class LoggedRequest:
    why: str
    request_id: str
    user_id: str
    surface: str
    ts: datetime
    items: tuple[str, ...]  # impressed items in slate position order


def _config() -> PlatformConfig:
    """configs/platform.yaml with only the trending source per surface: ranker features do not
    depend on retrieval, and this skips building the item-to-item index per runtime."""
    raw = read_yaml(ROOT / "configs/platform.yaml")
    for tenant in raw["tenants"]:
        for surface in tenant["surfaces"].values():
            surface["sources"] = [
                {"name": "trending", "kind": "trending", "quota": 10, "timeout_ms": 5000}
            ]
            surface.pop("mode", None)  # a precomputed surface needs its source: served online here
    return PlatformConfig.model_validate(raw)


# ------------------------------------------------------------------------------- offline side


def _groups(table: dict[str, np.ndarray], key: str):
    keys = table[key]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    for idx in np.split(order, bounds):
        yield {k: v[idx] for k, v in table.items()}


def offline_ranker_examples(
    log: pa.Table, catalogue: Catalogue, users: set[str], seed: int = 0
) -> dict[str, np.ndarray]:
    """``ranker_dataset(events, catalogue)`` without Ray, restricted (after the item pass,
    which needs every user's positives) to ``users``. Rows are shuffled first: Ray's shuffle
    does not keep log order, and the replay must not depend on it."""
    prepared = prepare_events(log)
    cols = {c: prepared[c].to_numpy(zero_copy_only=False) for c in prepared.column_names}
    perm = np.random.default_rng(seed).permutation(prepared.num_rows)
    cols = {k: v[perm] for k, v in cols.items()}
    parts = [item_popularity(g) for g in _groups(cols, "item_id")]
    with_pop = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = np.isin(with_pop["user_id"], sorted(users))
    mine = {k: v[keep] for k, v in with_pop.items()}
    out = [replay_user(g, catalogue, ranker=True) for g in _groups(mine, "user_id")]
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


def offline_rows(examples: dict[str, np.ndarray], req: LoggedRequest):
    """The builder's ``(cat, dense)`` rows for ``req``'s slate, in slate order."""
    mask = examples["request_id"] == req.request_id
    row_of = {
        str(i): r for i, r in zip(examples["item_id"][mask], np.flatnonzero(mask), strict=True)
    }
    assert sorted(row_of) == sorted(req.items), f"{req.why}: builder rows != logged slate"
    rows = [row_of[i] for i in req.items]
    ts = examples["ts"][rows]
    assert (ts == req.ts.timestamp()).all(), f"{req.why}: example ts != request ts"
    return examples["cat"][rows], examples["dense"][rows]


# -------------------------------------------------------------------------------- online side


def serving_runtime(world, events: pa.Table) -> TenantStages:
    return build_tenant_stages(
        world["config"],
        TENANT,
        TenantData(world["cat"], events, world["users"]),
        TenantModels(rankers={"parity": _StubRanker()}),
    )


def events_before(log: pa.Table, ts: datetime) -> pa.Table:
    return log.filter(pc.less(log["ts"], pa.scalar(ts, EVENT_SCHEMA.field("ts").type)))


def online_features(rt: TenantStages, req: LoggedRequest):
    """What the pipeline's ranker stage computes: ``plan.ranker`` is the runtime's
    :class:`RankerScorer` (sharing ``rt.popularity``), the state is ``rt.user_state``."""
    scorer = rt.plans[(req.surface, NO_EXPERIMENT, DEFAULT_ARM)].ranker
    assert scorer is not None and scorer.popularity is rt.popularity
    query = Query(
        request_id=req.request_id,
        tenant_id=TENANT,
        user_id=req.user_id,
        surface=req.surface,
        k=len(req.items),
        now=req.ts,
    )
    candidates = [
        MergedCandidate(i, (Candidate(i, "logged", "log", 0.0, r),))
        for r, i in enumerate(req.items)
    ]
    return scorer.features(query, rt.user_state(req.user_id), candidates)


# ------------------------------------------------------------------------------- comparison


def assert_same_features(req: LoggedRequest, online, offline) -> None:
    (cat_on, dense_on), (cat_off, dense_off) = online, offline
    assert cat_on.shape == cat_off.shape == (len(req.items), len(CAT_FEATURES))
    assert dense_on.shape == dense_off.shape == (len(req.items), len(DENSE_FEATURES))
    problems = []
    for j, name in enumerate(CAT_FEATURES):
        if not np.array_equal(cat_on[:, j], cat_off[:, j]):
            problems.append(
                f"cat {name}: online {cat_on[:, j].tolist()} offline {cat_off[:, j].tolist()}"
            )
    for j, name in enumerate(DENSE_FEATURES):
        on = dense_on[:, j]
        if name == "retrieval_score":
            # No two-tower here: offline fills 0 ("no retrieval model"), online NaN ("no
            # two-tower score for this candidate"); the model reads both as its training mean
            # (a constant feature is pinned; NaN -> mean). With a two-tower both are q . v.
            on = np.nan_to_num(on, nan=0.0)
        if not np.allclose(on, dense_off[:, j], rtol=0.0, atol=1e-6):
            problems.append(
                f"dense {name}: online {dense_on[:, j].tolist()} offline {dense_off[:, j].tolist()}"
            )
    assert not problems, (
        f"{req.why} (request {req.request_id}, user {req.user_id}, {req.ts.isoformat()}):\n  "
        + "\n  ".join(problems)
    )


# ------------------------------------------------------------------------------ data & picks


def logged_requests(log: pa.Table, users: pa.Table) -> dict[str, LoggedRequest]:
    """Impression groups by request_id, plus per-request context for picking."""
    rows = log.select(
        ["user_id", "item_id", "event_type", "ts", "surface", "request_id", "position"]
    )
    rows = rows.sort_by([("ts", "ascending"), ("position", "ascending")]).to_pylist()
    created = dict(zip(users["user_id"].to_pylist(), users["created_at"].to_pylist(), strict=True))
    slates: dict[str, dict] = {}
    positives: dict[str, int] = {}
    seen_user: set[str] = set()
    last_shown: dict[tuple[str, str], datetime] = {}
    for r in rows:
        u = r["user_id"]
        if r["event_type"] == "impression":
            s = slates.get(r["request_id"])
            if s is None:
                s = slates[r["request_id"]] = {
                    **r,
                    "items": [],
                    "prior_positives": positives.get(u, 0),
                    "first_event": u not in seen_user,
                    "repeat": False,
                }
            s["items"].append(r["item_id"])
            prev = last_shown.get((u, r["item_id"]))
            s["repeat"] |= (
                prev is not None and r["ts"] - prev < timedelta(hours=24) and prev < r["ts"]
            )
            last_shown[(u, r["item_id"])] = r["ts"]
        elif r["event_type"] in POSITIVE_EVENT_TYPES:
            positives[u] = positives.get(u, 0) + 1
        seen_user.add(u)

    def req(why, s):
        return LoggedRequest(
            why, s["request_id"], s["user_id"], s["surface"], s["ts"], tuple(s["items"])
        )

    all_slates = list(slates.values())
    picks: dict[str, LoggedRequest] = {}
    users_used: set[str] = set()

    def pick(why, candidates):
        for s in candidates:
            if s["user_id"] not in users_used:
                picks[why] = req(why, s)
                users_used.add(s["user_id"])
                return
        raise AssertionError(f"tiny data has no request for {why!r}")

    # A user who arrived during the period, on their very first request (nothing to know).
    pick(
        "cold_start",
        [s for s in all_slates if s["first_event"] and created[s["user_id"]] > PERIOD_START],
    )
    # The request with the longest history before it (affinities dense).
    pick("long_history", sorted(all_slates, key=lambda s: -s["prior_positives"]))
    # Items already shown to the user within the frequency window (log_recent_impressions > 0).
    pick("repeat_impressions", [s for s in all_slates if s["repeat"] and s["prior_positives"]])
    pick(
        "item_page", [s for s in all_slates if s["surface"] == "item_page" and s["prior_positives"]]
    )
    rng = np.random.default_rng(7)
    others = [all_slates[k] for k in rng.permutation(len(all_slates))]
    for n in range(N_RANDOM):
        pick(f"random_{n}", others)
    return picks


@pytest.fixture(scope="module")
def world(tiny_data):
    data = str(tiny_data)
    log = EventLog(data + "/events").read(TENANT)
    users = ds.dataset(data + "/users", partitioning="hive").to_table()
    users = users.filter(pc.equal(users["tenant_id"], TENANT))
    cat = Catalogue.load(data, TENANT)
    picks = logged_requests(log, users)
    examples = offline_ranker_examples(log, cat, {r.user_id for r in picks.values()})
    return {
        "log": log,
        "users": users,
        "cat": cat,
        "config": _config(),
        "picks": picks,
        "examples": examples,
    }


# ------------------------------------------------------------------------------------ tests


def test_picked_requests_exercise_the_features(world):
    """Guards the parity test against comparing only zeros."""
    picks = world["picks"]
    assert len({r.user_id for r in picks.values()}) == len(picks) >= 6
    off = {why: offline_rows(world["examples"], r) for why, r in picks.items()}
    assert (off["cold_start"][1][:, _col("history_missing")] == 1.0).all()
    # Longer than the two-tower's recent window (its first 20 history slots of 100).
    assert (off["long_history"][1][:, _col("log_user_positives")] > np.log1p(20)).all()
    assert (off["repeat_impressions"][1][:, _col("log_recent_impressions")] > 0).any()
    dense = np.concatenate([d for _, d in off.values()])
    assert (dense[:, _col("log_popularity")] > 0).mean() > 0.5
    assert (dense[:, _col("category_affinity")] > 0).any() and (
        dense[:, _col("tag_affinity")] > 0
    ).any()
    assert {r.surface for r in picks.values()} == {"home", "item_page"}


@pytest.mark.parametrize(
    "why",
    ["cold_start", "long_history", "repeat_impressions", "item_page"]
    + [f"random_{n}" for n in range(N_RANDOM)],
)
def test_online_features_equal_training_features(world, why):
    req = world["picks"][why]
    rt = serving_runtime(world, events_before(world["log"], req.ts))
    assert_same_features(req, online_features(rt, req), offline_rows(world["examples"], req))


def test_live_observed_state_equals_training_features(world):
    """A server bootstrapped a day before the latest picked request and kept current by
    ``runtime.observe`` (the live path) sees the same features as one bootstrapped at the
    request, and as training."""
    log = world["log"]
    reqs = sorted(world["picks"].values(), key=lambda r: r.ts)
    start = reqs[-1].ts - timedelta(days=1)
    rt = serving_runtime(world, events_before(log, start))
    live = log.filter(pc.greater_equal(log["ts"], pa.scalar(start, EVENT_SCHEMA.field("ts").type)))
    pending = iter(live.to_pylist())  # EventLog.read sorts by ts
    event = next(pending, None)
    checked = 0
    for req in reqs:
        while event is not None and event["ts"] < req.ts:
            rt.observe(event)
            event = next(pending, None)
        if req.ts >= start:
            assert_same_features(
                req, online_features(rt, req), offline_rows(world["examples"], req)
            )
            checked += 1
    assert checked >= 1


def test_offline_features_ignore_events_at_or_after_the_request(world):
    """Point in time: events at the request's ts (its own click, another request's impression)
    or later do not change the builder's features for that request — but do reach later ones."""
    req = world["picks"]["long_history"]
    log, cat = world["log"], world["cat"]
    before = offline_rows(world["examples"], req)
    template = log.filter(pc.equal(log["request_id"], req.request_id)).slice(0, 1).to_pylist()[0]
    other = next(i for i in cat.item_ids if i not in req.items)
    t = req.ts

    def event(n, item, etype, ts, request_id, surface=req.surface):
        return {
            **template,
            "event_id": f"parity-{n}",
            "item_id": item,
            "event_type": etype,
            "ts": ts,
            "request_id": request_id,
            "surface": surface,
        }

    extra = [
        # At the request's ts: a click on a shown item (the label, never the feature; nor may
        # it count towards that item's popularity) and an impression of another request.
        event(0, req.items[0], "click", t, req.request_id),
        event(1, req.items[1], "like", t, req.request_id),
        event(2, other, "impression", t, "parity-same-ts", "item_page"),
        # After it: positives, impressions, a hide; and a later request to show they count.
        event(3, req.items[2], "click", t + timedelta(microseconds=1), req.request_id),
        event(4, req.items[0], "impression", t + timedelta(seconds=30), "parity-later"),
        event(5, other, "dwell", t + timedelta(seconds=31), "parity-later"),
        event(6, req.items[3], "hide", t + timedelta(seconds=32), req.request_id),
    ]
    augmented = pa.concat_tables([log, pa.Table.from_pylist(extra, schema=EVENT_SCHEMA)])
    examples = offline_ranker_examples(augmented, cat, {req.user_id}, seed=1)
    assert_same_features(req, offline_rows(examples, req), before)
    # The at-ts click became the label, so the extra events were really replayed ...
    mask = (examples["request_id"] == req.request_id) & (examples["item_id"] == req.items[0])
    assert examples["click"][mask].tolist() == [1.0]
    # ... and the later request does see what happened before it.
    later = examples["request_id"] == "parity-later"
    n_before = before[1][0, _col("log_user_positives")]
    assert examples["dense"][later][0, _col("log_user_positives")] > n_before
    assert examples["dense"][later][0, _col("log_recent_impressions")] > 0


def test_events_sharing_a_timestamp_fold_in_the_same_order_online_and_offline():
    """Second-granularity logs (imports) put several events of one user at one ts. How many
    distinct interactions they make depends on fold order (UserState.apply collapses repeated
    positives on the same item), so the serving bootstrap and the training replay must order
    them alike: (ts, event_type, item_id), whatever order the log or the shuffle gives.

    Live events (``observe``) fold in arrival order; exact same-ts parity holds only for state
    bootstrapped from the log."""
    cat = catalogue(
        [
            {"item_id": "a", "category": "x", "tags": ["p"]},
            {"item_id": "b", "category": "y", "tags": ["q"]},
            {"item_id": "c", "category": "y", "tags": ["p", "q"]},
        ]
    )
    t0 = NOW - timedelta(hours=2)
    t1 = NOW - timedelta(hours=1)
    spec = [
        # Previous interaction ended on "a"; then one second with a, b, a again (like, click).
        ("u", "a", "click", t0 - timedelta(seconds=1), None),
        ("u", "a", "like", t0, None),
        ("u", "b", "click", t0, None),
        ("u", "a", "click", t0, None),
        ("u", "c", "dwell", t0, None),
        ("u", "b", "impression", t0, "r0"),
        ("u", "c", "impression", t0, "r0"),
        ("u", "a", "impression", t1, "r1"),
        ("u", "b", "impression", t1, "r1"),
        ("u", "c", "impression", t1, "r1"),
    ]
    req = LoggedRequest("same_ts", "r1", "u", "home", t1, ("a", "b", "c"))
    world = {"config": _config(), "cat": cat, "users": None}
    for seed in range(4):  # several log orders (event_id order decides ties in the log)
        order = np.random.default_rng(seed).permutation(len(spec))
        log = pa.Table.from_pylist(
            [
                {
                    "event_id": f"e{n}",
                    "tenant_id": TENANT,
                    "user_id": spec[k][0],
                    "item_id": spec[k][1],
                    "event_type": spec[k][2],
                    "value": 1.0,
                    "ts": spec[k][3],
                    "surface": "home",
                    "request_id": spec[k][4],
                }
                for n, k in enumerate(order)
            ],
            schema=EVENT_SCHEMA,
        )
        rt = serving_runtime(world, events_before(log, req.ts))
        offline = offline_rows(offline_ranker_examples(log, cat, {"u"}, seed=seed), req)
        assert_same_features(req, online_features(rt, req), offline)


def test_popularity_values_are_each_items_value() -> None:
    """The ranker's ``log_popularity`` column: :meth:`PopularityCounter.values` over a request's
    candidates is :meth:`PopularityCounter.value` item by item (absent items 0, an event after
    ``now`` not decayed forward)."""
    from core.features import PopularityCounter

    counter = PopularityCounter(half_life_hours=5.0)
    rng = np.random.default_rng(7)
    for _ in range(400):
        counter.add(f"i{rng.integers(0, 50)}", float(rng.integers(0, 100_000)), float(rng.random()))
    ids = [f"i{k}" for k in rng.integers(0, 80, 300)]
    for now in (50_000.0, 200_000.0):
        want = np.array([counter.value(i, now) for i in ids])
        np.testing.assert_allclose(counter.values(ids, now), want, rtol=1e-12, atol=0)
    assert counter.values([], 1.0).shape == (0,)


def test_popularity_read_by_catalogue_row_is_the_same_as_by_id() -> None:
    """The ranker reads popularity by the candidates' catalogue rows (:meth:`PopularityCounter.align`):
    bit for bit what reading by id gives, for items never seen, items outside the catalogue,
    and after live events arrive (the rows follow :meth:`PopularityCounter.add`), across a
    catalogue swap."""
    from core.features import PopularityCounter
    from tests.unit.serving_fixtures import catalogue

    old, new = (catalogue([{"item_id": f"i{k}"} for k in range(n)]) for n in (60, 70))
    counter = PopularityCounter(half_life_hours=5.0)
    rng = np.random.default_rng(11)

    def events(n: int) -> None:  # items i0..i89: some outside both catalogues
        for _ in range(n):
            counter.add(f"i{rng.integers(0, 90)}", float(rng.integers(0, 100_000)), float(rng.random()))

    def check() -> None:
        for cat in (old, new):
            ids = [f"i{k}" for k in rng.integers(0, 100, 300)]
            for now in (50_000.0, 200_000.0):
                by_id = counter.values(ids, now)
                by_row = counter.values(ids, now, rows=cat.index_of(ids), catalogue=cat)
                np.testing.assert_array_equal(by_row, by_id)
                assert (by_id > 0).any() and (by_id == 0).any()

    events(300)
    counter.align(old)
    check()  # the new catalogue's view is built on first read, the old one kept beside it
    events(200)  # live events after both views exist
    check()
