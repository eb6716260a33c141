"""The explain page in a real headless browser (Debian's chromium driven by Playwright), served
by the real ingress route of a real Serve deployment.

The app of ``test_serving_http`` (toy models in a temp registry) is deployed with tracing on,
as an operator would run it to follow a request into its trace; a user's two real
``POST /v1/recommend`` calls make the records. The browser sends the tenant's key as the
``Authorization`` header (the route's only credential, like ``GET /v1/decisions/{id}``) and
the test asserts what a user sees: the slate in the record's order, the removal reasons, the
link to the user's other request, the trace id, and one not-found page for another tenant's
id and an unknown id.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` package;
Playwright's own browser downloads are never used. ``RECSYS_UPDATE_SCREENSHOTS=1`` rewrites
``docs/img/explain.png`` from this test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.integration.test_serving_http import ACME, GLOBEX, deploy
from tests.otlp_receiver import OtlpReceiver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="needs Debian's chromium (apt-get install -y chromium); Playwright's own "
        "browser builds are not downloaded",
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

REPO = Path(__file__).resolve().parents[2]
USER = "u_explain"


@pytest.fixture(scope="module")
def served(ray_connected, tiny_data, tmp_path_factory):
    """The app on the session cluster, and two real requests of one user (older, newer)."""
    with OtlpReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint}
        for s in deploy(tiny_data, tmp_path_factory.mktemp("explain"), tracing_env=env):
            answers = []
            for k in (6, 8):
                r = requests.post(f"{s['base']}/v1/recommend", headers=ACME, timeout=60,
                                  json={"user_id": USER, "surface": "home", "k": k})  # fmt: skip
                assert r.status_code == 200, r.text
                answers.append(r.json())
            records = [requests.get(f"{s['base']}/v1/decisions/{a['request_id']}", headers=ACME,
                                    timeout=30).json() for a in answers]  # fmt: skip
            yield {**s, "answers": answers, "records": records}


@pytest.fixture(scope="module")
def browser():
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
