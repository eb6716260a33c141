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
from tests.integration.training_env import REPO, platform_for, seed_work_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def job_env(tiny_data: Path, two_tower_seed: Path, tmp_path_factory):
    """A registry and a work dir for this module's jobs. The work dir starts with the session's
    two-tower examples and data-quality report (built once by the jobs' own functions, the gate
    a Ray Data pass: :func:`training_env.build_seed`), as a second job on the same data finds
    them: the jobs below reuse both and record the gate's verdict."""
    root = tmp_path_factory.mktemp("train_jobs")
    platform_for(tiny_data, root)
    seed_work_dir(two_tower_seed, root / "work")
    cfg = yaml.safe_load((REPO / "configs/train/two_tower.yaml").read_text())
    cfg["work_dir"] = str(root / "work")
    (root / "two_tower.yaml").write_text(yaml.safe_dump(cfg))
    return root


@pytest.fixture(scope="module")
def two_tower_job(ray_cluster, job_env) -> tuple[str, str]:
    """The two-tower job submitted through the Ray Jobs API (``--smoke-test``): its id and end
    status. Its candidate is the two-tower of the ranker and launch-review tests below."""
    with pytest.MonkeyPatch.context() as mp:  # the job reads the platform config the submit names
        mp.setenv("RECSYS_CONFIG", str(job_env / "platform.yaml"))
        return submit(
            ray_cluster.dashboard_url,
            "training.two_tower",
            ["--config", str(job_env / "two_tower.yaml"), "--tenant", "acme", "--smoke-test"],
            # The local test cluster runs this checkout's virtualenv, which is not on its PATH.
            python=sys.executable,
        )


def test_two_tower_job_via_jobs_api_publishes_a_candidate(two_tower_job, job_env):
    job_id, status = two_tower_job
    assert status == "SUCCEEDED", f"job {job_id} ended {status}"
    registry = Registry(str(job_env / "registry"))
    version = registry.resolve("two_tower", "acme", "candidate")
    assert version is not None
    m = registry.manifest("two_tower", "acme", version)
    assert m.lineage.feature_schema_hash == feature_schema_hash()
    assert m.lineage.dataset_version and m.lineage.dataset_version.startswith("synth-tiny")
    # The data-quality gate's verdict on the tiny data (the seed's report, reused for the same
    # data fingerprint and thresholds) is in the lineage.
    assert m.lineage.data_quality["passed"] is True and m.lineage.data_quality["failed"] == []
    assert Path(m.lineage.data_quality["report"]).is_file()
    assert 0.0 <= m.metrics["val_recall@50"] <= 1.0
    # The checkpoint was chosen on the protocol's validation task (all train items excluded).
    assert 0.0 <= m.metrics["val_protocol_ndcg@10"] <= m.metrics["val_protocol_recall@50"] <= 1.0
    assert {f.path for f in m.files} == {"model.pt", "config.json"}
    from retrieval.two_tower import TwoTowerModel

    model = TwoTowerModel.load(registry.local_path("two_tower", "acme", version))
    assert model.cfg["n_items"] == 400


def test_ranker_job_publishes_a_candidate_with_its_skew_guards(ray_connected, job_env, two_tower_job, monkeypatch):
    """The ranker job on tiny data (in process, toy sizes): a candidate with per-task holdout
    metrics, and the training facts serving's skew guards read (sources seen, dense stats)."""
    from core.features import DENSE_FEATURES, SOURCE_KINDS
    from ranking.model import MultiTaskRanker
    from training import ranker

    assert two_tower_job[1] == "SUCCEEDED", f"the two-tower job this ranker reads ended {two_tower_job}"
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
    # Logged impressions carry no serving source ("logged"); the candidates drawn beside each
    # engagement come from the two-tower.
    assert SOURCE_KINDS.index("logged") in model.cfg["source_seen"]
    assert set(model.cfg["source_seen"]) <= {SOURCE_KINDS.index("logged"), SOURCE_KINDS.index("two_tower")}
    assert len(model.cfg["dense_std"]) == len(DENSE_FEATURES)


def _scripted_ranker(registry: Registry, two_tower: str, sign: float, n_items: int, n_categories: int) -> str:
    """A ranker whose click logit is ``sign`` × the two-tower score (its other heads constant):
    +1 keeps the retriever's order, -1 reverses it. Published with the two-tower as its parent,
    so serving computes its retrieval_score like a trained ranker's."""
    import tempfile

    import torch

    from core.features import CAT_FEATURES, DENSE_FEATURES
    from core.manifest import Lineage, Owner
    from ranking.model import MultiTaskRanker

    e = 4
    model = MultiTaskRanker({"n_items": n_items, "n_categories": n_categories, "embed_dim": e, "n_experts": 1,
                             "expert_hidden": 4, "tower_hidden": 4})  # fmt: skip
    col = e * len(CAT_FEATURES) + DENSE_FEATURES.index("retrieval_score")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        first, second = model.experts[0][0], model.experts[0][3]
        first.weight[0, col], first.weight[1, col] = 1.0, -1.0  # relu(z), relu(-z)
        second.weight[0, 0], second.weight[1, 1] = 1.0, 1.0
        for tower in model.towers.values():
            tower[0].weight[0, 0], tower[0].weight[1, 1] = 1.0, 1.0
        click = model.towers["click"][2]
        click.weight[0, 0], click.weight[0, 1] = sign, -sign  # sign * z
    with tempfile.TemporaryDirectory() as out:
        model.save(out)
        manifest = registry.publish(
            "ranker", "acme", out,
            owner=Owner(team="ranking", primary="ada", escalation="#ranking", runbook="r.md"),
            lineage=Lineage(dataset_version="test", parents={"two_tower": two_tower}, feature_schema_hash="test", code_version="test"),
            metrics={"click_auc": 0.7, "like_auc": 0.7}, description=f"scripted ranker, sign {sign}",
        )  # fmt: skip
    return manifest.version


def test_launch_review_refuses_a_ranker_that_loses_the_retrievers_clicks(ray_connected, job_env, two_tower_job, monkeypatch):
    """The whole-pipeline check on tiny data: a ranker that reverses the retriever's order
    serves a slate with fewer expected clicks than the two-tower alone and is refused; one that
    keeps the order passes. Same held-out users, same seed, the real pipeline."""
    from core.train_config import EvaluateConfig, SystemReviewConfig
    from training import build_index, common
    from training.system_review import review_system

    assert two_tower_job[1] == "SUCCEEDED", f"the two-tower job under review ended {two_tower_job}"
    monkeypatch.setenv("RECSYS_CONFIG", str(job_env / "platform.yaml"))
    cfg = yaml.safe_load((REPO / "configs/train/build_index.yaml").read_text())
    cfg.update(work_dir=str(job_env / "work"))
    (job_env / "build_index.yaml").write_text(yaml.safe_dump(cfg))
    registry = Registry(str(job_env / "registry"))
    if registry.resolve("ann_index", "acme", "candidate") is None:
        assert build_index.main(["--config", str(job_env / "build_index.yaml"), "--tenant", "acme"]) == 0
    tt = registry.resolve("two_tower", "acme", "candidate")
    idx = registry.resolve("ann_index", "acme", "candidate")
    # The slate serves the ranker's order as it is (no MMR, caps or exploration), so the check
    # judges the rankers themselves on this tiny catalogue.
    platform = yaml.safe_load((job_env / "platform.yaml").read_text())
    for tenant in platform["tenants"]:
        for surface in tenant["surfaces"].values():
            surface["slate"] = {"steps": [{"kind": "diversity", "method": "none", "max_per_category": None}]}
    (job_env / "platform_review.yaml").write_text(yaml.safe_dump(platform))
    evaluate_cfg = EvaluateConfig(tenant="acme", work_dir=str(job_env / "work"), num_partitions=2,
                                  platform_config=str(job_env / "platform_review.yaml"))  # fmt: skip
    storage = common.JobStorage(evaluate_cfg)
    catalogue = storage.catalogue()
    review = SystemReviewConfig(users=150, retriever_budget={"expected_ctr@10": 0.1})
    results = {}
    for sign in (1.0, -1.0):
        ranker = _scripted_ranker(registry, tt, sign, len(catalogue), len(catalogue.categories))
        versions = {"two_tower": tt, "ann_index": idx, "ranker": ranker}
        results[sign] = review_system(storage, versions, None, review, evaluate_cfg)
    keeps, reverses = results[1.0], results[-1.0]
    assert keeps[0]["system_vs_retriever"]["ok"], keeps[0]
    assert not reverses[0]["system_vs_retriever"]["ok"], reverses[0]
    # The stage table's rows say where the clicks went.
    assert reverses[1]["by_ranker_click"]["expected_ctr@10"] < keeps[1]["by_ranker_click"]["expected_ctr@10"]
