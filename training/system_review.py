"""Launch review of the system, not only the model: what the whole pipeline serves.

A model can pass its own validation metrics and still make the served slate worse (a ranker
that reorders the retriever's candidates away from what users click). So the launch review
replays the serving pipeline (:mod:`training.evaluate_pipeline`, the code a Serve replica runs)
on held-out users of the evaluation protocol — once with the candidate versions, once with
production's, same users and seed — and scores each stage's top 10:

* ``retriever``: the candidate two-tower alone over the whole catalogue (exact search), the
  order serving would have without ranker and slate policy;
* ``by_two_tower_score`` / ``by_ranker_click`` / ``by_ranker_utility``: the ranked candidates
  ordered by the two-tower's score, the ranker's click probability, its utility;
* ``final_slate``: what the pipeline answered.

Checks (each tagged ``offline_metrics``): the final slate does not lose any of
``system.metrics`` against production's beyond ``system.tolerance`` (relative), and does not
fall below the retriever's own order by more than ``system.retriever_budget[metric]``.

Each check answers for the kind whose change it measures (:func:`checks_by_kind`): the
retriever floor is the ranker's (the stages after retrieval must earn their place); a two-tower
answers for the slate it serves with production's ranker (none on a first launch) against
production's slate. A first launch whose ranker loses against the retriever thus refuses the
ranker and lets the two-tower and its index through, to serve in the fallback order.
``expected_ctr@10`` needs the data's click model (synthetic tenants); elsewhere it is skipped
and said so.
"""

from __future__ import annotations

import numpy as np

from core.train_config import EvaluateConfig, SystemReviewConfig
from training import common

STAGES = ("retriever", "by_two_tower_score", "by_ranker_click", "by_ranker_utility", "final_slate")
K = 10


def replay(storage, evaluate_cfg: EvaluateConfig, versions: dict[str, str], cfg: SystemReviewConfig) -> dict[str, dict]:
    """Stage -> metrics (``hr@10``, ``ndcg@10``, ``coverage@10``, ``category_diversity@10`` and,
    with a click model, ``expected_ctr@10``) of ``versions`` (two_tower, ann_index[, ranker])
    on the protocol's held-out users."""
    from retrieval.two_tower import TwoTowerModel
    from training.evaluate import exact_two_tower_top, held_out, load_split
    from training.evaluate_pipeline import category_diversity, evaluate_pipeline
    from training.examples import two_tower_examples
    from training.metrics import ranking_metrics
    from training.simulated import ClickSimulator

    catalogue = storage.catalogue()
    data = load_split(two_tower_examples(storage, evaluate_cfg.num_partitions))
    test_all = data["split"] == "test"
    cutoff = dict(zip(data["user_id"][test_all].tolist(), data["ts"][test_all].tolist(), strict=True))
    rows, exclude, relevant = held_out(data, "test", cfg.users, cfg.seed)
    users = data["user_id"][rows]
    simulator = ClickSimulator.load(storage.data, storage.tenant, catalogue)
    model = TwoTowerModel.load(storage.registry().local_path("two_tower", storage.tenant, versions["two_tower"]))
    top, _ = exact_two_tower_top(model, catalogue, data, rows, exclude)
    top = top[:, :K]
    retriever = ranking_metrics(top, relevant, len(catalogue), ks=(K,), ndcg_ks=(K,), hr_ks=(K,), coverage_k=K)
    retriever[f"category_diversity@{K}"] = category_diversity(top, catalogue.category)
    if simulator is not None:
        retriever[f"expected_ctr@{K}"] = simulator.expected_ctr(users, top, K)
    report = evaluate_pipeline(storage, evaluate_cfg.platform_config, versions, users, data["ts"][rows], exclude,
                               relevant, cutoff, k=K, simulator=simulator)  # fmt: skip
    return {"retriever": retriever, **report["stages"]}


def system_checks(candidate: dict[str, dict], production: dict[str, dict] | None, cfg: SystemReviewConfig) -> dict[str, dict]:
    """Check name -> ``{"ok", "detail", "item"}`` from :func:`replay` results."""
    final = candidate["final_slate"]
    checks: dict[str, dict] = {}
    skipped = [m for m in cfg.metrics if m not in final]
    compared = [m for m in cfg.metrics if m in final]
    note = f" ({', '.join(skipped)}: no click model for this data)" if skipped else ""
    if production is None:
        checks["system_vs_production"] = _check(True, "no production versions to compare with" + note)
    else:
        lost = [f"{m} {final[m]:.4f} < production {production['final_slate'][m]:.4f}"
                for m in compared if m in production["final_slate"]
                and final[m] < production["final_slate"][m] * (1 - cfg.tolerance)]  # fmt: skip
        detail = "; ".join(lost) or ", ".join(f"{m} {final[m]:.4f} vs {production['final_slate'].get(m, float('nan')):.4f}" for m in compared)
        checks["system_vs_production"] = _check(not lost, detail + note)
    below = []
    parts = []
    for m, budget in cfg.retriever_budget.items():
        if m not in final or m not in candidate["retriever"]:
            continue
        floor = candidate["retriever"][m] * (1 - budget)
        parts.append(f"{m} {final[m]:.4f} vs retriever {candidate['retriever'][m]:.4f} (floor {floor:.4f})")
        if final[m] < floor:
            below.append(parts[-1])
    checks["system_vs_retriever"] = _check(not below, "; ".join(below or parts) or "no metric to compare")
    return checks


def checks_by_kind(
    under_review: set[str],
    candidate: dict[str, dict],
    production: dict[str, dict] | None,
    retrieval: dict[str, dict] | None,
    cfg: SystemReviewConfig,
) -> dict[str, dict[str, dict]]:
    """Kind -> the whole-pipeline checks it answers for.

    ``candidate``: the stages of the candidate set (every kind under review, production for
    the others); ``retrieval``: the stages of the two-tower candidate with production's ranker
    (or none), when that differs from the candidate set, i.e. when the ranker is under review
    too. A ranker answers for the candidate set's slate against production and against the
    retriever's own order; a two-tower answers for its own slate against production only: it
    *is* the retriever, so the floor measures what comes after it, not it.
    """
    out: dict[str, dict[str, dict]] = {}
    checks = system_checks(candidate, production, cfg)
    if "ranker" in under_review:
        out["ranker"] = checks
    if "two_tower" in under_review:
        own = checks if retrieval is None else system_checks(retrieval, production, cfg)
        out["two_tower"] = {"system_vs_production": own["system_vs_production"]}
    return out


def _check(ok: bool, detail: str) -> dict:
    return {"ok": bool(ok), "detail": detail, "item": "offline_metrics"}


def stage_table(candidate: dict[str, dict], production: dict[str, dict] | None, title: str):
    """A rich table: one row per stage, candidate (and production) metrics side by side."""
    from rich.table import Table

    metrics = [m for m in ("expected_ctr@10", "ndcg@10", "hr@10", "category_diversity@10", "coverage@10")
               if m in candidate["final_slate"]]  # fmt: skip
    table = Table(title=title)
    table.add_column("stage (top 10)")
    for m in metrics:
        table.add_column(m, justify="right")
        if production is not None:
            table.add_column(f"{m} prod", justify="right", style="dim")
    for stage in STAGES:
        cells = []
        for m in metrics:
            cells.append(_fmt(candidate.get(stage, {}).get(m)))
            if production is not None:
                cells.append(_fmt(production.get(stage, {}).get(m)))
        table.add_row(stage, *cells)
    return table


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def review_system(storage, versions: dict[str, str], production: dict[str, str] | None, cfg: SystemReviewConfig,
                  evaluate_cfg: EvaluateConfig) -> tuple[dict[str, dict], dict, dict | None]:  # fmt: skip
    """Replays candidate and production; returns (checks, candidate stages, production stages)."""
    cand = replay(storage, evaluate_cfg, versions, cfg)
    prod = replay(storage, evaluate_cfg, production, cfg) if production else None
    checks = system_checks(cand, prod, cfg)
    common.console.print(stage_table(cand, prod, f"launch review {storage.tenant}: what the pipeline serves, "
                                                  f"{cfg.users} held-out users, candidate vs production"))  # fmt: skip
    return checks, cand, prod
