"""The Serve graph over real HTTP on the session's local Ray cluster.

One app is deployed for the module (tiny synthetic data, toy models published to a temp
registry). Timeouts in the test platform config are generous, because these tests check
behaviour, not speed; the one source made to hang gets a short timeout of its own. Eventual
conditions (a hot swap) are polled with a bounded deadline.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
import yaml

from core.catalogue import Catalogue
from core.registry import Registry
from tests.integration.serving_artifacts import publish_ranker, publish_two_tower

pytestmark = pytest.mark.integration
ACME = {"Authorization": "Bearer acme-demo-key"}
GLOBEX = {"Authorization": "Bearer globex-demo-key"}
APP = "recsys-test"


PINNED_EXPERIMENT = "acme-item-page-ranker"


def _test_platform_config(path, pins: dict | None = None) -> str:
    """configs/platform.yaml with generous timeouts; ``pins``: a ranker version and a two-tower
    pair that are not production (``ranker_version``, ``two_tower_version``,
    ``ann_index_version``), pinned by the ``challenger`` arm of an experiment on acme's item page."""
    config = yaml.safe_load(open("configs/platform.yaml"))
    if pins:
        home = next(e for e in config["experiments"] if e["id"] == "acme-home-like-weight")
        config["experiments"].append({
            **home, "id": PINNED_EXPERIMENT, "surfaces": ["item_page"], "salt": "pinned-ranker",
            "hypothesis": "the challenger ranker lifts item-page clicks",
            "variants": [{"name": "control", "weight": 50},
                         {"name": "challenger", "weight": 50, "overrides": pins}],
        })  # fmt: skip
    for tenant in config["tenants"]:
        for surface in tenant["surfaces"].values():
            for source in surface["sources"]:
                source["timeout_ms"] = 300 if source["name"] == "fresh" else 3000
            surface.setdefault("ranker", {})["timeout_ms"] = 5000
    # A tight events quota on globex (test_a_tenant_over_its_quota_...); no other test posts
    # globex events.
    globex = next(t for t in config["tenants"] if t["id"] == "globex")
    globex.setdefault("quotas", {})["events"] = {"rate_per_s": 0.2, "burst": 2}
    # acme's request quota well above what one closed-loop client reaches: the swap tests keep
    # a client asking back to back and assert every answer is a 200 (at ≈ 5 ms a request it
    # passed the shipped 100 a second and was rightly answered 429).
    acme = next(t for t in config["tenants"] if t["id"] == "acme")
    acme.setdefault("quotas", {})["recommend"] = {"rate_per_s": 2000, "burst": 4000, "max_in_flight": 48}
    # acme takes its rules from its production rule bundle (inline until one is promoted:
    # test_a_promoted_config_..., last).
    next(t for t in config["tenants"] if t["id"] == "acme")["policy"]["rule_bundle"] = "production"
    path.write_text(yaml.safe_dump(config))
    return str(path)


# Where the models run (AppArgs.placement): in their own deployments (TwoTowerRetriever,
# Ranker: configs/serve.gpu.yaml, a GPU node's shape), or inside the Ingress replicas
# (configs/serve.yaml: a CPU-only node's). Every behaviour below holds for both. Decision
# records: shipped to the DecisionLog deployment in the first, written by the Ingress replicas
# themselves in the second (both shipped configs; placement.decision_log).
PLACEMENTS = {
    "models-in-deployments": {"placement": {"source_kinds": {"two_tower": "deployment"}, "ranker": "deployment",
                                            "decision_log": "deployment"}},
    "models-in-ingress": {"placement": {"source_kinds": {"two_tower": "ingress"}, "ranker": "ingress",
                                        "decision_log": "ingress"}},
}


@pytest.fixture(scope="module", params=list(PLACEMENTS))
def serving(ray_connected, tiny_data, tmp_path_factory, request):
    yield from deploy(tiny_data, tmp_path_factory.mktemp("serving"), **PLACEMENTS[request.param])


def deploy(tiny_data, root, tracing_env: dict[str, str] | None = None, **app_args):
    """Deploy the app on the session cluster (toy models in a temp registry); yields the
    test context and deletes the app afterwards. ``tracing_env``: deploy it as
    ``recsys deploy`` does (a declarative config) with Serve's tracing on (every request
    sampled, ``serving.tracing``'s OTLP exporter) and these variables in the replicas."""
    from ray import serve

    from cluster.local import free_port
    from deployments.app import build_app
    from deployments.settings import AppArgs

    registry = Registry(str(root / "registry"))
    catalogues = {t: Catalogue.load(str(tiny_data), t) for t in ("acme", "globex")}
    versions = {}
    for tenant, catalogue in catalogues.items():
        tt, ix = publish_two_tower(registry, catalogue)
        # The ranker names its two-tower: the Ranker replica scores retrieval_score with it.
        versions[tenant] = (tt, ix, publish_ranker(registry, catalogue, two_tower=tt))
    # Published, never promoted: only the experiment arm that pins them serves them.
    challenger = {"ranker_version": publish_ranker(registry, catalogues["acme"], seed=7,
                                                   two_tower=versions["acme"][0], promote=False)}  # fmt: skip
    challenger["two_tower_version"], challenger["ann_index_version"] = publish_two_tower(
        registry, catalogues["acme"], seed=7, promote=False)  # fmt: skip
    port = free_port()
    args = AppArgs(
        platform_config=_test_platform_config(root / "platform.yaml", challenger),
        storage={"data": str(tiny_data), "events": str(root / "events"),
                 "registry": str(root / "registry"), "decisions": str(root / "decisions")},
        max_body_bytes=64_000, **app_args,
    )  # fmt: skip
    if tracing_env is None:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name=APP, route_prefix="/")
    else:
        _deploy_declared(port, args, tracing_env)
    ctx = {
        "base": f"http://127.0.0.1:{port}",
        "platform_config": args.platform_config,
        "registry": registry,
        "catalogues": catalogues,
        "versions": versions,
        "challenger": challenger,
        "handle": lambda name: serve.get_deployment_handle(name, APP),
        "storage": args.storage.model_dump(),
    }
    yield ctx
    serve.delete(APP)
    serve.shutdown()


def _deploy_declared(port: int, args, env: dict[str, str]) -> None:
    """The app as a ``serve deploy`` config with a top-level ``tracing_config`` (what
    ``recsys deploy configs/serve.yaml`` PUTs), waited on until it runs."""
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    client = serve_start(http_options={"host": "127.0.0.1", "port": port})
    client.deploy_apps(ServeDeploySchema.model_validate({
        "tracing_config": {"enabled": True, "sampling_ratio": 1.0,
                           "exporter_import_path": "serving.tracing:otlp_span_processors"},
        "applications": [{"name": APP, "route_prefix": "/", "import_path": "deployments.app:build_app",
                          "args": args.model_dump(mode="json"), "runtime_env": {"env_vars": env}}],
    }))  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        app = serve.status().applications.get(APP)
        if app is not None and app.status == "RUNNING":
            return
        assert app is None or app.status != "DEPLOY_FAILED", app.message
        time.sleep(1)
    raise TimeoutError(f"{APP} not RUNNING after 300 s: {serve.status().applications.get(APP)}")


def _recommend(s, headers=ACME, **body):
    body = {"user_id": "u_test", "surface": "home", "k": 10, **body}
    return requests.post(f"{s['base']}/v1/recommend", json=body, headers=headers, timeout=30)


def _event(user, item, event_type, **extra):
    return {"event_id": uuid.uuid4().hex, "user_id": user, "item_id": item,
            "event_type": event_type, "ts": datetime.now(UTC).isoformat(), **extra}  # fmt: skip


def _refresh_two_tower(s) -> list[bool]:
    """Ask every holder of the two-tower pair to check its alias now: ``acme`` swapped?"""
    from ray import serve

    names = serve.status().applications[APP].deployments
    if "TwoTowerRetriever" in names:
        return [s["handle"]("TwoTowerRetriever").refresh_now.remote().result(timeout_s=60)["acme"]]
    answers = s["handle"]("Ingress").broadcast("refresh_now").results(timeout_s=60)
    return [a["acme"] for a in answers]


def _faults(s, name, **faults):
    s["handle"](name).broadcast("set_faults", faults).results(timeout_s=30)


def test_recommend_contract_and_decision_record(serving):
    r = _recommend(serving, k=7)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"request_id", "items", "versions", "experiment", "fallback", "degraded",
                         "latency_ms", "trace_id"}  # fmt: skip
    items = body["items"]
    assert len(items) == 7 and [i["rank"] for i in items] == list(range(7))
    assert len({i["item_id"] for i in items}) == 7
    assert all(i["item_id"] in serving["catalogues"]["acme"] for i in items)
    assert all(set(i) == {"item_id", "score", "rank", "sources", "reasons"} for i in items)
    tt, ix, rk = serving["versions"]["acme"]
    assert body["versions"]["two_tower"] == tt and body["versions"]["ann_index"] == ix
    assert body["versions"]["ranker"] == rk and body["fallback"] is None
    assert body["trace_id"] is None  # tracing is off unless configured (test_traced_app.py)
    assert body["experiment"]["id"] == "acme-home-like-weight"

    d = requests.get(f"{serving['base']}/v1/decisions/{body['request_id']}", headers=ACME)
    assert d.status_code == 200
    record = d.json()
    assert record["tenant_id"] == "acme" and record["user_id"] == "u_test"
    assert [(x["item_id"], x["rank"]) for x in record["slate"]] == [
        (i["item_id"], i["rank"]) for i in items
    ]
    assert record["versions"] == body["versions"]
    # Written to the decision log (the files every reader uses), whichever placement wrote it.
    from core.decision_log import DecisionLogWriter

    log = DecisionLogWriter(serving["storage"]["decisions"], lru_size=1)
    deadline = time.monotonic() + 30
    while (found := log.get("acme", body["request_id"])) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    log.close(1.0)
    assert found is not None and found.model_dump(mode="json") == record


def test_an_arm_pinning_non_production_models_is_served_by_them(serving):
    from core.config import load_platform_config
    from core.experiments import assign

    tt, ix, rk = serving["versions"]["acme"]
    pins = serving["challenger"]
    experiments = load_platform_config(serving["platform_config"]).experiments
    users = {assign(experiments, "acme", "item_page", f"u_arm{i}").arm: f"u_arm{i}" for i in range(40)}
    seen = {}
    for arm, want in (("challenger", (pins["ranker_version"], pins["two_tower_version"], pins["ann_index_version"])),
                      ("control", (rk, tt, ix))):  # fmt: skip
        body = _recommend(serving, user_id=users[arm], surface="item_page",
                          context={"item_id": str(serving["catalogues"]["acme"].item_ids[0])}).json()
        assert body["experiment"] == {"id": PINNED_EXPERIMENT, "arm": arm}, body
        got = (body["versions"]["ranker"], body["versions"]["two_tower"], body["versions"]["ann_index"])
        assert got == want and body["fallback"] is None, body
        assert not [d for d in body["degraded"] if d.startswith(("ranker", "source"))], body["degraded"]
        record = requests.get(f"{serving['base']}/v1/decisions/{body['request_id']}", headers=ACME).json()
        assert record["versions"] == body["versions"] and record["experiment"]["arm"] == arm
        seen[arm] = [i["score"] for i in body["items"]]
    assert seen["challenger"] != seen["control"]  # other models scored it
    assert not {rk, tt, ix} & set(pins.values())  # the arm's models are not production's


def test_hidden_item_and_impressions_take_effect_on_the_next_request(serving):
    user = "u_hide_" + uuid.uuid4().hex[:6]
    first = [i["item_id"] for i in _recommend(serving, user_id=user).json()["items"]]
    hidden, capped = first[0], first[1]
    events = [_event(user, hidden, "hide")] + [_event(user, capped, "impression") for _ in range(3)]
    r = requests.post(f"{serving['base']}/v1/events", json={"events": events}, headers=ACME)
    assert r.status_code == 200 and len(r.json()["accepted"]) == 4
    nxt = _recommend(serving, user_id=user).json()
    ids = [i["item_id"] for i in nxt["items"]]
    assert hidden not in ids and capped not in ids
    record = requests.get(f"{serving['base']}/v1/decisions/{nxt['request_id']}", headers=ACME).json()
    reasons = {(x["item_id"], x["reason"]) for x in record["removals"]}
    assert (capped, "frequency_cap") in reasons


def test_events_are_idempotent_and_rows_are_checked(serving):
    good = _event("u_ev", "i0000001", "click")
    body = {"events": [good, {**good}, _event("u_ev", "i0000002", "shrug"),
                       {**_event("u_ev", "i0000003", "click"), "tenant_id": "globex"}]}  # fmt: skip
    out = requests.post(f"{serving['base']}/v1/events", json=body, headers=ACME).json()
    assert out["accepted"] == [good["event_id"]] and out["duplicates"] == [good["event_id"]]
    fields = sorted((x["index"], x["field"]) for x in out["rejected"])
    assert fields == [(2, "event_type"), (3, "tenant_id")]
    again = requests.post(f"{serving['base']}/v1/events", json={"events": [good]}, headers=ACME)
    assert again.json()["duplicates"] == [good["event_id"]] and again.json()["accepted"] == []


def test_a_hanging_source_times_out_and_the_others_answer(serving):
    # The non-model sources run in the Ingress by default (AppArgs.placement);
    # test_serving_placement.py checks the CandidateSources deployment the same way.
    check_hanging_source(serving, "Ingress")


def check_hanging_source(serving, where: str) -> None:
    _faults(serving, where, source_delay_ms={"fresh": 20_000})
    try:
        r = _recommend(serving)
        assert r.status_code == 200 and len(r.json()["items"]) == 10
        d = requests.get(f"{serving['base']}/v1/decisions/{r.json()['request_id']}", headers=ACME)
        status = {s["source"]: s["status"] for s in d.json()["sources"]}
        assert status["fresh"] == "timeout"
        assert status["two_tower"] == "ok" and status["trending"] == "ok"
        assert "source_timeout:fresh" in d.json()["degraded"]
        assert "source_timeout:fresh" in r.json()["degraded"]  # the client sees it too
    finally:
        _faults(serving, where)


def test_a_failing_ranker_falls_back_and_says_so(serving):
    _faults(serving, "Ingress", ranker_error=True)  # the ranker stage raises (serving.faults)
    try:
        r = _recommend(serving)
        assert r.status_code == 200 and len(r.json()["items"]) == 10
        assert r.json()["fallback"] == "ranker_unavailable"
    finally:
        _faults(serving, "Ingress")
    assert _recommend(serving).json()["fallback"] is None


def test_missing_policy_data_fails_closed(serving):
    _faults(serving, "Ingress", policy_unavailable=True)
    try:
        r = _recommend(serving)  # acme has no safe fallback list: nothing is safe to show
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "policy_unavailable"
    finally:
        _faults(serving, "Ingress")
    assert _recommend(serving).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
def test_missing_or_wrong_key_is_401_everywhere(serving, headers):
    base = serving["base"]
    calls = [
        requests.post(f"{base}/v1/recommend", json={"user_id": "u", "surface": "home"}, headers=headers),
        requests.post(f"{base}/v1/events", json={"events": [_event("u", "i", "click")]}, headers=headers),
        requests.get(f"{base}/v1/decisions/abc", headers=headers),
        requests.get(f"{base}/v1/versions", headers=headers),
    ]
    for r in calls:
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_tenants_never_see_each_others_items_or_decisions(serving):
    g = _recommend(serving, headers=GLOBEX)
    assert g.status_code == 200
    assert all(i["item_id"] in serving["catalogues"]["globex"] for i in g.json()["items"])
    a = _recommend(serving).json()
    other = requests.get(f"{serving['base']}/v1/decisions/{a['request_id']}", headers=GLOBEX)
    assert other.status_code == 404
    unknown = requests.get(f"{serving['base']}/v1/decisions/{uuid.uuid4().hex}", headers=GLOBEX)
    assert other.json() == unknown.json()  # indistinguishable from an id that never existed
    assert requests.get(f"{serving['base']}/v1/versions", headers=GLOBEX).json()["tenant"] == "globex"
    assert _recommend(serving, headers=GLOBEX, surface="item_page").status_code == 404


def test_malformed_and_oversized_bodies(serving):
    r = _recommend(serving, k=0)
    assert r.status_code == 422 and r.json()["error"]["field"] == "k"
    r = _recommend(serving, colour="blue")
    assert r.status_code == 422 and r.json()["error"]["field"] == "colour"
    r = requests.post(f"{serving['base']}/v1/events", json={"events": []}, headers=ACME)
    assert r.status_code == 422 and r.json()["error"]["field"] == "events"
    big = {"events": [_event("u", "i" * 200, "click") for _ in range(400)]}
    r = requests.post(f"{serving['base']}/v1/events", json=big, headers=ACME)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_hot_swap_under_load_drops_nothing_and_mismatched_pairs_are_refused(serving):
    s, registry, catalogue = serving, serving["registry"], serving["catalogues"]["acme"]
    statuses: list[int] = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            statuses.append(_recommend(s, user_id=f"u_swap_{len(statuses) % 5}").status_code)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        new_tt, new_ix = publish_two_tower(registry, catalogue, seed=1)
        new_rk = publish_ranker(registry, catalogue, seed=1)
        deadline = time.monotonic() + 60
        want = {"two_tower": new_tt, "ann_index": new_ix, "ranker": new_rk}
        while True:
            got = requests.get(f"{s['base']}/v1/versions", headers=ACME).json()["artifacts"]
            if got == want:
                break
            assert time.monotonic() < deadline, f"swap not seen: {got}"
            time.sleep(0.2)
        answer = _recommend(s)
        assert answer.status_code == 200, (answer.status_code, answer.text)
        r = answer.json()
        assert {k: r["versions"][k] for k in want} == want

        # An index built by another item tower is refused; the matching pair keeps serving.
        publish_two_tower(registry, catalogue, seed=2, item_tower_version=new_tt)
        assert _refresh_two_tower(s) == [False]
        got = requests.get(f"{s['base']}/v1/versions", headers=ACME).json()["artifacts"]
        assert (got["two_tower"], got["ann_index"]) == (new_tt, new_ix)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert statuses and set(statuses) == {200}
    metrics = requests.get(f"{s['base']}/metrics", headers=ACME).text  # needs the admin scope
    assert 'recsys_hot_swaps_total{component="two_tower"' in metrics
    assert 'outcome="refused"' in metrics
    assert 'recsys_requests_total{endpoint="recommend"' in metrics


# ---- tenant config and kill switches, live (docs/operations.md, "Tenant configuration") ----


def _reviewed_config(s, like: float) -> str:
    """Publish acme's config with ``like`` as the home like weight, run its automatic checks,
    sign it off and approve it (the launch review); returns the version."""
    from core.config import StorageConfig, load_platform_config
    from core.tenant_config import KIND, document_from_platform, publish_document
    from training.config_review import record_review, run_checks

    platform = load_platform_config(s["platform_config"])
    platform = platform.model_copy(update={"storage": StorageConfig(**s["storage"])})
    catalogue = s["catalogues"]["acme"]
    owner = {"team": "acme-recs", "primary": "serving-tests", "escalation": "#acme",
             "runbook": "docs/runbooks/hot-swap-and-rollback.md"}  # fmt: skip
    doc = document_from_platform(platform, "acme", owner)
    home = doc.surfaces["home"]
    weights = {**home.ranker.task_weights, "like": like}
    surfaces = {**doc.surfaces, "home": home.model_copy(update={"ranker": home.ranker.model_copy(
        update={"task_weights": weights})})}  # fmt: skip
    surfaces.pop("email")  # precomputed: no batch_recs in this registry (the check says so)
    doc = doc.model_copy(update={"surfaces": surfaces, "policy": doc.policy.model_copy(
        update={"safe_fallback": _eligible(platform, catalogue)})})  # fmt: skip
    version = publish_document(s["registry"], doc, actor="serving-tests").version
    checks = run_checks(platform, s["registry"], "acme", version, replay=10)
    assert all(c["ok"] for c in checks.values()), checks
    blocking = record_review(s["registry"], "acme", version, actor="serving-tests", approve=True,
                             sign_offs=("privacy_review", "rollback_plan", "oncall_notified"))  # fmt: skip
    assert blocking == [], blocking
    assert s["registry"].manifest(KIND, "acme", version).owner.team == "acme-recs"
    return version


def _reviewed_rules(s, shown: list[str]) -> tuple[str, list[str]]:
    """Publish acme's rule bundle blocking two of the ``shown`` items (not on the safe
    fallback list), run its automatic checks (the point-in-time replay included), sign it off
    and approve it; returns the version and the blocked items."""
    from core.config import StorageConfig, load_platform_config
    from core.rule_bundle import KIND, document_from_policy, effective_platform, publish_document
    from training.config_review import record_review, run_bundle_checks

    platform = load_platform_config(s["platform_config"])
    platform = platform.model_copy(update={"storage": StorageConfig(**s["storage"])})
    served, _ = effective_platform(platform, s["registry"], "acme")
    owner = {"team": "acme-trust", "primary": "serving-tests", "escalation": "#acme-trust",
             "runbook": "docs/runbooks/fallbacks.md"}  # fmt: skip
    policy = served.tenant("acme").policy
    blocked = [i for i in shown if i not in policy.safe_fallback][:2]
    assert len(blocked) == 2, (shown, policy.safe_fallback)
    doc = document_from_policy(policy, "acme", owner).model_copy(update={"blocked_items": blocked})
    version = publish_document(s["registry"], doc, actor="serving-tests").version
    checks = run_bundle_checks(platform, s["registry"], "acme", version, replay=10)
    assert all(c["ok"] for c in checks.values()), checks
    blocking = record_review(s["registry"], "acme", version, actor="serving-tests", approve=True, kind=KIND,
                             sign_offs=("rollback_plan", "oncall_notified"))  # fmt: skip
    assert blocking == [], blocking
    return version, blocked


def _eligible(platform, catalogue) -> list[str]:
    from core.contracts import Candidate, MergedCandidate, Query
    from ranking.rules import RuleChain
    from serving.user_state import ServingUserState

    items = [MergedCandidate(str(i), (Candidate(str(i), "t", "v", 1.0, 0),)) for i in catalogue.item_ids]
    q = Query(request_id="r", tenant_id="acme", user_id="x", surface="home", k=10, now=datetime.now(UTC))
    chain = RuleChain.from_policy(platform.tenant("acme").policy, catalogue)
    return [c.item_id for c in chain.apply(q, items, ServingUserState(user_id="x")).kept][:20]


def _record(s) -> dict:
    r = _recommend(s, user_id="u_cfg").json()
    return requests.get(f"{s['base']}/v1/decisions/{r['request_id']}", headers=ACME).json()


def _wait_for(s, predicate, what: str, deadline_s: float = 60.0) -> float:
    """Seconds until ``predicate(versions, record)`` holds for a fresh request's record."""
    t0 = time.monotonic()
    while True:
        versions = requests.get(f"{s['base']}/v1/versions", headers=ACME).json()
        r = _recommend(s, user_id="u_cfg").json()
        record = requests.get(f"{s['base']}/v1/decisions/{r['request_id']}", headers=ACME).json()
        if predicate(versions, record):
            return time.monotonic() - t0
        assert time.monotonic() - t0 < deadline_s, f"{what} not seen: {versions}"
        time.sleep(0.1)


def test_a_promoted_config_is_served_live_without_a_failed_request_and_rollback_restores(serving):
    from core.tenant_config import KIND

    s, registry = serving, serving["registry"]
    statuses: list[int] = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            statuses.append(_recommend(s, user_id=f"u_cfg_{len(statuses) % 5}").status_code)

    first = _reviewed_config(s, like=7.0)
    second = _reviewed_config(s, like=9.0)
    worker = threading.Thread(target=load)
    worker.start()
    seen = {}
    try:
        for version in (first, second):
            registry.promote(KIND, "acme", version, actor="serving-tests", reason="launch")
            seen[version] = _wait_for(s, lambda v, r, version=version: v["tenant_config"] == version
                                      and r["versions"]["tenant_config"] == version, version)  # fmt: skip
        registry.rollback(KIND, "acme", actor="serving-tests", reason="bad launch")
        seen["rollback"] = _wait_for(s, lambda v, r: r["versions"]["tenant_config"] == first, "rollback")
        # The config takes its rules from the rule bundle: a promoted bundle that blocks what
        # u_cfg is shown is served live, named in the records and /v1/versions.
        bundle, shown = _reviewed_rules(s, [x["item_id"] for x in _record(s)["slate"]])
        registry.promote("rule_bundle", "acme", bundle, actor="serving-tests", reason="block two items")
        seen["rule_bundle"] = _wait_for(s, lambda v, r: v["rule_bundle"] == bundle
                                        and r["versions"]["rule_bundle"] == bundle
                                        and r["versions"]["tenant_config"] == first
                                        and not {x["item_id"] for x in r["slate"]} & set(shown), "rule bundle")  # fmt: skip
    finally:
        stop.set()
        worker.join(timeout=60)
    print(f"config pick-up seconds (promote, promote, rollback, rule bundle): {list(seen.values())}")
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    metrics = requests.get(f"{s['base']}/metrics", headers=ACME).text
    assert 'component="tenant_config"' in metrics and 'outcome="swapped"' in metrics


def test_a_kill_switch_removes_a_source_live_and_shows_in_versions_and_records(serving):
    from core.config import load_platform_config
    from core.kill_switches import set_switch
    from core.tenant_config import effective_platform

    s, registry = serving, serving["registry"]
    platform, _ = effective_platform(load_platform_config(s["platform_config"]), registry, "acme")
    served = lambda r: {x["source"] for x in r["sources"]}  # noqa: E731
    _wait_for(s, lambda v, r: "trending" in served(r), "trending served")
    set_switch(registry, platform, "acme", "source", "trending", "off", reason="bad counts", actor="sre")
    try:
        took = _wait_for(s, lambda v, r: "trending" not in served(r)
                         and "kill_switch:source:trending" in r["degraded"], "kill switch")  # fmt: skip
        versions = requests.get(f"{s['base']}/v1/versions", headers=ACME).json()
        assert [(k["target"], k["name"], k["live"]) for k in versions["kill_switches"]] == [("source", "trending", True)]
        print(f"kill switch pick-up seconds: {took:.2f}")
    finally:
        set_switch(registry, platform, "acme", "source", "trending", "on", reason="fixed", actor="sre")
    _wait_for(s, lambda v, r: "trending" in served(r) and not v["kill_switches"], "switch back on")
    audit = [(a.item, a.decision) for a in registry.audit(tenant="acme") if a.action == "kill_switch"]
    assert audit[-2:] == [("source:trending", "off"), ("source:trending", "on")]


def test_a_tenant_over_its_quota_gets_429_and_the_others_are_served(serving):
    """globex's events quota is 2 requests, then one per 5 s (``_test_platform_config``)."""
    base = serving["base"]

    def post(headers):
        return requests.post(f"{base}/v1/events", json={"events": [_event("u_q", "i0000001", "click")]},
                             headers=headers, timeout=30)  # fmt: skip

    answers = [post(GLOBEX) for _ in range(10)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused and {r.status_code for r in answers} <= {200, 429}
    assert refused[0].json()["error"]["code"] == "quota_exceeded"
    assert 1 <= int(refused[0].headers["Retry-After"]) <= 5
    assert post(ACME).status_code == 200  # another tenant: not limited by globex's flood
    metrics = requests.get(f"{base}/metrics", headers=ACME).text
    assert any('tenant="globex"' in line and 'status="429"' in line
               for line in metrics.splitlines() if line.startswith("recsys_requests_total"))  # fmt: skip


def test_fuzzing_the_served_openapi_never_gets_a_5xx(serving):
    from tests.integration.fuzz_api import fuzz

    seen = fuzz(serving["base"], ACME)
    print(seen)  # statuses per operation and mode, shown on a failure
    assert 200 in seen["POST /v1/recommend positive"]  # generated bodies reached the pipeline
    assert any(422 in counts for label, counts in seen.items() if "negative" in label)
    # the generated Authorization header too (mostly 401s: no request reaches a body parser)
    fuzz(serving["base"], ACME, max_examples=10, generated_auth=True)
