"""The graph with user state and the non-model sources in their own deployments
(``placement: deployment``): events reach them, and a hanging source's timeout holds there.
User state and the non-model sources in the Ingress (the default), with the models in either
place, are covered by test_serving_http.py."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.integration.test_serving_http import (
    ACME,
    _event,
    _recommend,
    check_hanging_source,
    deploy,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def split(ray_connected, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-split")
    yield from deploy(tiny_data, root, placement={"user_state": "deployment", "sources": "deployment",
                                                  "source_kinds": {"two_tower": "deployment"},
                                                  "ranker": "deployment"})  # fmt: skip


def test_the_split_graph_has_its_own_state_and_source_deployments(split):
    from ray import serve

    names = set(serve.status().applications["recsys-test"].deployments)
    assert names == {"Ingress", "UserState", "TwoTowerRetriever", "CandidateSources", "Ranker",
                     "DecisionLog"}  # fmt: skip
    body = _recommend(split).json()
    record = requests.get(f"{split['base']}/v1/decisions/{body['request_id']}", headers=ACME).json()
    assert {s["source"] for s in record["sources"] if s["status"] == "ok"} >= {"two_tower", "trending"}


def test_events_reach_the_state_deployment(split):
    user = "u_split_" + uuid.uuid4().hex[:6]
    first = [i["item_id"] for i in _recommend(split, user_id=user).json()["items"]]
    events = [_event(user, first[0], "hide")]
    r = requests.post(f"{split['base']}/v1/events", json={"events": events}, headers=ACME)
    assert r.status_code == 200 and r.json()["accepted"] == [events[0]["event_id"]]
    assert first[0] not in [i["item_id"] for i in _recommend(split, user_id=user).json()["items"]]


def test_a_hanging_source_in_the_sources_deployment_times_out(split):
    # Faults are stage wrappers in the Ingress (serving.faults): the remote source is delayed
    # in front of its handle, so its timeout in the pipeline is what is exercised.
    check_hanging_source(split, "Ingress")
