"""The `recsys` CLI end to end, in-process: exit codes, readable output, one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.cli import main
from core.features import feature_schema_hash
from core.manifest import Lineage, Owner, ReviewRecord
from core.registry import Registry
from tests.unit.review_helpers import METRICS, approve


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_data_synth_tiny_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "data"
    code, stdout, _ = _run(
        capsys, "data", "synth", "--preset", "tiny", "--out", str(out), "--no-progress"
    )
    assert code == 0
    meta = json.loads((out / "synth.json").read_text())
    for tenant in ("acme", "globex"):
        assert tenant in stdout
        assert f"{meta['rows'][tenant]['events']:,}" in stdout
    assert "2025-01-01" in stdout and meta["dataset_version"] in stdout
    # Writing into the same directory again would duplicate events: refused, exit 2.
    code, _, err = _run(capsys, "data", "synth", "--preset", "tiny", "--out", str(out))
    assert code == 2 and "already has data" in err and "Traceback" not in err


@pytest.fixture
def filled_registry(tmp_path: Path) -> tuple[str, list[str]]:
    root = str(tmp_path / "registry")
    reg = Registry(root)
    owner = Owner(
        team="retrieval", primary="ada", escalation="#oncall", runbook="docs/runbooks/x.md"
    )
    versions = []
    for i in range(2):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "model.pt").write_bytes(b"weights" * (i + 1))
        m = reg.publish("two_tower", "acme", src, owner=owner,
                        lineage=Lineage(dataset_version="d", feature_schema_hash=feature_schema_hash()),
                        metrics={"recall@100": 0.4 + i / 10, **METRICS["two_tower"]})  # fmt: skip
        versions.append(m.version)
    approve(reg, "two_tower", "acme", versions[0])
    reg.promote("two_tower", "acme", versions[0], actor="ada")
    reg.add_review(ReviewRecord(kind="two_tower", tenant="acme", version=versions[1],
                                at=m.created_at, actor="bob", decision="approve", comment="lgtm"))  # fmt: skip
    approve(reg, "two_tower", "acme", versions[1])  # the launch review `promote` checks
    return root, versions


def test_registry_list_show_promote_rollback_audit(filled_registry, capsys) -> None:
    root, (v1, v2) = filled_registry
    code, out, _ = _run(capsys, "registry", "list", "--root", root)
    assert code == 0 and v1 in out and v2 in out and "production" in out and "candidate" in out
    code, out, _ = _run(capsys, "registry", "list", "--root", root, "--tenant", "globex")
    assert code == 0 and "no versions" in out

    code, out, _ = _run(capsys, "registry", "show", "two_tower", v2, "--root", root)
    assert code == 0 and "candidate" in out and "recall@100" in out and "lgtm" in out
    code, out, _ = _run(
        capsys, "registry", "show", "two_tower", "production", "--tenant", "acme", "--root", root
    )
    assert code == 0 and v1 in out

    code, out, _ = _run(
        capsys, "registry", "promote", "two_tower", v2, "--tenant", "acme", "--root", root
    )
    assert code == 0 and f"production = {v2}" in out
    code, out, _ = _run(
        capsys, "registry", "rollback", "two_tower", "--tenant", "acme", "--root", root
    )
    assert code == 0 and f"production = {v1}" in out
    assert Registry(root).resolve("two_tower", "acme", "production") == v1
    code, out, _ = _run(capsys, "registry", "audit", "--root", root)
    rollbacks = out.count("rollback") - out.count("rollback_plan")  # sign-offs are audited too
    assert code == 0 and rollbacks == 2 and "promote" in out and "sign_off" in out


def test_registry_root_comes_from_the_environment(filled_registry, capsys, monkeypatch) -> None:
    root, (v1, _) = filled_registry
    monkeypatch.setenv("RECSYS_REGISTRY", root)
    code, out, _ = _run(capsys, "registry", "list", "--type", "two_tower")
    assert code == 0 and v1 in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["data", "synth", "--preset", "huge", "--out", "x"],
            "argument --preset: invalid choice: 'huge'",
        ),
        (["data", "synth", "--preset", "tiny"], "the following arguments are required: --out"),
        (["registry", "show", "rankr", "v1"], "argument kind: invalid choice: 'rankr'"),
        (
            ["registry", "show", "two_tower", "v20300101T000000000Z-abcdef"],
            "no two_tower version v20300101T000000000Z-abcdef",
        ),
        (["registry", "show", "two_tower", "production"], "give --tenant"),
        (["registry", "show", "two_tower", "staging", "--tenant", "acme"], "no alias 'staging'"),
        (["registry", "rollback", "two_tower", "--tenant", "globex"], "no 'previous' version"),
        (
            ["registry", "promote", "two_tower", "v20300101T000000000Z-abcdef", "--tenant", "acme"],
            "no two_tower version",
        ),
        (
            ["data", "movielens", "--path", "/nonexistent/ml", "--out", "x"],
            "/nonexistent/ml does not exist",
        ),
        (["up", "--num-cpus", "0"], "--num-cpus must be at least 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_user_errors_exit_2_with_a_one_line_message(filled_registry, capsys, argv, message) -> None:
    root, _ = filled_registry
    if argv[0] == "registry":
        argv = [*argv, "--root", root]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_help_is_exit_0(capsys) -> None:
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "registry" in out and "data" in out
