"""The experiment readout without Ray: its per-batch and per-group steps composed with
pyarrow (the job composes the same steps with Ray Data; tests/integration/test_analyze_experiment.py runs it),
and its statistics on data with a known effect."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pyarrow as pa
import pytest

from core.experiments import assign
from tests.unit.experiment_data import experiment, synth
from training import analyze_experiment as job
from training.experiment_stats import (
    ArmMoments,
    Estimate,
    analyze,
    guardrail_verdict,
    rate,
    srm_p_value,
)

SAME = {"click": 0.10, "like": 0.04, "hide": 0.02}


def _readout(exp, records, events: pa.Table, **kw) -> dict:
    lines = np.array([r.model_dump_json() for r in records], dtype=object)
    tagged = pa.concat_tables([job.exposures_from_lines({"text": lines}, exp.id),
                               job.outcome_flags(events.select(["request_id", "event_type"]))])  # fmt: skip
    # The job's group-by request id: sorted, each run of one id is a group (zero-copy slices).
    tagged = tagged.sort_by("request_id")
    ids = tagged["request_id"].to_pylist()
    starts = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]] + [len(ids)]
    outcomes = pa.concat_tables([job.attribute_outcomes(tagged.slice(a, b - a)) for a, b in pairwise(starts)])
    per_user = outcomes.group_by(["arm", "user_id"], use_threads=False).aggregate(
        [(c, "sum") for c in ("exposure", "fallback", *job.OUTCOMES)])  # fmt: skip
    per_user = per_user.rename_columns([f"sum({c.removesuffix('_sum')})" if c.endswith("_sum") else c
                                        for c in per_user.column_names])  # fmt: skip
    return _readout_of_users(exp, per_user, **kw)


def _readout_of_users(exp, per_user: pa.Table, **kw) -> dict:
    """The readout from the per-(arm, user) sums on: the job's per-user moments, summed per
    arm, analysed."""
    moments = job.user_moments(per_user)
    by_arm = moments.group_by("arm", use_threads=False).aggregate([(c, "sum") for c in job.MOMENT_COLUMNS])
    rows = [{("arm" if k == "arm" else f"sum({k.removesuffix('_sum')})"): v for k, v in row.items()}
            for row in by_arm.to_pylist()]  # fmt: skip
    m, counts = job.arm_moments(rows)
    return analyze(m, counts, job.plan_of(exp), **kw)


def test_the_readout_names_the_better_arm_and_not_the_a_a_copy() -> None:
    exp = experiment({"control": 34, "copy": 33, "better": 33})
    rates = {"control": SAME, "copy": SAME, "better": {**SAME, "click": 0.14}}
    records, events = synth(exp, rates, users=3000, seed=1)
    rep = _readout(exp, records, events)
    assert rep["better_arms"] == ["better"]
    diff = rep["comparisons"]["better"]["click_rate"]["difference"]
    assert 0 < diff["ci_low"] < 0.04 < diff["ci_high"]  # the true +0.04 is inside, 0 is not
    copy = rep["comparisons"]["copy"]["click_rate"]
    assert copy["verdict"] == "no_difference" and copy["difference"]["ci_low"] < 0 < copy["difference"]["ci_high"]
    assert rep["sample_ratio"]["ok"]
    assert [g["verdict"] for g in rep["guardrails"]["better"]] in (["pass"], ["inconclusive"])
    # Every request is an exposure; events without a request id are not attributed.
    assert sum(a["exposures"] for a in rep["arms"].values()) == len(records)
    clicks = sum(1 for e in events.to_pylist() if e["event_type"] == "click" and e["request_id"])
    got = sum(a["click_rate"]["value"] * a["exposures"] for a in rep["arms"].values())
    assert round(got) == clicks


def test_one_request_is_one_exposure_whatever_its_events() -> None:
    """The join's per-request step: a slate clicked twice was clicked once; a request the
    experiment did not expose (events answering another request) is no row."""
    rows = [("r1", "u1", "a", 0, 1, 0, 0, 0), ("r1", None, None, 0, 0, 1, 0, 0),
            ("r1", None, None, 0, 0, 1, 0, 1)]  # fmt: skip
    group = pa.Table.from_pylist([dict(zip(job.TAGGED.names, r, strict=True)) for r in rows], schema=job.TAGGED)
    assert job.attribute_outcomes(group).to_pylist() == [
        {"request_id": "r1", "user_id": "u1", "arm": "a", "fallback": 0, "exposure": 1, "clicked": 1, "liked": 0, "hid": 1}]
    assert job.attribute_outcomes(group.slice(1)).num_rows == 0


def test_a_worse_hide_rate_fails_its_guardrail_and_voids_the_win() -> None:
    exp = experiment({"control": 50, "treatment": 50})
    rates = {"control": SAME, "treatment": {**SAME, "click": 0.14, "hide": 0.06}}
    rep = _readout(exp, *synth(exp, rates, users=3000, seed=2))
    assert rep["comparisons"]["treatment"]["click_rate"]["verdict"] == "better"
    assert [g["verdict"] for g in rep["guardrails"]["treatment"]] == ["fail"]
    assert rep["better_arms"] == []


def test_a_a_readouts_name_an_arm_about_five_percent_of_the_time() -> None:
    """Over 400 seeded A/A experiments of 400 users, the 95% interval names an arm about 5% of
    the time: the intervals are calibrated, neither too narrow (many false wins) nor too wide.

    A simulation of the statistics: each user's exposures (1 + Poisson(2)) and clicks, likes,
    hides (binomial per exposure, the same rates in both arms) are drawn as the per-(arm, user)
    sums the job's join produces, and go through the job's steps from there
    (``user_moments``, the per-arm sums, ``arm_moments``, ``analyze``). The steps before it
    (decision-log lines, attribution by request id) hold an A/A twin in
    ``test_the_readout_names_the_better_arm_and_not_the_a_a_copy``: they pass each user's
    counts on unchanged, so their rates need no Monte Carlo of their own. Vectorised, 400
    experiments cost less than the 40 a record-by-record synthesis could afford, and bound
    the rate on both sides. Under calibration (named ~ Binomial(400, 0.05), 20 expected)
    P(named < 9) = 0.2% and P(named > 33) = 0.2%; intervals naming an arm 10% of the time
    fail with probability 0.86 (the former test, 40 experiments and at most 6 named: 0.10),
    intervals that never exclude zero always fail."""
    exp = experiment({"control": 50, "twin": 50})
    users = [f"u-{u}" for u in range(400)]
    arms = pa.array([assign([exp], "acme", "home", u).arm for u in users])
    assert 0.4 < np.mean(np.asarray(arms.to_pylist()) == "twin") < 0.6
    named = 0
    for seed in range(400):
        rng = np.random.default_rng(100 + seed)
        n = 1 + rng.poisson(2.0, len(users))
        sums = {"arm": arms, "user_id": pa.array(users), "sum(exposure)": n, "sum(fallback)": np.zeros(len(n), np.int64)}
        for outcome, event in zip(job.OUTCOMES, ("click", "like", "hide"), strict=True):
            sums[f"sum({outcome})"] = rng.binomial(n, SAME[event])
        rep = _readout_of_users(exp, pa.table(sums))
        named += bool(rep["better_arms"]) or rep["comparisons"]["twin"]["click_rate"]["verdict"] != "no_difference"
    assert 9 <= named <= 33, named


def test_delta_method_matches_the_binomial_when_each_user_has_one_exposure() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(10_000) < 0.2).astype(float)
    m = ArmMoments(users=len(y), sum_n=len(y), sum_y=y.sum(), sum_nn=len(y), sum_yy=(y * y).sum(), sum_ny=y.sum())
    est = rate(m, 0.95)
    p = y.mean()
    half = 1.959964 * np.sqrt(p * (1 - p) / len(y))
    assert est.value == pytest.approx(p)
    assert est.high - est.value == pytest.approx(half, rel=1e-3)


def test_guardrails_srm_and_thin_arms() -> None:
    # lower is better for hides: +20% hides with an interval above zero fails a 10% guardrail
    assert guardrail_verdict("hide_rate", Estimate(0.2, 0.12, 0.28), 0.10) == "fail"
    assert guardrail_verdict("hide_rate", Estimate(0.02, -0.03, 0.07), 0.10) == "pass"
    assert guardrail_verdict("click_rate", Estimate(-0.02, -0.15, 0.1), 0.10) == "inconclusive"
    assert guardrail_verdict("click_rate", Estimate(-0.2, None, None), 0.10) == "insufficient_data"
    assert srm_p_value({"a": 5000, "b": 5000}, {"a": 50, "b": 50}) == 1.0
    assert srm_p_value({"a": 5300, "b": 4700}, {"a": 50, "b": 50}) < 0.001
    assert 0.2 < srm_p_value({"a": 5050, "b": 4950}, {"a": 50, "b": 50}) < 0.4  # chi2=1: p=0.317
    one = ArmMoments(users=1, sum_n=3, sum_y=1, sum_nn=9, sum_yy=1, sum_ny=3)
    rep = analyze({"control": {m: one for m in ("click_rate", "like_rate", "hide_rate")},
                   "t": {m: one for m in ("click_rate", "like_rate", "hide_rate")}},
                  {"control": {"users": 1}, "t": {"users": 1}},
                  {"control": "control", "primary_metric": "click_rate", "guardrails": [], "weights": {}})  # fmt: skip
    assert rep["comparisons"]["t"]["click_rate"]["verdict"] == "insufficient_data"
    assert rep["better_arms"] == []
