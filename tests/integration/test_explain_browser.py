"""The explain page in a real headless browser (Debian's chromium driven by Playwright).

A tiny loopback ``http.server`` stands in for the ingress route: it applies the same rules as
``GET /v1/decisions/{id}`` (the key names the tenant; another tenant's id and an unknown id
both get :func:`render_not_found` with 404) and serves :func:`render_explain`'s page. The test
asserts what a user sees: the slate in order, the removal reasons, the link to the user's
other request, and one not-found page for both kinds of miss.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` package;
Playwright's own browser downloads are never used. ``RECSYS_UPDATE_SCREENSHOTS=1`` rewrites
``docs/img/explain.png`` from this test.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from deployments.explain import (
    CONTENT_SECURITY_POLICY,
    EXPLAIN_PATH,
    render_explain,
    render_not_found,
)
from tests.unit.explain_samples import sample_record

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="needs Debian's chromium (apt-get install -y chromium); Playwright's own "
        "browser builds are not downloaded",
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

REPO = Path(__file__).resolve().parents[2]
KEYS = {"Bearer acme-key": "acme", "Bearer globex-key": "globex"}
RECORDS = {
    ("acme", "req-1"): sample_record(request_id="req-1"),
    ("acme", "req-0"): sample_record(request_id="req-0"),
}
RECENT = {("acme", "u-42"): ["req-1", "req-0"]}  # newest first


class _ExplainRoute(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        tenant = KEYS.get(self.headers.get("Authorization", ""))
        if tenant is None:
            return self._send(401, "<h1>unauthorized</h1>")
        if not self.path.startswith(EXPLAIN_PATH):
            return self._send(404, render_not_found())
        request_id = unquote(self.path[len(EXPLAIN_PATH) :].split("#")[0])
        record = RECORDS.get((tenant, request_id))  # keyed by tenant: others' ids do not exist
        if record is None:
            return self._send(404, render_not_found())
        recent = RECENT.get((tenant, record.user_id), [])
        return self._send(200, render_explain(record, recent))

    def _send(self, status: int, page: str) -> None:
        body = page.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ExplainRoute)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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


def _page(browser, key: str):
    context = browser.new_context(
        extra_http_headers={"Authorization": key}, viewport={"width": 1280, "height": 900}
    )
    return context.new_page()


def test_user_sees_the_slate_in_order_and_why_items_were_removed(browser, base_url, tmp_path):
    page = _page(browser, "Bearer acme-key")
    response = page.goto(f"{base_url}/v1/explain/req-1")
    assert response.status == 200
    assert page.title() == "Explain req-1"
    items = page.locator("#slate tbody tr td:nth-child(2)").all_inner_texts()
    assert items == ["i-1", "i-3", "i-odd"]
    reasons = page.locator("#slate tbody tr td:nth-child(8)").all_inner_texts()
    assert reasons[1] == "utility_rank:2, mmr_diversity"
    removals = [
        row.locator("td").all_inner_texts()[:3]
        for row in page.locator("#removals tbody tr").all()
    ]  # fmt: skip
    assert removals == [["i-5", "availability", "unavailable"], ["i-6", "hidden", "hidden_by_user"]]
    assert page.locator("#sources tbody tr", has_text="co_visit").inner_text().count("timeout") == 1
    page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)
    assert (tmp_path / "explain.png").stat().st_size > 0
    if os.environ.get("RECSYS_UPDATE_SCREENSHOTS") == "1":
        target = REPO / "docs" / "img" / "explain.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "explain.png", target)

    # An item's link opens the same user's other request, at that item.
    page.locator("#item-i-3 a", has_text="req-0").click()
    page.wait_for_url("**/v1/explain/req-0#item-i-3")
    assert page.locator("#request-id").inner_text() == "req-0"
    page.context.close()


def test_another_tenants_id_gets_the_same_page_as_an_unknown_id(browser, base_url):
    other = _page(browser, "Bearer globex-key")
    theirs = other.goto(f"{base_url}/v1/explain/req-1")
    mine = _page(browser, "Bearer acme-key")
    unknown = mine.goto(f"{base_url}/v1/explain/no-such-id")
    assert theirs.status == unknown.status == 404
    assert other.content() == mine.content()
    assert other.locator("h1").inner_text() == "No such decision"
    assert "i-1" not in other.content()
    other.context.close()
    mine.context.close()
