"""The artifact registry: immutable versions, visible only with a manifest, audited aliases."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyarrow.fs import _MockFileSystem

from core.manifest import Lineage, Owner, ReviewRecord
from core.registry import ArtifactNotFound, Registry, RegistryError
from tests.unit.review_helpers import approve, reviewable

REPO = Path(__file__).resolve().parents[2]
OWNER = Owner(
    team="ranking", primary="ada", escalation="#ranking-oncall", runbook="docs/runbooks/ranker.md"
)


def _artifact(path: Path, payload: str, n_files: int = 2) -> Path:
    (path / "nested").mkdir(parents=True)
    for i in range(n_files):
        target = path / ("nested" if i % 2 else ".") / f"part-{i}.bin"
        target.write_text(f"{payload}-{i}" * 100)
    return path


def _publish(reg: Registry, src: Path, **kw):
    return reg.publish(
        "ranker", "acme", src, owner=OWNER, lineage=Lineage(dataset_version="d1"), **kw
    )


def test_publish_read_round_trip(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"))
    src = _artifact(tmp_path / "src", "a", n_files=3)
    m = _publish(reg, src, metrics={"auc": 0.71}, config={"lr": 0.1}, description="first")

    again = Registry(str(tmp_path / "reg")).manifest("ranker", "acme", m.version)
    assert again == m
    assert {f.path for f in m.files} == {"part-0.bin", "nested/part-1.bin", "part-2.bin"}
    local = reg.local_path("ranker", "acme", m.version)
    for entry in m.files:
        assert (local / entry.path).read_bytes() == (src / entry.path).read_bytes()
        assert (local / entry.path).stat().st_size == entry.bytes
    assert reg.versions() == [m] and reg.tenants() == ["acme"]
    assert reg.resolve("ranker", "acme", "candidate") == m.version
    reg.verify("ranker", "acme", m.version)


def test_publishing_never_overwrites(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"))
    m1 = _publish(reg, _artifact(tmp_path / "a", "one"))
    m2 = _publish(reg, _artifact(tmp_path / "b", "two"))
    assert m1.version < m2.version
    assert [m.version for m in reg.versions("ranker", "acme")] == [m1.version, m2.version]
    first = reg.local_path("ranker", "acme", m1.version) / "part-0.bin"
    assert first.read_text().startswith("one-0")
    reg.verify("ranker", "acme", m1.version)


def _publish_reviewed(reg: Registry, src: Path, actor: str = "system") -> str:
    """Publish a ranker that passes the automatic checks and approve it (the promotion gate)."""
    m = reg.publish("ranker", "acme", src, owner=OWNER, actor=actor, **reviewable("ranker"))
    approve(reg, "ranker", "acme", m.version)
    return m.version


def test_promote_rollback_and_audit_trail(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"))
    v1 = _publish_reviewed(reg, _artifact(tmp_path / "a", "1"))
    v2 = _publish_reviewed(reg, _artifact(tmp_path / "b", "2"))

    reg.promote("ranker", "acme", v1, actor="ada", reason="launch")
    assert reg.aliases("ranker", "acme") == {"candidate": v2, "production": v1}
    reg.promote("ranker", "acme", v2, actor="ada")
    assert reg.resolve("ranker", "acme", "production") == v2
    assert reg.resolve("ranker", "acme", "previous") == v1
    reg.rollback("ranker", "acme", actor="bob", reason="ctr dropped")
    assert reg.resolve("ranker", "acme", "production") == v1
    assert reg.resolve("ranker", "acme", "previous") == v2

    moves = [(a.action, a.alias, a.version, a.previous) for a in reg.audit("ranker", "acme")]
    assert moves[-5:] == [
        ("promote", "production", v1, None),
        ("promote", "previous", v1, None),
        ("promote", "production", v2, v1),
        ("rollback", "production", v1, v2),
        ("rollback", "previous", v2, v1),
    ]
    assert reg.audit(tenant="globex") == []
    assert reg.audit()[-2].actor == "bob" and reg.audit()[-2].reason == "ctr dropped"


def test_reviews_are_stored_beside_the_immutable_manifest(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"))
    m = _publish(reg, _artifact(tmp_path / "a", "1"))
    for decision in ("note", "approve"):
        reg.add_review(
            ReviewRecord(kind="ranker", tenant="acme", version=m.version, at=datetime.now(UTC),
                         actor="ada", decision=decision, checks={"auc": "pass"})
        )  # fmt: skip
    assert [r.decision for r in reg.reviews("ranker", "acme", m.version)] == ["note", "approve"]
    assert Registry(str(tmp_path / "reg")).manifest("ranker", "acme", m.version) == m


def test_unknown_versions_and_aliases_give_clear_errors(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"))
    v = _publish(reg, _artifact(tmp_path / "a", "1")).version
    missing = "v20300101T000000000Z-abcdef"
    with pytest.raises(ArtifactNotFound, match=f"no ranker version {missing} for tenant 'acme'"):
        reg.manifest("ranker", "acme", missing)
    with pytest.raises(KeyError):
        reg.set_alias("ranker", "acme", "production", missing, actor="ada")
    with pytest.raises(ArtifactNotFound, match="not a version id"):
        reg.manifest("ranker", "acme", "latest")
    with pytest.raises(RegistryError, match="unknown artifact kind 'rankr'"):
        reg.versions(kind="rankr")
    with pytest.raises(RegistryError, match="no 'previous' version"):
        reg.rollback("ranker", "acme", actor="ada")
    with pytest.raises(RegistryError, match="invalid alias"):
        reg.set_alias("ranker", "acme", "../prod", v, actor="ada")
    assert reg.resolve("ranker", "acme", "production") is None
    with pytest.raises(RegistryError, match="does not exist"):
        _publish(reg, tmp_path / "nope")


def test_object_store_path_downloads_and_verifies(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    fs = _MockFileSystem()
    reg = Registry("bucket/registry", filesystem=fs)
    m = _publish(reg, _artifact(tmp_path / "a", "remote"))
    local = reg.local_path("ranker", "acme", m.version)
    assert str(local).startswith(str(tmp_path / "cache"))
    assert (local / "part-0.bin").read_text().startswith("remote-0")
    assert reg.local_path("ranker", "acme", m.version) == local  # cached, not re-downloaded

    m2 = _publish(reg, _artifact(tmp_path / "b", "other"))
    with fs.open_output_stream(f"bucket/registry/acme/ranker/{m2.version}/part-0.bin") as f:
        f.write(b"tampered")
    with pytest.raises(RegistryError, match="fails its sha256"):
        reg.local_path("ranker", "acme", m2.version)


def _writer(root: str, src: str, n: int, name: str) -> None:
    reg = Registry(root)
    for _ in range(n):
        version = _publish_reviewed(reg, Path(src), actor=name)
        reg.promote("ranker", "acme", version, actor=name)
        reg.set_alias("ranker", "acme", f"last-{name}", version, actor=name)


def test_two_concurrent_writers_leave_a_consistent_registry(tmp_path: Path) -> None:
    root = str(tmp_path / "reg")
    src = _artifact(tmp_path / "src", "x", n_files=4)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(root, str(src), 4, f"w{i}")) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0

    reg = Registry(root)
    versions = [m.version for m in reg.versions("ranker", "acme")]
    assert len(versions) == len(set(versions)) == 8
    for v in versions:
        reg.verify("ranker", "acme", v)
    aliases = reg.aliases("ranker", "acme")
    assert set(aliases) == {"candidate", "production", "previous", "last-w0", "last-w1"}
    assert set(aliases.values()) <= set(versions)
    production_moves = [a for a in reg.audit("ranker", "acme") if a.alias == "production"]
    assert len(production_moves) == 8
    for before, after in zip(production_moves, production_moves[1:], strict=False):
        assert after.previous == before.version  # the promote lock makes moves a chain
    assert production_moves[-1].version == aliases["production"]
    assert aliases["previous"] == production_moves[-1].previous


KILLED_WRITER = """
import sys, time
from pathlib import Path
from core.manifest import Lineage, Owner
from core.registry import Registry
from core.storage import Storage

real_upload = Storage.upload
def slow_upload(self, src, dest):
    result = real_upload(self, src, dest)
    time.sleep(30)  # the test kills us while we sleep here, between two file copies
    return result
Storage.upload = slow_upload
owner = Owner(team="t", primary="p", escalation="e", runbook="r")
Registry(sys.argv[1]).publish("ranker", "acme", sys.argv[2], owner=owner, lineage=Lineage())
"""


def test_writer_killed_mid_publish_leaves_nothing_visible(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    reg = Registry(str(root))
    kept = _publish(reg, _artifact(tmp_path / "a", "kept"))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(root), str(_artifact(tmp_path / "b", "big", 4))],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    kind_dir = root / "acme" / "ranker"
    try:
        deadline = time.monotonic() + 60
        while not any(d != kept.version and any(p.is_file() for p in (kind_dir / d).rglob("*"))
                      for d in os.listdir(kind_dir) if d.startswith("v")):  # fmt: skip
            assert proc.poll() is None and time.monotonic() < deadline, "writer never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    orphans = [d for d in os.listdir(kind_dir) if d.startswith("v") and d != kept.version]
    assert len(orphans) == 1  # the half-written version is on disk ...
    assert [m.version for m in reg.versions()] == [kept.version]  # ... but not visible
    assert Registry(str(root)).resolve("ranker", "acme", "candidate") == kept.version
    reg.verify("ranker", "acme", kept.version)
    with pytest.raises(ArtifactNotFound):
        reg.manifest("ranker", "acme", orphans[0])
    assert reg.gc(older_than_minutes=60) == []  # young orphans may be a publish in progress
    assert reg.gc(older_than_minutes=0) == [str(kind_dir / orphans[0])]
    assert [m.version for m in reg.versions()] == [kept.version]
