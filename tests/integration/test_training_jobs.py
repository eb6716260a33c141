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
    _platform_for(tiny_data, root)
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
    # The data-quality gate ran first (a Ray Data pass in the job) and passed the tiny data.
    assert m.lineage.data_quality["passed"] is True and m.lineage.data_quality["failed"] == []
    assert Path(m.lineage.data_quality["report"]).is_file()
    assert 0.0 <= m.metrics["val_recall@50"] <= 1.0
    # The checkpoint was chosen on the protocol's validation task (all train items excluded).
    assert 0.0 <= m.metrics["val_protocol_ndcg@10"] <= m.metrics["val_protocol_recall@50"] <= 1.0
    assert {f.path for f in m.files} == {"model.pt", "config.json"}
    from retrieval.two_tower import TwoTowerModel

    model = TwoTowerModel.load(registry.local_path("two_tower", "acme", version))
    assert model.cfg["n_items"] == 400


def _platform_for(data: Path, root: Path) -> Path:
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


def _checkpoint_meta(run_dir: Path) -> list[dict]:
    import json

    return sorted((json.loads(p.read_text()) for p in run_dir.glob("checkpoint_*/meta.json")), key=lambda m: m["epoch"])


def test_two_tower_resumes_from_its_latest_checkpoint(ray_connected, tiny_data, tmp_path, monkeypatch):
    """A run stopped after its epoch-0 checkpoint, restarted with --resume, continues at epoch
    1 with the optimiser step counter carried over (no epoch is trained twice)."""
    from training import two_tower

    monkeypatch.setenv("RECSYS_CONFIG", str(_platform_for(tiny_data, tmp_path)))
    cfg = yaml.safe_load((REPO / "configs/train/two_tower.yaml").read_text())
    # Toy sizes spelled out (--smoke-test would pin epochs to 1).
    cfg.update(work_dir=str(tmp_path / "work"), num_partitions=2, dim=16, embed_dim=16, hidden=32, batch_size=64, keep_checkpoints=4)
    config = tmp_path / "two_tower.yaml"
    for epochs, extra in ((1, []), (2, ["--resume"])):
        config.write_text(yaml.safe_dump({**cfg, "epochs": epochs}))
        assert two_tower.main(["--config", str(config), "--tenant", "acme", *extra]) == 0
    (run,) = (tmp_path / "work" / "acme" / "runs").glob("two_tower-acme-*")
    metas = _checkpoint_meta(run)
    assert [m["epoch"] for m in metas] == [0, 1]
    steps_per_epoch = metas[0]["steps"]
    assert steps_per_epoch > 0
    assert metas[1]["steps"] == 2 * steps_per_epoch
    # The resumed run published the model it finished, trained for both epochs.
    latest = Registry(str(tmp_path / "registry")).versions("two_tower", "acme")[-1]
    assert latest.config["run"] == run.name


def test_ranker_job_publishes_a_candidate_with_its_skew_guards(ray_connected, job_env, monkeypatch):
    """The ranker job on tiny data (in process, toy sizes): a candidate with per-task holdout
    metrics, and the training facts serving's skew guards read (sources seen, dense stats)."""
    from core.features import DENSE_FEATURES, SOURCE_KINDS
    from ranking.model import MultiTaskRanker
    from training import ranker

    monkeypatch.setenv("RECSYS_CONFIG", str(job_env / "platform.yaml"))
    cfg = yaml.safe_load((REPO / "configs/train/ranker.yaml").read_text())
    cfg.update(work_dir=str(job_env / "work"), num_partitions=2, embed_dim=4, n_experts=2,
               expert_hidden=16, tower_hidden=8, epochs=1, batch_size=256)  # fmt: skip
    config = job_env / "ranker.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert ranker.main(["--config", str(config), "--tenant", "acme"]) == 0
    registry = Registry(str(job_env / "registry"))
    version = registry.resolve("ranker", "acme", "candidate")
    assert version is not None
    m = registry.manifest("ranker", "acme", version)
    assert 0.0 <= m.metrics["click_auc"] <= 1.0
    model = MultiTaskRanker.load(registry.local_path("ranker", "acme", version))
    # Logged impressions carry no serving source: only "logged" was seen in training.
    assert model.cfg["source_seen"] == [SOURCE_KINDS.index("logged")]
    assert len(model.cfg["dense_std"]) == len(DENSE_FEATURES)
