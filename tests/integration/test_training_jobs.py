"""A real training job submitted through the Ray Jobs API on tiny data; its candidate version
must appear in the registry with lineage and metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from cluster.commands.train_cmd import submit
from core.features import feature_schema_hash
from core.registry import Registry

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def job_env(tiny_data: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_jobs")
    platform = yaml.safe_load((REPO / "configs/platform.yaml").read_text())
    platform["storage"] = {
        "data": str(tiny_data),
        "events": str(tiny_data / "events"),
        "registry": str(root / "registry"),
        "decisions": str(root / "decisions"),
    }
    (root / "platform.yaml").write_text(yaml.safe_dump(platform))
    cfg = yaml.safe_load((REPO / "configs/train/two_tower.yaml").read_text())
    cfg["work_dir"] = str(root / "work")
    (root / "two_tower.yaml").write_text(yaml.safe_dump(cfg))
    return root


def test_two_tower_job_via_jobs_api_publishes_a_candidate(ray_cluster, job_env, monkeypatch):
    monkeypatch.setenv("RECSYS_CONFIG", str(job_env / "platform.yaml"))
    job_id, status = submit(
        ray_cluster.dashboard_url,
        "training.two_tower",
        ["--config", str(job_env / "two_tower.yaml"), "--tenant", "acme", "--smoke-test"],
        # The local test cluster runs this checkout's virtualenv, which is not on its PATH.
        python=sys.executable,
    )
    assert status == "SUCCEEDED", f"job {job_id} ended {status}"
    registry = Registry(str(job_env / "registry"))
    version = registry.resolve("two_tower", "acme", "candidate")
    assert version is not None
    m = registry.manifest("two_tower", "acme", version)
    assert m.lineage.feature_schema_hash == feature_schema_hash()
    assert m.lineage.dataset_version and m.lineage.dataset_version.startswith("synth-tiny")
    assert 0.0 <= m.metrics["val_recall@50"] <= 1.0
    assert {f.path for f in m.files} == {"model.pt", "config.json"}
    from retrieval.two_tower import TwoTowerModel

    model = TwoTowerModel.load(registry.local_path("two_tower", "acme", version))
    assert model.cfg["n_items"] == 400
