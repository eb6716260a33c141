"""One trace per request across a real Serve graph: Ingress → TwoTowerRetriever → Ranker, each
in its own replica process, exported over real OTLP/HTTP.

The app is deployed as ``recsys deploy`` deploys it (a declarative config with Ray Serve's own
``tracing_config`` naming ``serving.tracing:otlp_span_processors``); every replica's exporter
posts protobuf to a receiver on loopback in this process (``OTEL_EXPORTER_OTLP_ENDPOINT`` in
the app's ``runtime_env``), so spans from every process are checked together. Export is
batched, so arrival is polled with a bounded deadline.
"""

from __future__ import annotations

import pytest
import requests

from tests.integration.test_serving_http import ACME, GLOBEX, deploy
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def traced(ray_connected, tiny_data, tmp_path_factory):
    with OtlpReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        for ctx in deploy(tiny_data, tmp_path_factory.mktemp("traced"), tracing_env=env):
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
