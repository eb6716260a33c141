"""What the slate policy costs, per surface: expected clicks (or NDCG@10 where the data has no
click model) against category diversity, catalogue coverage and novelty, over the slate steps'
main knobs; a JSON report, a PNG of the curve, and the setting the defaults should take.

    python -m training.slate_tradeoff --config configs/train/evaluate.yaml --tenant T \\
        [--surface home] [--users 500] [--png docs/img/slate-tradeoff-T.png]

The serving pipeline (:mod:`training.evaluate_pipeline`, candidate versions) answers one request
per held-out user once; the ranked candidates each request hands its slate stage are recorded,
and every slate setting is then applied to those same inputs (the real ``ranking/slate`` steps,
same users and seed). The baseline is the ranker's own order: the top ``k`` by utility with no
step at all. A setting's *cost* is its relative loss against that baseline on the quality metric.

Settings: the diversity step's ``mmr_lambda`` × ``max_per_category`` (with the surface's own
pins, frequency cap and source quotas, without exploration), and exploration on its own (one
slot over the chosen diversity setting), so its cost is reported apart. The recommended
setting is the most diverse one whose cost is at most ``--budget`` (5%).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

MMR_LAMBDAS = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)
MAX_PER_CATEGORY = (None, 5, 4, 3, 2)
K = 10


def _steps_without(slate_cfg, kinds: set[str]) -> list:
    return [s for s in slate_cfg.steps if s.kind not in kinds]


def _settings(slate_cfg) -> list[tuple[str, dict, list]]:
    """(name, knobs, steps) for each setting; steps keep the surface's pins, cap and quotas."""
    from ranking.slate.mmr import DiversityConfig

    base = _steps_without(slate_cfg, {"diversity", "exploration"})
    quotas = next((s.source_quotas for s in slate_cfg.steps if s.kind == "diversity"), {})
    out = [("ranker_order", {"mmr_lambda": 1.0, "max_per_category": None, "exploration": 0}, [])]
    for lam in MMR_LAMBDAS:
        for cap in MAX_PER_CATEGORY:
            step = DiversityConfig(kind="diversity", mmr_lambda=lam, max_per_category=cap, source_quotas=quotas)
            out.append((f"mmr{lam}-cap{cap or 'none'}", {"mmr_lambda": lam, "max_per_category": cap, "exploration": 0}, [*base, step]))
    return out


def _exploration_setting(slate_cfg, chosen: dict | None) -> tuple[str, dict, list]:
    """Exploration's own cost: the chosen diversity setting plus the surface's exploration
    step (one slot by default), against the same setting without it."""
    from ranking.slate.exploration import ExplorationConfig
    from ranking.slate.mmr import DiversityConfig

    base = _steps_without(slate_cfg, {"diversity", "exploration"})
    quotas = next((s.source_quotas for s in slate_cfg.steps if s.kind == "diversity"), {})
    lam, cap = (chosen["mmr_lambda"], chosen["max_per_category"]) if chosen else (1.0, None)
    explore = next((s for s in slate_cfg.steps if s.kind == "exploration"), ExplorationConfig(kind="exploration"))
    div = DiversityConfig(kind="diversity", mmr_lambda=lam, max_per_category=cap, source_quotas=quotas)
    return "exploration", {"mmr_lambda": lam, "max_per_category": cap, "exploration": explore.slots}, [*base, explore, div]


def _metrics(slates: np.ndarray, users, relevant, simulator, catalogue, popularity: np.ndarray) -> dict:
    from training.evaluate_pipeline import category_diversity
    from training.metrics import ranking_metrics

    m = ranking_metrics(slates, relevant, len(catalogue), ks=(K,), ndcg_ks=(K,), hr_ks=(K,), coverage_k=K)
    if simulator is not None:
        m["expected_ctr@10"] = simulator.expected_ctr(users, slates, K)
    m["category_diversity@10"] = category_diversity(slates, catalogue.category)
    listed = slates[slates >= 0]
    share = popularity / max(popularity.sum(), 1.0)
    # Novelty: mean self-information of the listed items, -log2 of their share of interactions.
    m["novelty@10"] = float(np.mean(-np.log2(np.maximum(share[listed], 1e-9)))) if len(listed) else float("nan")
    return m


def run(storage, platform_config: str, versions: dict[str, str], surface: str, users_n: int, seed: int, budget: float) -> dict:
    from core.config import load_platform_config
    from ranking.slate.policy import SlatePolicy
    from training.evaluate import held_out, load_split
    from training.evaluate_pipeline import evaluate_pipeline
    from training.examples import two_tower_examples
    from training.simulated import ClickSimulator

    catalogue = storage.catalogue()
    data = load_split(two_tower_examples(storage, 8))
    test_all = data["split"] == "test"
    cutoff = dict(zip(data["user_id"][test_all].tolist(), data["ts"][test_all].tolist(), strict=True))
    rows, exclude, relevant = held_out(data, "test", users_n, seed)
    users = data["user_id"][rows]
    simulator = ClickSimulator.load(storage.data, storage.tenant, catalogue)
    item0 = data["item"] - 1
    popularity = np.bincount(item0[(data["split"] == "train") & (item0 >= 0)], minlength=len(catalogue)).astype(np.float64)
    recorded: list[tuple] = []

    def record(pipe) -> None:
        plans = pipe.stages.plans
        for key, plan in list(plans.items()):
            if key[0] != surface:
                continue

            def slate(query, scored, state, _real=plan.slate):
                recorded.append((query, list(scored), state))
                return _real(query, scored, state)

            plans[key] = replace(plan, slate=slate)

    evaluate_pipeline(storage, platform_config, versions, users, data["ts"][rows], exclude, relevant, cutoff,
                      k=K, simulator=simulator, on_pipeline=record)  # fmt: skip
    tenant = next(t for t in load_platform_config(platform_config).tenants if t.id == storage.tenant)
    slate_cfg = tenant.surfaces[surface].slate
    results = []

    def measure(name, knobs, steps) -> dict:
        policy = SlatePolicy.from_config(slate_cfg.model_copy(update={"steps": steps}), catalogue)
        slates = np.full((len(recorded), K), -1, dtype=np.int64)
        for r, (query, scored, state) in enumerate(recorded):
            if steps:
                ids = [s.item_id for s in policy(replace(query, k=K), scored, state).items]
            else:  # the ranker's own order
                ids = [c.item_id for c in sorted(scored, key=lambda c: -c.utility)[:K]]
            idx = catalogue.index_of(ids)[:K]
            slates[r, : len(idx)] = idx
        m = _metrics(slates, users[: len(recorded)], relevant[: len(recorded)], simulator, catalogue, popularity)
        return {"name": name, **knobs, **m}

    quality = "expected_ctr@10" if simulator is not None else "ndcg@10"
    results = [measure(*setting) for setting in _settings(slate_cfg)]
    base = results[0][quality]
    for r in results:
        r["cost"] = 1.0 - r[quality] / base if base else float("nan")
    chosen = max((r for r in results[1:] if r["cost"] <= budget), key=lambda r: (r["category_diversity@10"], -r["cost"]), default=None)
    explore = measure(*_exploration_setting(slate_cfg, chosen))
    explore["cost"] = 1.0 - explore[quality] / base if base else float("nan")
    # Exploration's own cost: against the chosen setting without it.
    explore["cost_of_exploration"] = 1.0 - explore[quality] / chosen[quality] if chosen and chosen[quality] else float("nan")
    results.append(explore)
    current = {s.kind: s for s in slate_cfg.steps}
    div = current.get("diversity")
    return {
        "tenant": storage.tenant,
        "surface": surface,
        "users": len(recorded),
        "quality_metric": quality,
        "budget": budget,
        "versions": versions,
        "configured": {"mmr_lambda": getattr(div, "mmr_lambda", None), "max_per_category": getattr(div, "max_per_category", None),
                       "exploration": getattr(current.get("exploration"), "slots", 0)},  # fmt: skip
        "recommended": chosen,
        "settings": results,
    }


def draw(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = report["quality_metric"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    rows = [r for r in report["settings"] if r["name"].startswith("mmr")]
    for cap in MAX_PER_CATEGORY:
        pts = sorted((r for r in rows if r["max_per_category"] == cap), key=lambda r: r["category_diversity@10"])
        ax.plot([r["category_diversity@10"] for r in pts], [r[q] for r in pts], marker="o", ms=3,
                label=f"max {cap} per category" if cap else "no category cap")  # fmt: skip
    base = report["settings"][0]
    ax.axhline(base[q] * (1 - report["budget"]), color="grey", ls="--", lw=0.8, label=f"{report['budget']:.0%} below the ranker's order")
    ax.scatter([base["category_diversity@10"]], [base[q]], color="black", zorder=5, label="ranker's own order")
    explore = report["settings"][-1]
    ax.scatter([explore["category_diversity@10"]], [explore[q]], color="red", marker="x", zorder=5,
               label=f"+ exploration ({explore['exploration']} slot): {explore['cost_of_exploration']:+.1%}")  # fmt: skip
    if report["recommended"]:
        r = report["recommended"]
        ax.scatter([r["category_diversity@10"]], [r[q]], s=120, facecolors="none", edgecolors="green", zorder=6,
                   label=f"default: mmr {r['mmr_lambda']}, max {r['max_per_category'] or '-'}/category")  # fmt: skip
    ax.set_xlabel("category diversity@10 (share of item pairs in different categories)")
    ax.set_ylabel(q)
    ax.set_title(f"slate policy trade-off: {report['tenant']} / {report['surface']}, {report['users']} held-out users")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    from core.train_config import EvaluateConfig
    from training import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/train/evaluate.yaml")
    parser.add_argument("--tenant")
    parser.add_argument("--surface", default="home")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--budget", type=float, default=0.05, help="largest relative cost of the default setting")
    parser.add_argument("--png", help="where to draw the curve (default: docs/img/slate-tradeoff-<tenant>-<surface>.png)")
    args = parser.parse_args(argv)
    cfg = common.load_job_config(argparse.Namespace(config=args.config, tenant=args.tenant, smoke_test=False), EvaluateConfig)
    common.init_ray()
    storage = common.JobStorage(cfg)
    registry = storage.registry()
    versions = {k: registry.resolve(k, cfg.tenant, a) for k, a in
                (("two_tower", cfg.two_tower_alias), ("ann_index", cfg.index_alias), ("ranker", cfg.ranker_alias))}  # fmt: skip
    versions = {k: v for k, v in versions.items() if v}
    if "two_tower" not in versions or "ann_index" not in versions:
        common.console.print(f"[red]slate_tradeoff {cfg.tenant}: needs a two_tower and an ann_index ({cfg.two_tower_alias})")
        return 2
    t0 = time.perf_counter()
    report = run(storage, cfg.platform_config, versions, args.surface, args.users, cfg.seed, args.budget)
    png = draw(report, Path(args.png or f"docs/img/slate-tradeoff-{cfg.tenant}-{args.surface}.png"))
    out = common.write_json(storage.work / "reports" / f"slate-tradeoff-{args.surface}-{time.strftime('%Y%m%dT%H%M%S')}.json", report)
    q = report["quality_metric"]
    rows = [(r["name"], f"{q} {r[q]:.4f}  cost {r['cost']:+.1%}  diversity {r['category_diversity@10']:.3f}  "
                        f"coverage {r['coverage@10']:.3f}  novelty {r['novelty@10']:.2f}  hr@10 {r['hr@10']:.3f}")
            for r in report["settings"]]  # fmt: skip
    rec = report["recommended"]
    explore = report["settings"][-1]
    rows.append(("exploration's own cost", f"{explore['cost_of_exploration']:+.1%} of the chosen setting's {q} ({explore['exploration']} slot)"))
    rows.append(("configured now", json.dumps(report["configured"])))
    rows.append(("recommended", f"mmr_lambda {rec['mmr_lambda']}, max_per_category {rec['max_per_category']} (cost {rec['cost']:+.1%})" if rec else "none within budget"))
    rows.append(("seconds", f"{time.perf_counter() - t0:.0f}"))
    common.summary_table(f"slate trade-off {cfg.tenant}/{args.surface}: {report['users']} users", rows)
    print(f"report: {out}\nplot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
