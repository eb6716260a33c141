"""The ingress's small parts without Ray: hot-swap slots, decision forwarding and its drop
counting, recent decisions, event fan-out, and the handle-backed stages (fake handles)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest

from core.contracts import Candidate, MergedCandidate, Query
from deployments.broadcast import EventBroadcast
from deployments.decision_log import DecisionForwarder
from deployments.hot_swap import Refused, RuntimeSlot
from deployments.recent import RecentDecisions
from deployments.settings import Placement
from deployments.stages import HandleStages, LocalTwoTowerSource, RemoteRanker, RemoteSource
from retrieval.sources.trending import TrendingSourceConfig
from serving.user_state import ServingUserState

NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)


def _query(tenant: str = "acme") -> Query:
    return Query("r1", tenant, "u1", "home", 5, NOW)


class _Remote:
    """A fake ``handle.method``: ``.remote(*args)`` returns an awaitable answer."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def remote(self, *args):
        self.calls.append(args)

        async def reply():
            if isinstance(self.answer, BaseException):
                raise self.answer
            return self.answer(*args) if callable(self.answer) else self.answer

        return reply()


class _Handle:
    def __init__(self, **methods):
        for name, answer in methods.items():
            setattr(self, name, _Remote(answer))


# ---------------------------------------------------------------------------------- hot swap


def test_runtime_slot_swaps_refuses_and_keeps_serving() -> None:
    alias = {"key": "v1"}
    events = []

    def load(key):
        if key == "bad":
            raise Refused("tower and index do not match")
        if key == "boom":
            raise OSError("disk")
        return f"runtime-{key}"

    slot = RuntimeSlot("t", lambda: alias["key"], load, lambda o, k, e: events.append((o, k)))
    assert asyncio.run(slot.refresh()) and slot.runtime == "runtime-v1"
    assert not asyncio.run(slot.refresh())  # alias unchanged: no reload
    alias["key"] = "bad"
    assert not asyncio.run(slot.refresh()) and slot.runtime == "runtime-v1"
    assert not asyncio.run(slot.refresh())  # a refused key is not retried every poll
    alias["key"] = "boom"
    assert not asyncio.run(slot.refresh()) and slot.runtime == "runtime-v1"
    alias["key"] = "v2"
    assert asyncio.run(slot.refresh()) and slot.runtime == "runtime-v2" and slot.key == "v2"
    assert events == [("swapped", "v1"), ("refused", "bad"), ("failed", "boom"), ("swapped", "v2")]


# ---------------------------------------------------------------------------------- decisions


def test_forwarder_ships_in_batches_and_counts_drops() -> None:
    shipped = []
    handle = _Handle(record=lambda batch: shipped.append(list(batch)) or 0)

    async def go():
        fwd = DecisionForwarder(handle, max_pending=3, batch_size=2, interval_s=0.0)
        accepted = [fwd.submit(("acme", f"r{i}", NOW, b"{}")) for i in range(5)]
        fwd.ensure_running()
        for _ in range(20):
            await asyncio.sleep(0)
        return fwd, accepted

    fwd, accepted = asyncio.run(go())
    assert accepted == [True, True, True, False, False] and fwd.dropped == 2
    assert [len(b) for b in shipped] == [2, 1]  # three kept records, at most two per call



def test_forwarder_keeps_each_shipment_under_the_transport_limit() -> None:
    """A busy loop gathers many records before the shipper runs; one call carrying them all
    would be over Serve's 4 MiB gRPC message limit and lost whole. Each call stays under
    ``batch_bytes`` (a record over it goes alone), and every record is shipped once, in order."""
    shipped = []
    handle = _Handle(record=lambda batch: shipped.append([r[1] for r in batch]) or 0)
    sizes = [400, 400, 400, 1500, 100, 100, 300]

    async def go():
        fwd = DecisionForwarder(handle, batch_size=256, interval_s=0.0, batch_bytes=1000)
        for i, n in enumerate(sizes):
            fwd.submit(("acme", f"r{i}", NOW, b"x" * n))
        fwd.ensure_running()
        for _ in range(20):
            await asyncio.sleep(0)

    asyncio.run(go())
    assert shipped == [["r0", "r1"], ["r2"], ["r3"], ["r4", "r5", "r6"]]
    from ray.serve._private.constants import RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH as limit

    assert DecisionForwarder(handle).batch_bytes <= limit // 2  # room for the call's framing

def test_local_decision_log_writes_and_finds_another_replicas_records(tmp_path) -> None:
    """``placement.decision_log: ingress``: each replica writes its own records to the shared
    log; another replica finds them there once written (not before); unknown ids are
    rate-limited per replica; a full queue drops and counts; ``close`` writes what is queued."""
    from core.decision_log import DecisionLogWriter, new_request_id
    from deployments.decision_log import LocalDecisionLog
    from tests.unit.explain_samples import sample_record

    uri = str(tmp_path / "decisions")
    one = LocalDecisionLog(uri, flush_interval_s=0.05)
    other = LocalDecisionLog(uri, miss_rate_per_s=0.001, miss_burst=2, flush_interval_s=0.05)
    now = datetime.now(UTC)  # lookups reach back 7 days from the real clock

    def record():
        return sample_record(request_id=new_request_id(now)).model_copy(update={"at": now})

    records = [record() for _ in range(3)]
    for r in records:
        assert one.submit((r.tenant_id, r.request_id, r.at, r.model_dump_json().encode()))
    one.ensure_running()  # the writer's thread runs already
    assert one.writer.flush(10.0)
    tenant = records[0].tenant_id
    for r in records:
        found, wait = asyncio.run(other.lookup(tenant, r.request_id))
        assert wait == 0 and found == r
    assert asyncio.run(other.lookup("another-tenant", records[0].request_id))[0] is None
    # Unknown ids: the budget (2) is spent, then refused with a wait, before any read.
    misses = [asyncio.run(other.lookup(tenant, new_request_id(now))) for _ in range(3)]
    assert [m[0] for m in misses] == [None] * 3 and misses[0][1] == misses[1][1] == 0 < misses[2][1]
    # A full queue drops (and counts) instead of blocking the request. The tiny writer's thread
    # does not consume (it would take each record as it arrives, whenever the scheduler let it
    # run between two submits: the drop count depended on timing).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DecisionLogWriter, "_run", lambda self: None)
        tiny = LocalDecisionLog(str(tmp_path / "tiny"), queue_size=1, flush_interval_s=5.0)
    kept = [tiny.submit((tenant, new_request_id(now), now, b"{}")) for _ in range(3)]
    assert kept == [True, False, False] and tiny.dropped == 2
    # Graceful shutdown: what is queued is written.
    last = record()
    one.submit((last.tenant_id, last.request_id, last.at, last.model_dump_json().encode()))
    one.close(5.0)
    reader = LocalDecisionLog(uri)  # `other` has spent its unknown-id budget
    assert asyncio.run(reader.lookup(tenant, last.request_id))[0] == last
    for log in (other, reader):
        log.close(1.0)
    tiny.close(0.01)  # its one queued record is never written: nothing consumes it


def test_recent_decisions_are_bounded_and_per_tenant() -> None:
    from tests.unit.explain_samples import sample_record

    recent = RecentDecisions(max_records=2)
    records = [sample_record(request_id=f"r{i}") for i in range(3)]
    for r in records:
        assert recent.add(r) == r.model_dump_json().encode()
    assert len(recent) == 2 and recent.get(records[0].tenant_id, "r0") is None  # oldest out
    assert recent.get(records[0].tenant_id, "r2") is not None
    assert recent.get("someone-else", "r2") is None
    assert recent.by_user.recent(records[0].tenant_id, records[0].user_id)[:2] == ["r2", "r1"]


# ---------------------------------------------------------------------------------- fan-out


class _Broadcast:
    def __init__(self, answers):
        self.answers = answers

    async def results_async(self, timeout_s, return_exceptions):
        return self.answers


class _StateHandle:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def broadcast(self, method, *args):
        self.calls.append((method, *args))
        return _Broadcast(self.answers)


def test_event_broadcast_reaches_stateful_deployments_and_reports_failures() -> None:
    ok, broken, ranker = _StateHandle([1, 1]), _StateHandle([RuntimeError("gone")]), _StateHandle([1])
    own = _StateHandle([1])
    fan = EventBroadcast({"UserState": ok, "CandidateSources": broken, "Ranker": ranker,
                          "DecisionLog": _StateHandle([1])}, lambda: own, 1.0)  # fmt: skip
    events = [{"event_id": "e1", "event_type": "hide"}]
    failed = asyncio.run(fan.push("acme", events))
    assert failed == ["CandidateSources"]
    for h in (ok, broken, ranker, own):
        assert h.calls == [("observe", "acme", events)]


# ---------------------------------------------------------------------------------- stages


def test_remote_source_rebuilds_the_result_with_the_replica_versions() -> None:
    handle = _Handle(retrieve_columns=(["i1", "i2"], [0.9, 0.5], {"seeds": 1}, "tt/ix",
                                       {"two_tower": "tt", "ann_index": "ix"}, None))  # fmt: skip
    cfg = TrendingSourceConfig(name="trend", kind="trending")
    state = ServingUserState(user_id="u1", history=["i0"], hidden={"secret"})
    res = asyncio.run(RemoteSource(handle, cfg, "acme", "home").retrieve(_query(), state, 10))
    assert [(c.item_id, c.rank, c.source) for c in res.candidates] == [("i1", 0, "trend"),
                                                                        ("i2", 1, "trend")]  # fmt: skip
    assert res.versions == {"two_tower": "tt", "ann_index": "ix"} and res.version == "tt/ix"
    sent_state = handle.retrieve_columns.calls[0][4]
    assert sent_state.history == ["i0"] and not sent_state.hidden  # hides stay in the ingress


def test_remote_ranker_composes_utilities_and_reports_the_version() -> None:
    probs = {"click": np.array([0.5, 0.1]), "like": np.array([0.1, 0.1]), "hide": np.array([0.0, 0.5])}
    handle = _Handle(score_columns=lambda *a: (probs, "rk-7"))
    cands = [MergedCandidate(i, (Candidate(i, "two_tower", "v", 0.3, r),)) for r, i in
             enumerate(["a", "b"])]  # fmt: skip
    weights = {"click": 1.0, "like": 2.0, "hide": -4.0}
    result = asyncio.run(RemoteRanker(handle, "rk-7").score(_query(), None, cands, weights))
    assert result.version == "rk-7" and [s.item_id for s in result.scored] == ["a", "b"]
    assert result.scored[0].utility == pytest.approx(0.7)
    assert result.scored[1].utility == pytest.approx(0.1 + 0.2 - 2.0)
    assert handle.score_columns.calls[0][-2] == "rk-7"  # the pinned version travels


def test_handle_stages_follow_the_placement() -> None:
    handles = {"TwoTowerRetriever": object(), "CandidateSources": object(), "Ranker": object(),
               "UserState": _Handle(get="state")}  # fmt: skip
    split = HandleStages("acme", Placement(user_state="deployment", sources="deployment"),
                         handles, default_ranker="production")  # fmt: skip
    local = HandleStages("acme", Placement(), handles, default_ranker="production")
    two_tower = TrendingSourceConfig(name="tt", kind="trending").model_copy(update={"kind": "two_tower"})
    trend = TrendingSourceConfig(name="trend", kind="trending")
    assert split.source(two_tower, "home")._handle is handles["TwoTowerRetriever"]
    assert split.source(trend, "home")._handle is handles["CandidateSources"]
    assert local.source(trend, "home") is None and local.user_state() is None
    assert local.source(two_tower, "home")._handle is handles["TwoTowerRetriever"]
    assert asyncio.run(split.user_state()("u1")) == "state"
    assert split.ranker(None)._pinned is None and split.ranker("production")._pinned is None
    assert split.ranker("rk-arm")._pinned == "rk-arm"
    # The two-tower's home is its own choice: `sources: ingress` does not move it.
    assert Placement(sources="ingress").deployment_for("two_tower") == "TwoTowerRetriever"
    in_ingress = Placement(source_kinds={"two_tower": "ingress"})
    assert in_ingress.two_tower_in_ingress and in_ingress.deployment_for("two_tower") is None
    with pytest.raises(ValueError, match="no two-tower slots"):
        HandleStages("acme", in_ingress, handles, default_ranker="production").source(two_tower, "home")
    slots = _Slots(None)
    stage = HandleStages("acme", in_ingress, handles, "production", two_tower=slots).source(two_tower, "home")
    assert isinstance(stage, LocalTwoTowerSource) and stage.name == "tt"


class _Slots:
    """A fake :class:`deployments.model_slots.TwoTowerSlots`: the runtime a test sets."""

    def __init__(self, runtime):
        self.runtime = runtime

    def source(self, tenant):
        return self.runtime


def _two_tower(version: str, vectors: np.ndarray):
    from retrieval.index import BruteForceIndex
    from retrieval.sources import TwoTowerArtifacts, TwoTowerSource
    from tests.unit.serving_fixtures import catalogue
    from tests.unit.test_sources import DotProductModel

    cat = catalogue([{"item_id": f"i{n}"} for n in range(len(vectors))])
    index = BruteForceIndex(vectors, cat.item_ids, f"tower-{version}")
    art = TwoTowerArtifacts(DotProductModel(vectors), index, f"tower-{version}", f"index-{version}",
                            index.item_tower_version)  # fmt: skip
    return TwoTowerSource("two_tower", art, cat)


def test_two_tower_in_the_ingress_answers_as_the_retriever_and_follows_swaps() -> None:
    from retrieval.sources import SourceUnavailable

    vecs = np.eye(4, dtype=np.float32)
    vecs[1] = [0.9, 0.1, 0, 0]
    old = _two_tower("v1", vecs)
    state = ServingUserState(user_id="u1")
    state.history.append("i0")
    slots = _Slots(old)
    cfg = TrendingSourceConfig(name="tt", kind="trending").model_copy(update={"kind": "two_tower"})
    stage = LocalTwoTowerSource(slots, cfg, "acme")
    got = asyncio.run(stage.retrieve(_query(), state, 3))
    # The same answer the TwoTowerRetriever deployment gives (its columns, rebuilt by RemoteSource).
    ids, scores, vector = old.retrieve_columns(_query(), state, 3)
    handle = _Handle(retrieve_columns=lambda *a: (ids, scores, {"history_len": 1}, old.version,
                                                  dict(old.artifacts.versions), vector))  # fmt: skip
    remote = asyncio.run(RemoteSource(handle, cfg, "acme", "home").retrieve(_query(), state, 3))
    assert got == remote and [c.item_id for c in got.candidates] == ["i0", "i1", "i2"]
    # The query vector searched with travels with the answer, for the ranker's feature.
    assert remote.query_vector[0] == got.query_vector[0] == "tower-v1"
    np.testing.assert_array_equal(remote.query_vector[1], got.query_vector[1])
    assert got.versions == {"two_tower": "tower-v1", "ann_index": "index-v1"}
    # A swap is seen by the next request; nothing loaded is a source failure, not a crash.
    slots.runtime = _two_tower("v2", vecs[::-1].copy())
    assert asyncio.run(stage.retrieve(_query(), state, 3)).versions["two_tower"] == "tower-v2"
    slots.runtime = None
    with pytest.raises(SourceUnavailable):
        asyncio.run(stage.retrieve(_query(), state, 3))


class _RankerSlots:
    """:class:`deployments.model_slots.RankerSlots` without the registry: the production
    scorer a test sets, and the real pinned-version cache over ``load``."""

    def __init__(self, production, load):
        from deployments.model_slots import PinnedVersions

        self.production = production
        self.pinned = PinnedVersions(load, max_versions=2)

    def runtime(self, tenant):
        return self.production

    async def scorer(self, tenant, version):
        from deployments.model_slots import ranker_for_version

        return await ranker_for_version(self.production, self.pinned, tenant, version)


def test_ranker_in_the_ingress_scores_as_the_library_ranker_and_serves_pinned_versions() -> None:
    from core.features import PopularityCounter
    from ranking.model import MultiTaskRanker
    from ranking.scorer import RankerScorer
    from tests.unit.serving_fixtures import catalogue

    cat = catalogue([{"item_id": f"i{n}", "category": "books" if n % 2 else "news"} for n in range(6)])

    def load(tenant, version):
        if version == "rk-missing":
            raise FileNotFoundError(f"no ranker {version}")
        loads.append(version)
        seed = int(version.rsplit("-", 1)[1])
        import torch

        torch.manual_seed(seed)
        model = MultiTaskRanker.from_config({"n_items": len(cat), "n_categories": len(cat.categories)})
        return RankerScorer(model, cat, PopularityCounter(), version=version)

    loads: list[str] = []
    scorer = load("acme", "rk-1")
    cands = [MergedCandidate(i, (Candidate(i, "two_tower", "v", 0.9 - r / 10, r),))
             for r, i in enumerate(["i3", "i1", "i0"])]  # fmt: skip
    weights = {"click": 1.0, "like": 2.0, "hide": -4.0}
    state = ServingUserState(user_id="u1")
    slots = _RankerSlots(scorer, load)
    handles = {"DecisionLog": object()}
    stages = HandleStages("acme", Placement(ranker="ingress"), handles, "production", ranker=slots)
    got = asyncio.run(stages.ranker(None).score(_query(), state, cands, weights))
    want = asyncio.run(scorer.score(_query(), state, cands, weights))
    assert got == want and got.version == "rk-1"
    # An experiment arm pinned to another version is scored by that version, loaded once
    # however many requests ask for it at the same time.
    async def arm(n):
        return await asyncio.gather(*(stages.ranker("rk-2").score(_query(), state, cands, weights)
                                      for _ in range(n)))  # fmt: skip

    answers = asyncio.run(arm(5))
    pinned = load("acme", "rk-2")
    assert {a.version for a in answers} == {"rk-2"} and loads.count("rk-2") == 2  # 1 + ours
    assert answers[0] == asyncio.run(pinned.score(_query(), state, cands, weights)) != got
    # A pinned version that cannot be loaded fails the ranker stage (the pipeline records it).
    with pytest.raises(FileNotFoundError, match="rk-missing"):
        asyncio.run(stages.ranker("rk-missing").score(_query(), state, cands, weights))
    slots.production = None
    with pytest.raises(RuntimeError, match="no ranker loaded"):
        asyncio.run(stages.ranker(None).score(_query(), state, cands, weights))
    with pytest.raises(ValueError, match="no ranker slots"):
        HandleStages("acme", Placement(ranker="ingress"), handles, "production").ranker(None)


def test_an_arm_pinning_a_two_tower_pair_retrieves_with_it() -> None:
    from deployments.model_slots import PinnedVersions

    vecs = np.eye(4, dtype=np.float32)
    production, arm = _two_tower("prod", vecs), _two_tower("arm", vecs[::-1].copy())
    loads = []

    class Slots(_Slots):  # production as the fake's runtime, the arm's pair through the real cache
        def __init__(self):
            super().__init__(production)
            self.pinned = PinnedVersions(lambda t, key: loads.append(key) or arm)

        async def pinned_source(self, tenant, pin):
            return await self.pinned.get(tenant, tuple(pin))

    state = ServingUserState(user_id="u1")
    state.history.append("i0")
    cfg = TrendingSourceConfig(name="tt", kind="trending").model_copy(update={"kind": "two_tower"})
    in_ingress = Placement(source_kinds={"two_tower": "ingress"})
    stages = HandleStages("acme", in_ingress, {}, "production", two_tower=Slots())
    pin = ("tower-arm", "index-arm")
    got = asyncio.run(stages.source(cfg, "home", pin).retrieve(_query(), state, 3))
    assert got.versions == {"two_tower": "tower-arm", "ann_index": "index-arm"} and loads == [pin]
    assert asyncio.run(stages.source(cfg, "home").retrieve(_query(), state, 3)).versions["two_tower"] == "tower-prod"
    # Split out: the pin travels to the TwoTowerRetriever with the call; other kinds ignore it.
    handle = _Handle(retrieve_columns=lambda *a: (["i1"], [0.5], {}, "tower-arm/index-arm", {}, None))
    split = HandleStages("acme", Placement(), {"TwoTowerRetriever": handle, "CandidateSources": handle}, "production")
    asyncio.run(split.source(cfg, "home", pin).retrieve(_query(), state, 3))
    assert handle.retrieve_columns.calls[-1][-1] == pin
    trend = TrendingSourceConfig(name="trend", kind="trending")
    assert HandleStages("acme", Placement(sources="deployment"), {"CandidateSources": handle},
                        "production").source(trend, "home", pin)._pin is None  # fmt: skip


def test_the_assembler_gives_each_arm_its_pinned_pair() -> None:
    from core.config import ExperimentConfig, load_platform_config
    from serving.assembly import TenantData, TenantModels, build_tenant_stages
    from tests.unit.serving_fixtures import catalogue

    class Remote:
        def __init__(self):
            self.asked = []

        def source(self, cfg, surface, pin=None):
            self.asked.append((cfg.kind, surface, pin))
            return None  # build it here

        def ranker(self, version):
            return None

        def user_state(self):
            return None

    cfg = load_platform_config("configs/platform.yaml")
    exp = ExperimentConfig(id="tt-exp", tenant="acme", surfaces=["home"], salt="s", variants=[
        {"name": "control", "weight": 50},
        {"name": "arm", "weight": 50, "overrides": {"two_tower_version": "tt2", "ann_index_version": "ix2"}}])  # fmt: skip
    cfg = cfg.model_copy(update={"experiments": [exp]})
    remote = Remote()
    stages = build_tenant_stages(cfg, "acme", TenantData(catalogue([{"item_id": "i0"}])), TenantModels(), remote=remote)
    assert ("two_tower", "home", ("tt2", "ix2")) in remote.asked
    assert all(pin is None for kind, _, pin in remote.asked if kind != "two_tower")
    arm = stages.plans[("home", "tt-exp", "arm")]
    control = stages.plans[("home", "tt-exp", "control")]
    tt = [s.source for s in arm.sources if s.config.kind == "two_tower"]
    assert tt and tt[0] is not [s.source for s in control.sources if s.config.kind == "two_tower"][0]
    with pytest.raises(ValueError, match="pinned together"):
        ExperimentConfig(id="x", tenant="acme", surfaces=["home"], salt="s",
                         variants=[{"name": "a", "weight": 100, "overrides": {"two_tower_version": "tt2"}}])  # fmt: skip


def test_recent_decisions_are_bounded_by_size_too() -> None:
    """However many records fit the count bound, the JSON held stays under the size bound:
    what keeps a replica's memory flat once the bound is reached (issue 15's soak)."""
    from tests.unit.explain_samples import sample_record

    one = len(sample_record(request_id="r0").model_dump_json())
    recent = RecentDecisions(max_records=1_000, max_bytes=5 * (one + 200))
    for i in range(50):
        recent.add(sample_record(request_id=f"r{i}"))
    assert 1 <= len(recent) <= 5 and recent.bytes <= 5 * (one + 200)
    tenant = sample_record(request_id="r49").tenant_id
    assert recent.get(tenant, "r49") is not None and recent.get(tenant, "r0") is None


def test_live_popularity_reads_by_row_what_the_current_counter_holds() -> None:
    """The ranker in the Ingress reads popularity through :class:`LivePopularity` by catalogue
    row: the same values as by id (items outside the catalogue too), live events included, and
    after a config swap the new stages' counter."""
    from core.features import PopularityCounter
    from deployments.tenants import LivePopularity
    from tests.unit.serving_fixtures import catalogue

    cat = catalogue([{"item_id": f"i{k:07d}"} for k in range(50)])
    now = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    old, new = PopularityCounter(), PopularityCounter()
    for k in range(30):
        old.add(f"i{k % 7:07d}", now - 3600.0 * k)
        new.add(f"i{k % 11:07d}", now - 600.0 * k, weight=2.0)
    old.add("not-in-catalogue", now - 60.0)
    current = {"c": old}
    live = LivePopularity(lambda: current["c"])
    live.align(cat)  # as a ranker does when loaded
    ids = [f"i{k:07d}" for k in range(12)] + ["not-in-catalogue"]
    rows = cat.index_of(ids)
    by_id = old.values(ids, now)
    assert by_id[:7].min() > 0 and by_id[-1] > 0
    np.testing.assert_array_equal(live.values(ids, now, rows=rows, catalogue=cat), by_id)
    old.add("i0000003", now)  # a live event reaches the aligned view
    np.testing.assert_array_equal(live.values(ids, now, rows=rows, catalogue=cat), old.values(ids, now))
    current["c"] = new  # a rebuilt pipeline's counter, read by row from the first request
    np.testing.assert_array_equal(live.values(ids, now, rows=rows, catalogue=cat), new.values(ids, now))
