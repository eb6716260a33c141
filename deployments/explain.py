"""The explain page: one decision record as a plain server-rendered HTML page.

Pure functions, no I/O: the ingress looks the record up (same key and tenant rules as
``GET /v1/decisions/{id}``) and returns :func:`render_explain`'s page, or
:func:`render_not_found`'s with status 404 for an unknown id *and* for another tenant's id
(the page takes no argument, so the two cannot differ).

Every value from the record is escaped with :func:`html.escape` (ids, reasons and errors come
from clients, configs and exceptions); ids in links are percent-encoded. The page carries a
Content-Security-Policy that allows no script at all, so a missed escape still runs nothing.

Positions count from 0, as in the record: ``rank after`` is the item's slate position,
``rank before`` its position in utility order among the scored candidates (what the
``utility_rank:<r>`` reason names).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import quote

from core.contracts import DecisionRecord

EXPLAIN_PATH = "/v1/explain/"
MAX_RECENT_LINKS = 5

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d1d1f;max-width:80rem}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.4rem 0}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#a00;font-weight:600}.ok{color:#070}code{font-size:.95em}td code{white-space:nowrap}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
"""
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"
"""Also meant as the response's ``Content-Security-Policy`` header (the page has it as a meta)."""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def explain_url(request_id: str, item_id: str | None = None) -> str:
    """The page of ``request_id`` (and the anchor of ``item_id`` on it), percent-encoded."""
    url = EXPLAIN_PATH + quote(request_id, safe="")
    return url if item_id is None else f"{url}#{_anchor(item_id)}"


def _anchor(item_id: str) -> str:
    return "item-" + quote(item_id, safe="")


def _page(title: str, body: Iterable[str]) -> str:
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        '<meta name="robots" content="noindex">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n",
        *body,
        "</body></html>\n",
    ])  # fmt: skip


def _table(table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``rows`` hold cell HTML that is already escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(row[0] + "".join(row[1:]) + "</tr>\n" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n'


def render_explain(record: DecisionRecord, recent_request_ids: Sequence[str] = ()) -> str:
    """The page for one decision. ``recent_request_ids``: the same user's other recent requests
    (newest first; the record's own id is left out); each slate item links to its place in
    them."""
    rows = {r["item_id"]: r for r in record.candidates.rows()}
    scored = sorted((r for r in rows.values() if r["utility"] is not None),
                    key=lambda r: -r["utility"])  # fmt: skip
    rank_before = {r["item_id"]: i for i, r in enumerate(scored)}
    tasks = sorted(record.candidates.task_scores)
    recent = [r for r in recent_request_ids if r != record.request_id][:MAX_RECENT_LINKS]
    rid = record.request_id
    out = [f'<h1>Why these recommendations: request <code id="request-id">{_e(rid)}</code></h1>\n']

    summary = {
        "tenant": record.tenant_id, "user": record.user_id, "surface": record.surface,
        "k": record.k, "at": record.at.isoformat(),
        "fallback": record.fallback or "none (personalised)",
        "degraded": ", ".join(record.degraded) or "none",
        "candidates": f"{len(record.candidates)} merged, {len(scored)} scored, "
                      f"{len(record.removals)} removed by rules, {len(record.slate)} shown",
        "trace id": record.trace_id or "not traced",
    }  # fmt: skip
    out.append('<dl id="summary">' + "".join(
        f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in summary.items()) + "</dl>\n")  # fmt: skip

    out.append("<h2>Slate (what the user saw, in order)</h2>\n")
    slate_rows = []
    for item in sorted(record.slate, key=lambda s: s.rank):
        row = rows.get(item.item_id)
        if row is not None and row["sources"]:
            sources = "<br>".join(
                f"{_e(s['source'])} #{s['rank']} ({_num(s['score'])}, {_e(s['version'])})"
                for s in row["sources"]
            )
        else:
            sources = _e(", ".join(item.sources) or "—")
        scores = [f'<td class="num">{_num((row or {}).get("task_scores", {}).get(t))}</td>'
                  for t in tasks]  # fmt: skip
        before = rank_before.get(item.item_id)
        links = " ".join(f'<a href="{_e(explain_url(r, item.item_id))}">{_e(r)}</a>'
                         for r in recent) or "—"  # fmt: skip
        slate_rows.append([
            f'<tr id="{_e(_anchor(item.item_id))}" class="slate-item">',
            f'<td class="num">{item.rank}</td>', f"<td><code>{_e(item.item_id)}</code></td>",
            f"<td>{sources}</td>", *scores,
            f'<td class="num">{_num(row["utility"] if row else None)}</td>',
            f'<td class="num">{"—" if before is None else before}</td>',
            f"<td>{_e(', '.join(item.reasons))}</td>", f"<td>{links}</td>",
        ])  # fmt: skip
    out.append(_table(
        "slate",
        ["rank after (0 = top)", "item", "sources (source rank, score, version)",
         *(f"p({t})" for t in tasks), "utility", "rank before (utility order)", "reasons",
         "this user's other requests"],
        slate_rows,
    ))  # fmt: skip

    out.append("<h2>Removed candidates</h2>\n")
    if record.removals:
        out.append(_table("removals", ["item", "rule", "reason", "sources"], (
            ['<tr class="removal">', f"<td><code>{_e(r.item_id)}</code></td>",
             f"<td>{_e(r.rule)}</td>", f"<td>{_e(r.reason)}</td>",
             "<td>" + _e(", ".join(s["source"] for s in rows.get(r.item_id, {}).get("sources", [])))
             + "</td>"]
            for r in record.removals
        )))  # fmt: skip
    else:
        out.append('<p id="removals">No candidate was removed.</p>\n')

    out.append("<h2>Candidate sources</h2>\n")
    out.append(_table("sources", ["source", "status", "candidates", "latency (ms)", "error"], (
        ['<tr class="source">', f"<td>{_e(s.source)}</td>",
         f'<td class="{"ok" if s.status == "ok" else "bad"}">{_e(s.status)}</td>',
         f'<td class="num">{s.candidates}</td>', f'<td class="num">{s.latency_ms:.3f}</td>',
         f"<td>{_e(s.error or '')}</td>"]
        for s in record.sources
    )))  # fmt: skip

    out.append("<h2>Stage latency</h2>\n")
    out.append(_table("stages", ["stage", "ms"], (
        ["<tr>", f"<td>{_e(k)}</td>", f'<td class="num">{v:.3f}</td>']
        for k, v in record.stage_latency_ms.items()
    )))  # fmt: skip

    out.append("<h2>Versions and experiment</h2>\n")
    exp = record.experiment
    out.append(_table("versions", ["what", "version"], (
        ["<tr>", f"<td>{_e(k)}</td>", f"<td><code>{_e(v)}</code></td>"]
        for k, v in [*record.versions.items(), ("experiment", exp.get("id") or "none"),
                     ("arm", exp.get("arm", "default"))]
    )))  # fmt: skip

    out.append("<h2>This user's other recent requests</h2>\n")
    if recent:
        out.append('<ul id="recent">' + "".join(
            f'<li><a href="{_e(explain_url(r))}">{_e(r)}</a></li>' for r in recent) + "</ul>\n")  # fmt: skip
    else:
        out.append('<p id="recent">None recorded.</p>\n')
    out.append(f"<p>Raw record: <code>GET /v1/decisions/{_e(quote(rid, safe=''))}</code></p>\n")
    return _page(f"Explain {rid}", out)


def render_not_found() -> str:
    """The one page for an unknown id, another tenant's id, or an expired one (serve it with
    status 404). It names nothing from the request, so it cannot tell them apart."""
    return _page("No such decision", [
        "<h1>No such decision</h1>\n",
        "<p>This API key has no recommendation with that request id. Request ids are kept for "
        "the decision log's retention; check the id and the key.</p>\n",
    ])  # fmt: skip


class RecentRequests:
    """The newest request ids per ``(tenant, user)``, for the explain page's links: at most
    ``per_user`` ids for each of the ``max_users`` most recently seen users (memory stays
    bounded; older requests are still reachable by id). Not thread-safe: one per replica,
    used from its event loop."""

    def __init__(self, max_users: int = 10_000, per_user: int = 20):
        self.max_users = max_users
        self.per_user = per_user
        self._ids: OrderedDict[tuple[str, str], deque[str]] = OrderedDict()

    def add(self, tenant: str, user_id: str, request_id: str) -> None:
        key = (tenant, user_id)
        ids = self._ids.pop(key, None) or deque(maxlen=self.per_user)
        ids.appendleft(request_id)
        self._ids[key] = ids  # now the most recently seen user
        if len(self._ids) > self.max_users:
            self._ids.popitem(last=False)

    def recent(self, tenant: str, user_id: str) -> list[str]:
        """Newest first; empty for a user this replica has not served lately."""
        return list(self._ids.get((tenant, user_id), ()))
