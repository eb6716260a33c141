"""The explain page, read the way a browser reads it (``html.parser``): the slate in order with
its reasons and ranks, the removals and why, sources, versions, links, and hostile ids
escaped."""

from __future__ import annotations

from html.parser import HTMLParser

from deployments.explain import RecentRequests, explain_url, render_explain, render_not_found
from tests.unit.explain_samples import HOSTILE, sample_record
from tests.unit.test_pipeline import world  # noqa: F401 - the tiny-data fixture


class PageReader(HTMLParser):
    """Tables by id as lists of rows of cell text; every link; every element's tag name."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_head_row = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "thead":
            self._in_head_row = True
        elif tag == "tbody":
            self._in_head_row = False
        elif tag == "tr" and self._table is not None and not self._in_head_row:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = []
        elif tag == "a":
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def test_slate_is_shown_in_order_with_ranks_scores_and_reasons():
    page = PageReader(render_explain(sample_record()))
    slate = page.tables["slate"]
    assert [row[1] for row in slate] == ["i-1", "i-3", "i-odd"]  # rank after 0, 1, 2
    assert [row[0] for row in slate] == ["0", "1", "2"]
    # columns: rank after, item, sources, p(click), p(purchase), utility, rank before, reasons
    assert [row[6] for row in slate] == ["0", "2", "3"]  # utility order skipped i-2 (rank 1)
    assert slate[1][7] == "utility_rank:2, mmr_diversity"
    assert slate[2][7] == "exploration, propensity:0.05"
    assert slate[0][3:5] == ["0.3", "0.05"]
    assert "two_tower #0" in slate[0][2] and "trending #0" in slate[0][2]


def test_removed_candidates_and_why():
    page = PageReader(render_explain(sample_record()))
    assert [r[:3] for r in page.tables["removals"]] == [
        ["i-5", "availability", "unavailable"],
        ["i-6", "hidden", "hidden_by_user"],
    ]


def test_sources_versions_and_arm():
    page = PageReader(render_explain(sample_record()))
    sources = {r[0]: r[1:] for r in page.tables["sources"]}
    assert sources["co_visit"][0] == "timeout" and sources["co_visit"][3] == "no answer in 20 ms"
    assert sources["two_tower"][:3] == ["ok", "5", "4.250"]
    versions = dict(page.tables["versions"])
    assert versions["ranker"] == "rk-3" and versions["two_tower"] == "tt-7"
    assert versions["experiment"] == "exp-slate" and versions["arm"] == "mmr"


def test_trace_id_is_shown_when_the_request_was_traced():
    traced = sample_record().model_copy(update={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
    assert "<dt>trace id</dt><dd>4bf92f3577b34da6a3ce929d0e0e4736</dd>" in render_explain(traced)
    assert "<dt>trace id</dt><dd>not traced</dd>" in render_explain(sample_record())


def test_each_item_links_to_the_users_other_recent_requests():
    html = render_explain(sample_record(request_id="req-1"), ["req-1", "req-0", "req/../x"])
    page = PageReader(html)
    assert page.tables["slate"][0][-1] == "req-0 req/../x"  # its own id left out
    assert explain_url("req-0", "i-1") in page.links
    assert "/v1/explain/req%2F..%2Fx#item-i-1" in page.links  # no path tricks
    assert "/v1/explain/req-0" in page.links


def test_hostile_ids_are_escaped_and_no_script_can_run():
    record = sample_record(request_id=HOSTILE, user_id=HOSTILE, hostile=True)
    html = render_explain(record, [HOSTILE + "2"])
    page = PageReader(html)
    assert "script" not in page.tags
    assert "<script>" not in html
    assert page.tables["slate"][2][1] == HOSTILE  # shown as text, exactly
    assert HOSTILE in "".join(page.text)
    assert "default-src 'none'" in html  # and a CSP that allows no script anyway
    assert all(link.startswith("/v1/explain/%3Cscript%3E") for link in page.links)


def test_fallback_record_without_scores_renders():
    record = sample_record().model_copy(update={"fallback": "ranker_unavailable"})
    record.candidates.utility[:] = [None] * len(record.candidates.utility)
    page = PageReader(render_explain(record))
    assert [row[6] for row in page.tables["slate"]] == ["—", "—", "—"]
    assert "ranker_unavailable" in "".join(page.text)


def test_not_found_page_is_one_page_for_every_reason():
    page = render_not_found()
    assert page == render_not_found()
    assert "No such decision" in "".join(PageReader(page).text)


def test_a_real_pipeline_decision_renders_as_recorded(request):
    """A record made by the in-process pipeline on the tiny data (small untrained models)."""
    from tests.unit.test_pipeline import ask, pipeline

    w = request.getfixturevalue("world")

    record = ask(pipeline(w), w, rid="r-explain").decision
    page = PageReader(render_explain(record, ["r-older"]))
    slate = page.tables["slate"]
    assert [row[1] for row in slate] == [
        s.item_id for s in sorted(record.slate, key=lambda s: s.rank)
    ]
    assert [row[-2] for row in slate] == [
        ", ".join(s.reasons) for s in sorted(record.slate, key=lambda s: s.rank)
    ]
    removals = page.tables.get("removals", [])
    assert [r[:3] for r in removals] == [[x.item_id, x.rule, x.reason] for x in record.removals]
    assert [r[0] for r in page.tables["sources"]] == [s.source for s in record.sources]
    assert dict(page.tables["versions"])["ranker"] == record.versions["ranker"]
    assert len(page.links) == len(slate) + 1  # one per item, and the recent list


def test_recent_requests_per_user_are_bounded_and_tenant_scoped():
    recent = RecentRequests(max_users=2, per_user=2)
    for rid in ("a1", "a2", "a3"):
        recent.add("acme", "u1", rid)
    recent.add("globex", "u1", "g1")
    assert recent.recent("acme", "u1") == ["a3", "a2"]  # newest first, at most per_user
    assert recent.recent("globex", "u1") == ["g1"]  # same user id, other tenant: apart
    recent.add("acme", "u2", "b1")  # a third user: the least recently seen one goes
    assert recent.recent("acme", "u1") == []
    assert recent.recent("acme", "u2") == ["b1"]
