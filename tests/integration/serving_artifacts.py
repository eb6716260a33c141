"""Small real models for serving tests and benchmarks, published to a registry.

The two-tower model and the ranker are the library's own classes, at toy size unless told (a few hundred
parameters per table). ``train_steps`` runs that many optimiser steps on random targets only
to move the weights off their initialisation: serving tests check contracts, not quality.

Promotion goes through the launch review like a release (:func:`_review_and_promote`): the
automatic checks (the toy models carry fixed placeholder metrics; the brute-force index's
recall is exact), every checklist sign-off by ``serving-tests``, the approval, the gated promote.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from core.catalogue import Catalogue
from core.features import feature_schema_hash, item_features
from core.manifest import Lineage, Owner
from core.registry import Registry

OWNER = Owner(team="serving", primary="serving-tests", escalation="#recsys-serving",
              runbook="docs/runbooks/hot-swap-and-rollback.md")  # fmt: skip
ACTOR = "serving-tests"
PLACEHOLDER_METRICS = {  # what the automatic checks read; toy models are not evaluated
    "two_tower": {"val_recall@50": 0.1, "val_ndcg@10": 0.1},
    "ranker": {"click_auc": 0.5, "like_auc": 0.5},
}


def _review_and_promote(registry: Registry, tenant: str, versions: dict[str, str],
                        if_refused: str | None = None) -> None:  # fmt: skip
    """Launch review then promote. What the review refuses fails the test, unless ``if_refused``
    gives the reason to promote it anyway: by break-glass, as the fixture's emergency role."""
    from core.train_config import ReviewConfig
    from training.review import review_versions

    sign_offs = tuple({s for k in versions for s in registry.policy.checklist(k).sign_offs})
    blocking = review_versions(registry, tenant, versions, ReviewConfig(), actor=ACTOR,
                               sign_offs=sign_offs, approve=True)  # fmt: skip
    break_glass = if_refused if any(blocking.values()) else None
    if break_glass is None:
        assert not any(blocking.values()), f"launch review refused the test artifacts: {blocking}"
    else:
        roles = {"serving-tests": (ACTOR,)}
        registry = Registry(registry.uri, policy=registry.policy.model_copy(update={"emergency_roles": roles}))
    for kind, version in versions.items():
        registry.promote(kind, tenant, version, actor=ACTOR, reason=break_glass or "serving test",
                         break_glass=break_glass is not None)  # fmt: skip


def publish_two_tower(registry: Registry, catalogue: Catalogue, *, seed: int = 0, dim: int = 16,
                      promote: bool = True, item_tower_version: str | None = None,
                      arch: dict | None = None, scann: bool = False, now: float | None = None) -> tuple[str, str]:  # fmt: skip
    """Publish a query/item tower and an index built from its item tower (brute force, or
    ScaNN sized to the catalogue with ``scann=True``), its item ages at ``now`` (epoch
    seconds; default the wall clock: pass one for a test whose slates must not depend on
    when it runs).

    ``item_tower_version`` forces the index to claim another item tower (a mismatched pair,
    which the launch review refuses and serving must refuse: promoted by break-glass); ``arch`` overrides the toy sizes (``dim``, ``embed_dim``,
    ``hidden``: the benchmark uses configs/train/two_tower.yaml's). Returns
    ``(two_tower version, ann_index version)``."""
    import torch

    from retrieval.index import BruteForceIndex, ScannIndex
    from retrieval.two_tower import TwoTowerModel

    torch.manual_seed(seed)
    model = TwoTowerModel.from_config({
        "dim": dim, "embed_dim": 8, "hidden": 16, **(arch or {}), "n_items": len(catalogue),
        "n_categories": len(catalogue.categories), "n_tags": len(catalogue.tag_vocab),
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp, "model"))
        tt = registry.publish("two_tower", catalogue.tenant_id, Path(tmp, "model"), owner=OWNER,
                              lineage=Lineage(feature_schema_hash=feature_schema_hash()),
                              metrics=PLACEHOLDER_METRICS["two_tower"],
                              description="serving test tower")  # fmt: skip
        vectors = model.encode_items(item_features(catalogue, time.time() if now is None else now))
        built_by = item_tower_version or tt.version
        exact = BruteForceIndex(vectors, catalogue.item_ids, built_by)
        if scann:
            index = ScannIndex.build(vectors, catalogue.item_ids, item_tower_version=built_by)
        else:
            index = exact
        index.save(Path(tmp, "index"))
        ix = registry.publish("ann_index", catalogue.tenant_id, Path(tmp, "index"), owner=OWNER,
                              lineage=Lineage(parents={"two_tower": built_by},
                                              feature_schema_hash=feature_schema_hash()),
                              metrics=_recall(index, exact, vectors),
                              config={"item_tower_version": built_by},
                              description="serving test index")  # fmt: skip
    if promote:
        # A mismatched pair is refused by the review (as serving must refuse it); a ScaNN index
        # over an untrained toy tower's near-random vectors may miss the recall bar.
        why = ("a deliberately mismatched pair that serving must refuse" if item_tower_version
               else "a toy tower's ScaNN index: its recall is not under test" if scann else None)  # fmt: skip
        _review_and_promote(registry, catalogue.tenant_id,
                            {"two_tower": tt.version, "ann_index": ix.version}, why)  # fmt: skip
    return tt.version, ix.version


def _recall(index, exact, vectors: np.ndarray) -> dict[str, float]:
    """recall@10 and @100 of ``index`` against exact search, the item vectors as queries."""
    queries = vectors[: min(64, len(vectors))]
    k = min(100, len(vectors))
    got, want = index.search(queries, k)[1], exact.search(queries, k)[1]
    out = {}
    for name, n in (("recall@10", min(10, k)), ("recall@100", k)):
        hits = sum(len(set(g[:n]) & set(w[:n])) for g, w in zip(got, want, strict=True))
        out[name] = hits / (n * len(queries))
    return out


def publish_ranker(registry: Registry, catalogue: Catalogue, *, seed: int = 0,
                   promote: bool = True, arch: dict | None = None,
                   two_tower: str | None = None) -> str:  # fmt: skip
    """Publish a multi-task ranker; ``arch`` overrides the toy sizes (``embed_dim``,
    ``n_experts``, ``expert_hidden``, ``tower_hidden``); ``two_tower`` names the two-tower
    version in its lineage (serving then computes its ``retrieval_score`` with that tower)."""
    import torch

    from ranking.model import MultiTaskRanker

    torch.manual_seed(seed)
    model = MultiTaskRanker.from_config({
        "n_items": len(catalogue), "n_categories": len(catalogue.categories), "embed_dim": 4,
        "n_experts": 2, "expert_hidden": 16, "tower_hidden": 8, **(arch or {}),
    })  # fmt: skip
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):  # a few steps so the weights are not just their initialisation
        cat = torch.zeros((32, 6), dtype=torch.long)
        dense = torch.tensor(rng.normal(size=(32, 8)), dtype=torch.float32)
        out = model(cat, dense)
        loss = sum(o.float().pow(2).mean() for o in (out.values() if isinstance(out, dict) else [out]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        m = registry.publish("ranker", catalogue.tenant_id, tmp, owner=OWNER,
                             lineage=Lineage(feature_schema_hash=feature_schema_hash(),
                                             parents={"two_tower": two_tower} if two_tower else {}),
                             metrics=PLACEHOLDER_METRICS["ranker"],
                             description="serving test ranker")  # fmt: skip
    if promote:
        _review_and_promote(registry, catalogue.tenant_id, {"ranker": m.version})
    return m.version
