"""The data-quality gate over a tenant's event log, as a job (checks: :mod:`training.quality_checks`).

    python -m training.quality_gate --config configs/train/quality_gate.yaml [--tenant T]

A Ray Data pass summarises each block of the event log, the summaries are judged against
``configs/train/quality_gate.yaml`` and the report is written under
``<work_dir>/<tenant>/quality/<data fingerprint>.json``, where the training jobs find it (they
run the same gate themselves when it is missing). Exit status 0 = every check passed.
"""

from __future__ import annotations

from core.train_config import QualityGateConfig
from training import common
from training.quality_checks import DEFAULT_CONFIG, run_gate, summary_rows


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], DEFAULT_CONFIG, argv)
    cfg = common.load_job_config(args, QualityGateConfig)
    common.init_ray()
    storage = common.JobStorage(cfg)
    rep, path = run_gate(storage, cfg)
    common.summary_table(f"data quality gate {cfg.tenant}: {'passed' if rep['passed'] else 'FAILED'}",
                         [*summary_rows(rep), ("report", str(path))])  # fmt: skip
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

