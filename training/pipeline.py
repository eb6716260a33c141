"""Every offline step for one tenant, in order: train two-tower, build index, train ranker,
evaluate, launch review (used by ``make demo``).

    python -m training.pipeline --config configs/train/pipeline.yaml --tenant T [--smoke-test]
"""

from __future__ import annotations

import argparse

from core.config import load_model, resolve_uri
from core.train_config import PipelineConfig
from training import build_index, common, evaluate, ranker, review, two_tower


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/train/pipeline.yaml")
    parser.add_argument("--tenant")
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument(
        "--review-advisory",
        action="store_true",
        help="report failed launch checks but exit 0: the candidates stay candidates (make demo)",
    )
    parser.add_argument("--allow-bad-data", metavar="REASON", default=None,
                        help="train although the data-quality gate fails; the reason goes in each model's lineage")  # fmt: skip
    args = parser.parse_args(argv)
    cfg = load_model(resolve_uri(args.config), PipelineConfig)
    tenant = args.tenant or cfg.tenant
    extra = ["--tenant", tenant] + (["--smoke-test"] if args.smoke_test else [])
    common.init_ray()
    steps = [
        ("two_tower", two_tower.main, cfg.two_tower),
        ("build_index", build_index.main, cfg.build_index),
        ("ranker", ranker.main, cfg.ranker),
        ("evaluate", evaluate.main, cfg.evaluate),
        ("review", review.main, args.config),
    ]
    gated = {"two_tower", "ranker"}  # the jobs that read the event log to train
    for name, step, config in steps:
        common.console.rule(f"[bold]{tenant}: {name}")
        allow = ["--allow-bad-data", args.allow_bad_data] if args.allow_bad_data and name in gated else []
        rc = step(["--config", config, *extra, *allow])
        if rc != 0 and name == "review" and args.review_advisory:
            common.console.print(
                "[yellow]launch checks failed: the candidates stay candidates and production "
                "keeps serving (--review-advisory)"
            )
            return 0
        if rc != 0:
            common.console.print(f"[red]{name} exited with {rc}")
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
