"""What the training-job tests share: a platform config over the session's tiny data, and the
two-tower examples (and the data-quality report) built once per session and copied into each
test's work dir, so no test builds the same examples again.

Jobs reuse what they find under ``<work_dir>/<tenant>/`` (:mod:`training.examples`,
:func:`training.quality_checks.gate_for_training`): a copied seed is what a second job on the
same data sees after a first one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TENANT = "acme"


def platform_for(data: Path, root: Path) -> Path:
    """``configs/platform.yaml`` with its storage roots on ``data`` (read-only, shared) and on
    ``root`` (registry, decisions); written to ``root/platform.yaml``."""
    platform = yaml.safe_load((REPO / "configs/platform.yaml").read_text())
    platform["storage"] = {
        "data": str(data),
        "events": str(data / "events"),
        "registry": str(root / "registry"),
        "decisions": str(root / "decisions"),
    }
    path = root / "platform.yaml"
    path.write_text(yaml.safe_dump(platform))
    return path


def build_seed(data: Path, root: Path) -> Path:
    """Run the data-quality gate and build the two-tower examples of ``TENANT`` on ``data``
    with the jobs' own functions (Ray Data, the connected cluster); returns the work dir."""
    from core.train_config import TwoTowerTrainConfig
    from training import common
    from training.examples import two_tower_examples
    from training.quality_checks import gate_for_training

    cfg = TwoTowerTrainConfig(tenant=TENANT, work_dir=str(root / "work"), num_partitions=2,
                              platform_config=str(platform_for(data, root)))  # fmt: skip
    storage = common.JobStorage(cfg)
    assert gate_for_training(storage, None)["passed"]
    two_tower_examples(storage, cfg.num_partitions)
    return root / "work"


def seed_work_dir(seed: Path, work_dir: Path, parts: tuple[str, ...] = ("examples", "quality")) -> Path:
    """Copy the seed's ``parts`` (``examples``: the two-tower examples; ``quality``: the gate's
    report) into ``work_dir``; returns ``work_dir``."""
    for part in parts:
        shutil.copytree(seed / TENANT / part, work_dir / TENANT / part, dirs_exist_ok=True)
    return work_dir
