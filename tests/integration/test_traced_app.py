"""One traced app on the session cluster, deployed as ``recsys deploy`` deploys it, checked two
ways (one deployment for both: each costs a minute on two cores).

**Traces.** One trace per request across a real Serve graph: Ingress → TwoTowerRetriever →
Ranker, each in its own replica process, exported over real OTLP/HTTP. The app is a
declarative config with Ray Serve's own ``tracing_config`` naming
``serving.tracing:otlp_span_processors``; every replica's exporter posts protobuf to a receiver
on loopback in this process (``OTEL_EXPORTER_OTLP_ENDPOINT`` in the app's ``runtime_env``), so
spans from every process are checked together. Export is batched, so arrival is polled with a
bounded deadline.

**The explain page in a real headless browser** (Debian's chromium driven by Playwright),
served by the real ingress route, as an operator would follow a request into its trace: a
user's two real ``POST /v1/recommend`` calls make the records. The browser sends the tenant's
key as the ``Authorization`` header (the route's only credential, like
``GET /v1/decisions/{id}``) and the test asserts what a user sees: the slate in the record's
order, the removal reasons, the link to the user's other request, the trace id, and one
not-found page for another tenant's id and an unknown id. Needs ``/usr/bin/chromium``
(``apt-get install -y chromium``) and the ``playwright`` package; Playwright's own browser
downloads are never used (where either is missing those tests skip and say why).
``RECSYS_UPDATE_SCREENSHOTS=1`` rewrites ``docs/img/explain.png`` from this test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.integration.test_serving_http import ACME, GLOBEX, deploy
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="needs Debian's chromium (apt-get install -y chromium); Playwright's own "
    "browser builds are not downloaded",
)
REPO = Path(__file__).resolve().parents[2]
USER = "u_explain"


@pytest.fixture(scope="module")
def traced(ray_connected, tiny_data, tmp_path_factory):
    with OtlpReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        # The three-deployment shape (configs/serve.gpu.yaml's), named here: the trace must
        # cross three replica processes, whatever configs/serve.yaml ships.
        three = {"source_kinds": {"two_tower": "deployment"}, "ranker": "deployment"}
        for ctx in deploy(tiny_data, tmp_path_factory.mktemp("traced"), tracing_env=env, placement=three):
            yield {**ctx, "rx": rx}


def _trace(s, trace_id: str, *names: str) -> dict[str, dict]:
    """The spans of ``trace_id`` by span id, once every name in ``names`` has arrived."""

    def arrived(spans):
        got = {x["name"] for x in spans if x["trace_id"] == trace_id}
        return all(n in got for n in names)

    spans = s["rx"].wait_for(arrived, timeout_s=60)
    mine = {x["span_id"]: x for x in spans if x["trace_id"] == trace_id}
    missing = set(names) - {x["name"] for x in mine.values()}
    assert not missing, f"spans not received: {missing}; got {sorted(x['name'] for x in mine.values())}"
    return mine


def _ancestors(spans: dict[str, dict], span: dict) -> list[dict]:
    out = []
    while span["parent_id"] in spans:
        span = spans[span["parent_id"]]
        out.append(span)
    return out


def _one(spans: dict[str, dict], name: str) -> dict:
    (found,) = [x for x in spans.values() if x["name"] == name]
    return found


def test_one_trace_from_ingress_through_retriever_and_ranker(traced) -> None:
    r = requests.post(f"{traced['base']}/v1/recommend", headers=ACME, timeout=60,
                      json={"user_id": "u_trace", "surface": "home", "k": 5})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    trace_id = body["trace_id"]
    assert trace_id and len(trace_id) == 32
    record = requests.get(f"{traced['base']}/v1/decisions/{body['request_id']}", headers=ACME,
                          timeout=30).json()  # fmt: skip
    assert record["trace_id"] == trace_id

    spans = _trace(traced, trace_id, "recommend", "two_tower.retrieve", "ranker.score", "slate")
    root = _one(spans, "recommend")
    assert root["attributes"]["recsys.request_id"] == body["request_id"]
    tt, ix, rk = traced["versions"]["acme"]
    assert root["attributes"]["recsys.version.ranker"] == rk
    # One trace, entered once: every span but one has its parent among the received ones;
    # that one is Serve's span for the Ingress replica handling the HTTP request (its parent,
    # if any, is the proxy's, exported by the proxy process), and the pipeline runs inside it.
    (entry,) = [x for x in spans.values() if x["parent_id"] not in spans]
    assert entry["attributes"]["deployment"] == "Ingress", entry
    assert entry["attributes"]["route"] == "/v1/recommend"
    assert entry in _ancestors(spans, root)

    # The two-tower answer: computed in the TwoTowerRetriever replica, under Serve's span for
    # that replica, under the handle call made from the "source two_tower" span in the Ingress.
    retrieve = _one(spans, "two_tower.retrieve")
    chain = _ancestors(spans, retrieve)
    names = [a["name"] for a in chain]
    assert "source two_tower" in names and "sources" in names and "recommend" in names, names
    hop = chain[: names.index("source two_tower")]
    assert any(a["attributes"].get("deployment") == "TwoTowerRetriever" and "replica_id" in a["attributes"]
               for a in hop), names  # fmt: skip
    assert retrieve["attributes"]["recsys.version.ann_index"] == ix
    src = _one(spans, "source two_tower")
    assert retrieve["attributes"]["recsys.candidates"] == src["attributes"]["recsys.candidates"] > 0

    # The ranker: scored in the Ranker replica, under the Ingress's "ranker" stage span.
    score = _one(spans, "ranker.score")
    chain = _ancestors(spans, score)
    names = [a["name"] for a in chain]
    assert "ranker" in names and "recommend" in names, names
    hop = chain[: names.index("ranker")]
    assert any(a["attributes"].get("deployment") == "Ranker" and "replica_id" in a["attributes"]
               for a in hop), names  # fmt: skip
    assert score["attributes"]["recsys.version.ranker"] == rk
    assert score["attributes"]["recsys.candidates"] == _one(spans, "ranker")["attributes"]["recsys.candidates"]
    # Each hop's replica span names the replica that served it.
    served = {a["attributes"]["deployment"]: a["attributes"]["replica_id"]
              for a in spans.values() if a["name"].startswith("replica_handle_request")}  # fmt: skip
    assert set(served) == {"Ingress", "TwoTowerRetriever", "Ranker"} and len(set(served.values())) == 3


def test_requests_are_separate_traces_and_tenants_do_not_mix(traced) -> None:
    ids = []
    for headers in (ACME, GLOBEX):
        r = requests.post(f"{traced['base']}/v1/recommend", headers=headers, timeout=60,
                          json={"user_id": "u_trace2", "surface": "home", "k": 3})  # fmt: skip
        assert r.status_code == 200, r.text
        ids.append(r.json()["trace_id"])
    assert all(ids) and ids[0] != ids[1]
    for trace_id, tenant in zip(ids, ("acme", "globex"), strict=True):
        root = _one(_trace(traced, trace_id, "recommend", "ranker.score"), "recommend")
        assert root["attributes"]["recsys.tenant"] == tenant


@pytest.fixture(scope="module")
def served(traced):
    """The traced app, and two real requests of one user (older, newer)."""
    answers = []
    for k in (6, 8):
        r = requests.post(f"{traced['base']}/v1/recommend", headers=ACME, timeout=60,
                          json={"user_id": USER, "surface": "home", "k": k})  # fmt: skip
        assert r.status_code == 200, r.text
        answers.append(r.json())
    records = [requests.get(f"{traced['base']}/v1/decisions/{a['request_id']}", headers=ACME,
                            timeout=30).json() for a in answers]  # fmt: skip
    return {**traced, "answers": answers, "records": records}


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()


def _page(browser, headers: dict):
    context = browser.new_context(
        extra_http_headers=headers, viewport={"width": 1280, "height": 900}
    )
    return context.new_page()


@pytest.mark.browser
@needs_chromium
def test_user_sees_the_slate_in_order_and_why_items_were_removed(browser, served, tmp_path):
    older, newer = served["answers"]
    record = served["records"][1]
    page = _page(browser, ACME)
    response = page.goto(f"{served['base']}/v1/explain/{newer['request_id']}")
    assert response.status == 200
    assert page.title() == f"Explain {newer['request_id']}"
    # The slate as the user got it: the response's items, in order, with their reasons.
    items = page.locator("#slate tbody tr td:nth-child(2)").all_inner_texts()
    assert items == [i["item_id"] for i in newer["items"]] and len(items) == 8
    reasons = page.locator("#slate tbody tr td:nth-last-child(2)").all_inner_texts()
    assert reasons == [", ".join(i["reasons"]) for i in newer["items"]]
    # Every removal of the record, with its rule and reason code.
    removals = [row.locator("td").all_inner_texts()[:3]
                for row in page.locator("#removals tbody tr").all()]  # fmt: skip
    assert removals == [[r["item_id"], r["rule"], r["reason"]] for r in record["removals"]]
    assert removals, "the test data's rules removed nothing: nothing to show"
    sources = page.locator("#sources tbody tr td:first-child").all_inner_texts()
    assert sources == [s["source"] for s in record["sources"]]
    # The trace this request was recorded under.
    assert newer["trace_id"] and page.locator("#summary").inner_text().count(newer["trace_id"]) == 1
    page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)
    assert (tmp_path / "explain.png").stat().st_size > 0
    if os.environ.get("RECSYS_UPDATE_SCREENSHOTS") == "1":
        target = REPO / "docs" / "img" / "explain.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "explain.png", target)

    # An item's link opens the same user's other request, at that item.
    first = newer["items"][0]["item_id"]
    page.locator("#slate tbody tr:first-child a", has_text=older["request_id"]).click()
    page.wait_for_url(f"**/v1/explain/{older['request_id']}#item-{first}")
    assert page.locator("#request-id").inner_text() == older["request_id"]
    shown = page.locator("#slate tbody tr td:nth-child(2)").all_inner_texts()
    assert shown == [i["item_id"] for i in older["items"]]
    page.context.close()


@pytest.mark.browser
@needs_chromium
def test_another_tenants_id_gets_the_same_page_as_an_unknown_id(browser, served):
    newer = served["answers"][1]
    other = _page(browser, GLOBEX)
    theirs = other.goto(f"{served['base']}/v1/explain/{newer['request_id']}")
    mine = _page(browser, ACME)
    unknown = mine.goto(f"{served['base']}/v1/explain/no-such-id")
    assert theirs.status == unknown.status == 404
    assert other.content() == mine.content()
    assert other.locator("h1").inner_text() == "No such decision"
    assert newer["items"][0]["item_id"] not in other.content()
    other.context.close()
    mine.context.close()
