"""Decision records for fixed data, fixed models and fixed requests do not change.

A fingerprint per request of the whole decision record (request ids fixed; latencies left
out), first recorded on the code before the serving layer moved to ``serving/`` (the config
fingerprint left out: it hashes the config's serialised form). The fingerprint is a digest of
everything but the floats (ids, order, provenance, reasons, removals, versions, counts; each
float replaced by a marker), and sums over the floats in record order (plain, position-weighted,
squared) compared within float noise. Floats are not hashed: the same torch and numpy build
rounds the last bits differently on another CPU (AVX-512 against AVX2 kernels, ~1e-7
relative), and digests of floats rounded to 4 decimals changed with the machine when a value
sat on a rounding edge. A refactor of the request path must reproduce every record exactly: the same
candidates with the same provenance, the same removals with the same reasons, the same slate
with the same reasons and propensities, the same versions and degradations.

When a change means to alter what is served, re-record with ``RECORD_DIGESTS=1`` and say why in
the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta

import numpy as np
import pyarrow.compute as pc
import pytest

from core.contracts import Query
from tests.unit.test_pipeline import pipeline, platform, world  # noqa: F401  (fixture)

EXPECTED = {
    "acme-home-0": {"structure": "857a0e31c07b0d28", "floats": 1561, "sums": [515.363139, 161.63266, 1081.879531]},
    "acme-home-1": {"structure": "c9ddb2cf94883aa9", "floats": 1564, "sums": [777.584134, 390.939641, 1175.349634]},
    "acme-home-2": {"structure": "9d06f11149272419", "floats": 1851, "sums": [601.054036, 184.545856, 1141.277088]},
    "acme-home-3": {"structure": "522e474729857a45", "floats": 1617, "sums": [538.680911, 165.837803, 1095.890301]},
    "acme-home-cold": {"structure": "617e0324083a669f", "floats": 1885, "sums": [932.738325, 480.755765, 1273.106449]},
    "acme-home-exclude": {"structure": "55024656e7b1dd01", "floats": 1561, "sums": [515.362514, 161.632036, 1081.879895]},
    "acme-item_page-0": {"structure": "5fceae77a693e02e", "floats": 839, "sums": [145.061605, 15.387464, 295.552404]},
    "acme-item_page-1": {"structure": "72a9acfbbddc1f1f", "floats": 866, "sums": [153.170199, 16.615203, 302.760354]},
    "acme-home-pinned": {"structure": "a6f0be39e06197cc", "floats": 1565, "sums": [777.585508, 391.170288, 1175.351474]},
    "acme-home-no-ranker": {"structure": "381ddd2257a94ecf", "floats": 888, "sums": [385.516443, 151.30903, 1008.148967]},
    # Re-recorded after the move: in process the runtime used to name the loaded ranker in a
    # record no ranker served (the fail-closed path); Serve did not. Both now name only what
    # served, so this record has no "ranker" version.
    "acme-home-policy-down": {"structure": "00469ae86a0053f2", "floats": 574, "sums": [244.797523, 59.439927, 891.471301]},
}


FLOAT_NOISE = 1e-5
"""The most one float may move between CPUs (seen: 1e-6 on a utility); each sum's tolerance is
this times the sum of its weights' magnitudes."""


def _split(value, floats: list[float]):
    """``value`` with every float replaced by a marker, the floats appended in order."""
    if isinstance(value, float):
        floats.append(value)
        return "<float>"
    if isinstance(value, dict):
        return {k: _split(value[k], floats) for k in sorted(value)}
    if isinstance(value, list):
        return [_split(v, floats) for v in value]
    return value


def digest(record) -> dict:
    data = record.model_dump(mode="json")
    data.pop("stage_latency_ms")
    data.pop("trace_id")  # per request, like the latencies (None here: tracing is off)
    # The fingerprint hashes the config's serialised form, which the move changed (slate
    # steps, registered kinds) for the same settings; the settings' effects are all here.
    data["versions"].pop("config_fingerprint", None)
    for s in data["sources"]:
        s.pop("latency_ms")
    floats: list[float] = []
    blob = json.dumps(_split(data, floats), sort_keys=True).encode()
    x = np.asarray(floats, dtype=np.float64)
    w = np.arange(1, len(x) + 1) / max(len(x), 1)
    sums = [float(x.sum()), float((w * x).sum()), float((x * x).sum())]
    return {"structure": hashlib.sha256(blob).hexdigest()[:16], "floats": len(x),
            "sums": [round(v, 6) for v in sums]}  # fmt: skip


def _same(got: dict, want: dict) -> bool:
    """Same structure and float count; each float sum within :data:`FLOAT_NOISE` per float
    (times the largest weight: 1, 1 and twice a value's magnitude for the squares)."""
    if (got["structure"], got["floats"]) != (want["structure"], want["floats"]):
        return False
    n = got["floats"]
    tolerance = [FLOAT_NOISE * n, FLOAT_NOISE * n, FLOAT_NOISE * 2 * max(1.0, abs(got["sums"][2]))]
    return all(abs(a - b) <= t for a, b, t in zip(got["sums"], want["sums"], tolerance, strict=True))


def _users(w) -> list[str]:
    clicks = w["log"].filter(pc.equal(w["log"]["event_type"], "click"))
    return list(dict.fromkeys(clicks["user_id"].to_pylist()))[:4]


def _pinned(raw) -> None:
    home = raw["tenants"][0]["surfaces"]["home"]
    home["slate"]["steps"][0]["items"] = [{"item_id": "i0000013", "position": 1}]


def _safe_list(raw) -> None:
    raw["tenants"][0]["policy"]["safe_fallback"] = ["i0000001", "i0000002", "i0000005", "i0000007", "i0000011"]


def _requests(w):
    users = _users(w)
    some_item = w["log"]["item_id"][0].as_py()
    reqs = [(f"acme-home-{n}", {"user_id": u}, None, {}) for n, u in enumerate(users)]
    reqs.append(("acme-home-cold", {"user_id": "u-never-seen"}, None, {}))
    reqs.append(
        ("acme-home-exclude", {"user_id": users[0],
                               "exclude_item_ids": frozenset({some_item})}, None, {})  # fmt: skip
    )
    for n, u in enumerate(users[:2]):
        reqs.append(
            (f"acme-item_page-{n}", {"user_id": u, "surface": "item_page",
                                     "context": {"item_id": some_item}}, None, {})  # fmt: skip
        )
    reqs.append(("acme-home-pinned", {"user_id": users[1]}, platform(pin=_pinned), {}))
    reqs.append(("acme-home-no-ranker", {"user_id": users[2]}, None, {"ranker": None}))
    reqs.append(
        ("acme-home-policy-down", {"user_id": users[3]}, platform(safe=_safe_list),
         {"policy": None})  # fmt: skip
    )
    return reqs


def test_decision_records_are_unchanged(world) -> None:  # noqa: F811
    import asyncio

    got, records = {}, {}
    for rid, q, config, kw in _requests(world):
        pipe = pipeline(world, config, **kw)
        fields = {"surface": "home", "k": 10, **q}
        query = Query(request_id=rid, tenant_id="acme", now=world["now"] + timedelta(0), **fields)
        record = asyncio.run(pipe.recommend(query)).decision
        got[rid] = digest(record)
        records[rid] = record
    if os.environ.get("RECORD_DIGESTS"):
        print(json.dumps(got, indent=4))
        pytest.skip("recorded")
    # What the recorded requests exercise (so the digests cover every path):
    assert records["acme-home-pinned"].slate[1].reasons == ["pinned"]
    assert records["acme-home-no-ranker"].fallback == "ranker_unavailable"
    assert records["acme-home-policy-down"].fallback == "policy_unavailable"
    assert records["acme-item_page-0"].surface == "item_page"
    assert any(r.reason == "excluded_by_request" for r in records["acme-home-exclude"].removals)
    assert all(r.fallback is None for k, r in records.items() if "-down" not in k
               and "no-ranker" not in k)  # fmt: skip
    assert set(got) == set(EXPECTED)
    changed = {rid: (got[rid], EXPECTED[rid]) for rid in got if not _same(got[rid], EXPECTED[rid])}
    assert not changed, changed


def test_fingerprint_sees_a_moved_float_and_a_swap() -> None:
    """The fingerprint ignores float noise but not a real change: a float moved by 1e-3, two
    floats swapped, or an id changed each fail :func:`_same`; noise of 1e-7 does not."""
    from core.contracts import DecisionRecord

    base = {"request_id": "r", "tenant_id": "acme", "user_id": "u", "surface": "home", "k": 2,
            "at": "2026-01-01T00:00:00Z", "experiment": {"id": "", "arm": "default"},
            "versions": {}, "sources": [], "removals": [], "fallback": None,
            "stage_latency_ms": {}, "degraded": [], "trace_id": None,
            "candidates": {"item_id": ["a", "b", "c"], "utility": [0.5, 0.25, 0.125],
                           "task_scores": {}, "provenance_row": [0, 1, 2],
                           "provenance_source": ["t", "t", "t"], "provenance_version": ["v", "v", "v"],
                           "provenance_score": [0.9, 0.8, 0.7], "provenance_rank": [0, 1, 2]},
            "slate": []}  # fmt: skip

    def fp(**edit):
        raw = json.loads(json.dumps(base))
        raw["candidates"].update(edit)
        return digest(DecisionRecord.model_validate(raw))

    want = fp()
    assert _same(fp(utility=[0.5 + 1e-7, 0.25 - 1e-7, 0.125]), want)
    assert not _same(fp(utility=[0.501, 0.25, 0.125]), want)
    assert not _same(fp(utility=[0.25, 0.5, 0.125]), want)
    assert not _same(fp(item_id=["a", "b", "d"]), want)
