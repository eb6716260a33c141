"""What the registry and storage acknowledge is on disk: every file and directory entry is
``fsync``-ed on local storage (issue 15: the registry did not fsync)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import storage as storage_module
from core.manifest import Lineage, Owner
from core.registry import Registry
from core.storage import Storage

OWNER = Owner(team="ranking", primary="ada", escalation="#ranking-oncall", runbook="docs/x.md")


@pytest.fixture
def synced(monkeypatch) -> list[tuple[str, bool]]:
    calls: list[tuple[str, bool]] = []
    real = storage_module._fsync

    def spy(path: str, directory: bool = False) -> None:
        calls.append((path, directory))
        real(path, directory)

    monkeypatch.setattr(storage_module, "_fsync", spy)
    return calls


def test_write_atomic_syncs_content_then_the_directory(tmp_path, synced):
    store = Storage(tmp_path)
    store.write_atomic(store.path("a", "b", "x.json"), b"{}")
    files = [p for p, is_dir in synced if not is_dir]
    dirs = [p for p, is_dir in synced if is_dir]
    assert len(files) == 1 and Path(files[0]).name.startswith(".tmp-")  # before the rename
    assert store.path("a", "b") in dirs  # the rename's entry
    assert store.path("a") in dirs and store.root in dirs  # the new directories' entries


def test_registry_publish_and_alias_moves_are_synced(tmp_path, synced):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"weights")
    reg = Registry(str(tmp_path / "reg"))
    m = reg.publish("ranker", "acme", src, owner=OWNER, lineage=Lineage(dataset_version="d1"))
    vdir = reg.store.path("acme", "ranker", m.version)
    synced_files = {p for p, is_dir in synced if not is_dir}
    synced_dirs = {p for p, is_dir in synced if is_dir}
    assert f"{vdir}/model.bin" in synced_files  # artifact content before its manifest
    assert vdir in synced_dirs  # the manifest's rename
    assert reg.store.path("acme", "ranker", "_aliases") in synced_dirs  # the candidate alias
    before = len(synced)
    reg.set_alias("ranker", "acme", "candidate", m.version, actor="ada")
    assert any(p.endswith("/_aliases") and d for p, d in synced[before:])
