"""The statistics of an experiment readout (pure numpy + stdlib; no Ray, no scipy).

Arms are randomised by user, so exposures of one user are not independent: a rate is the
ratio of two per-user sums (outcomes / exposures), and its variance comes from the delta
method over users (Deng et al., "Applying the Delta Method in Metric Analytics", 2018), not
from a binomial over exposures, which would understate it for heavy users. Intervals are
normal approximations at ``confidence``; a difference between independent arms adds their
variances. The relative interval is the difference's interval over control's rate (control's
own noise in that denominator is ignored: a first-order approximation, stated in the report).

Inputs are per-arm sufficient statistics over users (:class:`ArmMoments`), so the Ray job
aggregates users in parallel and only a few numbers per arm reach this module.

Invariants: an arm with fewer than two users has no interval (``None``) and every verdict
about it is ``insufficient_data``; a verdict of ``better``/``worse``/``fail`` needs an interval
that excludes zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

GOOD_DIRECTION = {"click_rate": 1, "like_rate": 1, "hide_rate": -1}
"""+1: higher is better; -1: lower is better (a hide is a complaint)."""
OUTCOME = {"click_rate": "clicked", "like_rate": "liked", "hide_rate": "hid"}
"""Metric → the per-exposure outcome column it is the rate of."""


@dataclass(frozen=True)
class ArmMoments:
    """Per-user sums for one arm and one outcome: ``n`` exposures and ``y`` outcomes per user,
    summed over users as ``users``, ``sum_n``, ``sum_y``, ``sum_nn``, ``sum_yy``, ``sum_ny``."""

    users: int
    sum_n: float
    sum_y: float
    sum_nn: float
    sum_yy: float
    sum_ny: float


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float | None
    high: float | None

    def excludes_zero(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


def z_for(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def ratio_variance(m: ArmMoments) -> tuple[float, float | None]:
    """``(rate, variance of the rate)``; the variance is ``None`` below two users."""
    if m.sum_n <= 0:
        return math.nan, None
    rate = m.sum_y / m.sum_n
    if m.users < 2:
        return rate, None
    k = m.users
    mean_n, mean_y = m.sum_n / k, m.sum_y / k
    var_n = (m.sum_nn - k * mean_n**2) / (k - 1)
    var_y = (m.sum_yy - k * mean_y**2) / (k - 1)
    cov = (m.sum_ny - k * mean_n * mean_y) / (k - 1)
    var = (var_y - 2 * rate * cov + rate**2 * var_n) / (k * mean_n**2)
    return rate, max(var, 0.0)


def rate(m: ArmMoments, confidence: float) -> Estimate:
    value, var = ratio_variance(m)
    if var is None:
        return Estimate(value, None, None)
    half = z_for(confidence) * math.sqrt(var)
    return Estimate(value, max(0.0, value - half), min(1.0, value + half))


def difference(treatment: ArmMoments, control: ArmMoments, confidence: float) -> Estimate:
    """``rate(treatment) - rate(control)`` with its interval (independent arms)."""
    rt, vt = ratio_variance(treatment)
    rc, vc = ratio_variance(control)
    diff = rt - rc
    if vt is None or vc is None:
        return Estimate(diff, None, None)
    half = z_for(confidence) * math.sqrt(vt + vc)
    return Estimate(diff, diff - half, diff + half)


def relative(diff: Estimate, control_rate: float) -> Estimate:
    if not control_rate or math.isnan(control_rate):
        return Estimate(math.nan, None, None)
    if diff.low is None:
        return Estimate(diff.value / control_rate, None, None)
    return Estimate(diff.value / control_rate, diff.low / control_rate, diff.high / control_rate)


def effect_verdict(metric: str, diff: Estimate) -> str:
    """``better``/``worse`` when the interval excludes zero, ``no_difference`` when it holds
    zero, ``insufficient_data`` without an interval."""
    if diff.low is None:
        return "insufficient_data"
    if not diff.excludes_zero():
        return "no_difference"
    return "better" if diff.value * GOOD_DIRECTION[metric] > 0 else "worse"


def guardrail_verdict(metric: str, rel: Estimate, max_degradation: float) -> str:
    """``fail`` when the arm is significantly worse and its point estimate worsens the metric
    by more than ``max_degradation`` (relative to control); ``pass`` when even the interval's
    worse end stays within it; ``inconclusive`` otherwise (run longer, or the arm is close
    to the line); ``insufficient_data`` without an interval."""
    if rel.low is None:
        return "insufficient_data"
    sign = GOOD_DIRECTION[metric]
    worsening = -sign * rel.value  # > 0: worse than control
    worst = max(-sign * rel.low, -sign * rel.high)
    significant_worse = rel.excludes_zero() and worsening > 0
    if significant_worse and worsening > max_degradation:
        return "fail"
    if worst <= max_degradation:
        return "pass"
    return "inconclusive"


def srm_p_value(users: dict[str, int], weights: dict[str, float]) -> float | None:
    """Sample-ratio mismatch: the p-value of Pearson's chi-square test of users per arm
    against the planned weights (Wilson–Hilferty's normal approximation of the chi-square
    tail). A tiny p-value means assignment or logging is broken and no effect can be trusted."""
    total, wsum = sum(users.values()), sum(weights.values())
    arms = [a for a in weights if weights[a] > 0]
    if total == 0 or len(arms) < 2:
        return None
    chi2 = sum((users.get(a, 0) - total * weights[a] / wsum) ** 2 / (total * weights[a] / wsum)
               for a in arms)  # fmt: skip
    df = len(arms) - 1
    if chi2 == 0:
        return 1.0
    z = ((chi2 / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 1 - NormalDist().cdf(z)


def analyze(moments: dict[str, dict[str, ArmMoments]], exposures: dict[str, dict[str, Any]],
            plan: dict[str, Any], confidence: float = 0.95, srm_alpha: float = 0.001) -> dict[str, Any]:  # fmt: skip
    """The readout of one experiment.

    ``moments``: arm → metric → :class:`ArmMoments`; ``exposures``: arm → ``{"exposures",
    "users", "fallback"}`` counts; ``plan``: the experiment's ``control``, ``primary_metric``,
    ``guardrails`` (``[{"metric", "max_degradation"}]``) and ``weights`` (arm → weight).
    Returns a JSON-able report: per-arm rates, each treatment's difference and relative
    change vs control per metric, guardrail verdicts, the sample-ratio check, and
    ``better_arms``: treatments better on the primary metric with no failed guardrail."""
    control, primary = plan["control"], plan["primary_metric"]
    metrics = list(GOOD_DIRECTION)
    report: dict[str, Any] = {
        "control": control, "primary_metric": primary, "confidence": confidence,
        "method": "per-user delta-method normal intervals; relative = difference / control rate",
        "arms": {}, "comparisons": {}, "guardrails": {},
    }  # fmt: skip
    for arm, by_metric in moments.items():
        report["arms"][arm] = {
            **exposures.get(arm, {}),
            **{m: rate(by_metric[m], confidence).as_dict() for m in metrics},
        }
    users = {arm: int(e.get("users", 0)) for arm, e in exposures.items()}
    p = srm_p_value(users, plan.get("weights", {}))
    report["sample_ratio"] = {"users": users, "p_value": p, "ok": p is None or p >= srm_alpha}
    better = []
    if control not in moments:
        report["error"] = f"no exposures of the control arm {control!r}"
        report["better_arms"] = []
        return report
    for arm in moments:
        if arm == control:
            continue
        comp, rails = {}, []
        for m in metrics:
            diff = difference(moments[arm][m], moments[control][m], confidence)
            rel = relative(diff, ratio_variance(moments[control][m])[0])
            comp[m] = {"difference": diff.as_dict(), "relative": rel.as_dict(),
                       "verdict": effect_verdict(m, diff)}  # fmt: skip
        for g in plan.get("guardrails", []):
            rel = Estimate(**{k: comp[g["metric"]]["relative"][c] for k, c in
                              (("value", "value"), ("low", "ci_low"), ("high", "ci_high"))})  # fmt: skip
            rails.append({**g, "verdict": guardrail_verdict(g["metric"], rel, g["max_degradation"])})
        report["comparisons"][arm], report["guardrails"][arm] = comp, rails
        if comp[primary]["verdict"] == "better" and not any(r["verdict"] == "fail" for r in rails):
            better.append(arm)
    if not report["sample_ratio"]["ok"]:
        better = []  # a broken split invalidates every comparison
    report["better_arms"] = sorted(
        better, key=lambda a: -GOOD_DIRECTION[primary] * report["comparisons"][a][primary]["difference"]["value"]
    )
    return report
