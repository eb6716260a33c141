"""Ownership: every kind has an owner with a review date; publishing without one is refused;
`recsys owners` lists every kind and flags stale reviews."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from core.manifest import ARTIFACT_KINDS, Lineage, Owner
from core.owners import ALL_KINDS, FILE_KINDS, OwnersConfig, is_stale, load_owners, ownership_rows
from core.registry import Registry, RegistryError

REPO = Path(__file__).resolve().parents[2]
SOMEONE = Owner(team="ranking", primary="ada", escalation="#ranking", runbook="docs/runbooks/latency.md")


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "a.bin").write_text("x")
    return src


def _owners(**entries) -> OwnersConfig:
    base = {"team": "t", "primary": "p", "escalation": "#e", "runbook": "r.md", "last_reviewed": "2026-11-01"}
    return OwnersConfig(stale_after_days=30, owners=[{**base, "kind": k, **v} for k, v in entries.items()])


def test_the_shipped_owners_file_covers_every_kind() -> None:
    owners = load_owners(REPO / "configs/owners.yaml")
    assert owners.missing_kinds() == [] and owners.unknown_kinds() == []
    assert set(ALL_KINDS) >= set(ARTIFACT_KINDS) | set(FILE_KINDS)
    acme = owners.owner_for("tenant_config", "acme")
    assert acme.team == "acme-integration" and owners.owner_for("tenant_config", "globex").team == "recsys-serving"


def test_publish_takes_the_default_owner_and_refuses_none(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"), owners=_owners(ranker={"team": "ml"}))
    m = reg.publish("ranker", "acme", _src(tmp_path), lineage=Lineage())
    assert m.owner.team == "ml" and m.owner.last_reviewed == date(2026, 11, 1)
    assert reg.manifest("ranker", "acme", m.version).owner == m.owner  # stored in the manifest
    with pytest.raises(RegistryError, match=r"publish two_tower/acme: refused, no owner.*configs/owners.yaml"):
        reg.publish("two_tower", "acme", _src(tmp_path), lineage=Lineage())
    assert reg.versions(kind="two_tower") == []
    blank = SOMEONE.model_copy(update={"escalation": " "})
    with pytest.raises(RegistryError, match="owner.escalation is empty"):
        reg.publish("ranker", "acme", _src(tmp_path), lineage=Lineage(), owner=blank)


def test_an_explicit_owner_gets_the_review_date_only_of_the_same_ownership(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"), owners=_owners(ranker={"team": "ranking", "primary": "ada"}))
    same = reg.publish("ranker", "acme", _src(tmp_path), lineage=Lineage(), owner=SOMEONE)
    assert same.owner.last_reviewed == date(2026, 11, 1) and same.owner.runbook == SOMEONE.runbook
    other = reg.publish("ranker", "acme", _src(tmp_path), lineage=Lineage(),
                        owner=SOMEONE.model_copy(update={"primary": "bob"}))  # fmt: skip
    assert other.owner.last_reviewed is None  # never reviewed: `recsys owners` flags it
    assert is_stale(other.owner, 30) and not is_stale(same.owner, 30, today=date(2026, 11, 20))
    assert is_stale(same.owner, 30, today=date(2026, 12, 20))


def test_owners_lists_every_kind_with_an_owner_and_flags_stale_ones(tmp_path: Path) -> None:
    from core.config import load_platform_config

    owners = load_owners(REPO / "configs/owners.yaml")
    reg = Registry(str(tmp_path / "reg"), owners=owners)
    for kind in ("two_tower", "ann_index", "ranker", "fallback_list"):
        reg.publish(kind, "acme", _src(tmp_path), lineage=Lineage())
    reg.publish("ranker", "globex", _src(tmp_path), lineage=Lineage(),
                owner=SOMEONE.model_copy(update={"primary": "bob"}))  # fmt: skip
    experiments = load_platform_config(REPO / "configs/platform.yaml").experiments
    rows = ownership_rows(reg, owners, experiments=experiments, repo_root=REPO, today=date(2026, 12, 1))
    assert {r.kind for r in rows} == set(ALL_KINDS)
    by = {(r.kind, r.tenant): r for r in rows}
    assert by[("ranker", "acme")].source == "registry" and by[("ranker", "acme")].owner.team == "recsys-ml"
    assert by[("ranker", "globex")].stale and not by[("ranker", "acme")].stale
    assert by[("experiment", "acme")].subject == "acme-home-like-weight (enabled)"
    assert by[("runbook", "*")].subject.startswith("docs/runbooks/ (")
    assert all(r.owner is not None for r in rows)
    assert [r.kind for r in rows if r.stale] == ["ranker"]
    later = ownership_rows(reg, owners, experiments=experiments, repo_root=REPO, today=date(2027, 12, 1))
    assert all(r.stale for r in later)


def test_recsys_owners_prints_json_and_exits_1_on_stale_reviews(tmp_path: Path, capsys, monkeypatch) -> None:
    import yaml

    from cluster.cli import main

    monkeypatch.setenv("RECSYS_CONFIG", str(REPO / "configs/platform.yaml"))
    shipped = yaml.safe_load((REPO / "configs/owners.yaml").read_text())
    for entry in shipped["owners"]:  # reviewed today: nothing stale, whatever the calendar says
        entry["last_reviewed"] = date.today().isoformat()
    (tmp_path / "owners.yaml").write_text(yaml.safe_dump(shipped))
    monkeypatch.setenv("RECSYS_OWNERS", str(tmp_path / "owners.yaml"))
    root = str(tmp_path / "reg")
    Registry(root).publish("ranker", "acme", _src(tmp_path), lineage=Lineage())
    assert main(["owners", "--root", root, "--json", "--tenant", "acme"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == set(ALL_KINDS) and all(r["owner"] for r in rows)
    ranker = next(r for r in rows if r["kind"] == "ranker")
    assert ranker["tenant"] == "acme" and ranker["source"] == "registry"
    # A version whose owner was never reviewed is stale: flagged, exit status 1.
    Registry(root).publish("ranker", "globex", _src(tmp_path), lineage=Lineage(), owner=SOMEONE)
    assert main(["owners", "--root", root]) == 1
    out = capsys.readouterr().out
    assert "never STALE" in out and "globex" in out
