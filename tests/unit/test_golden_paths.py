"""The golden paths of ``docs/operations.md`` ("Golden paths": onboard a tenant with its config
and rule bundle, change a rule in the bundle, roll the bundle back, kill a source) run in process, in the order written, as an operator types them.

Each ```bash block under that heading is a command sequence; every command is a ``recsys``
command, run through :func:`cluster.cli.main` against a temp world
(:mod:`tests.unit.tenant_world`: toy models for both tenants, logged requests) with
``/tmp/`` moved into the test's temp dir. The test fails at the first command that does not
exit 0, naming its line, and then checks that each path did what the docs say.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from cluster.cli import main as recsys
from core.config import load_platform_config
from core.kill_switches import read_state
from core.rule_bundle import KIND as RULE_BUNDLE
from core.rule_bundle import effective_platform
from core.tenant_config import KIND
from tests.unit.tenant_world import log_requests, write_world

ROOT = Path(__file__).resolve().parents[2]
HEADING = "### Golden paths"


def golden_paths(text: str) -> dict[str, list[tuple[int, str]]]:
    """Path title (the bold lead of the paragraph before a block) -> its (line, command)s."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == HEADING)
    paths: dict[str, list[tuple[int, str]]] = {}
    title, i = "", start + 1
    while i < len(lines) and not lines[i].startswith("## ") and not (lines[i].startswith("### ") and i > start):
        line = lines[i]
        if line.startswith("**"):
            title = line.split("**")[1].rstrip(".")
        if line.strip() == "```bash":
            i += 1
            while not lines[i].startswith("```"):
                if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                    first, parts = i + 1, [lines[i]]
                    while parts[-1].rstrip().endswith("\\"):
                        i += 1
                        parts.append(lines[i])
                    paths.setdefault(title, []).append((first, " ".join(p.rstrip("\\ ") for p in parts)))
                i += 1
        i += 1
    return paths


def test_the_docs_have_the_four_golden_paths() -> None:
    paths = golden_paths((ROOT / "docs/operations.md").read_text())
    assert list(paths) == ["Onboard a tenant", "Change a rule", "Roll back", "Kill a source"]
    assert all(cmd.startswith("recsys ") for cmds in paths.values() for _, cmd in cmds)


def test_golden_paths_run_as_written(tiny_data, tmp_path, monkeypatch, capsys) -> None:
    config, registry, catalogues = write_world(tiny_data, tmp_path)
    monkeypatch.setenv("RECSYS_CONFIG", str(config))
    monkeypatch.setenv("RECSYS_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.chdir(ROOT)
    platform = load_platform_config()
    log_requests(platform, registry, catalogues, tmp_path / "decisions")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done: dict[str, str] = {}
    for title, commands in golden_paths((ROOT / "docs/operations.md").read_text()).items():
        for line, command in commands:
            argv = [a.replace("/tmp/", f"{scratch}/") for a in shlex.split(command)[1:]]
            code = recsys(argv)
            out, err = capsys.readouterr()
            assert code == 0, f"docs/operations.md:{line}: `{command}` exited {code}\n{out}\n{err}"
            done[title] = done.get(title, "") + out
        if title == "Onboard a tenant":
            onboarded = registry.resolve(KIND, "globex", "production")
            assert onboarded is not None
            assert registry.manifest(KIND, "globex", onboarded).owner.team == "globex-recs"
            first_rules = registry.resolve(RULE_BUNDLE, "globex", "production")
            assert registry.manifest(RULE_BUNDLE, "globex", first_rules).owner.team == "globex-trust"
            served, version = effective_platform(platform, registry, "globex")
            assert version == onboarded and served.tenant("globex").policy.safe_fallback
            assert served.tenant("globex").policy.rule_bundle == "production"
        elif title == "Change a rule":
            served, version = effective_platform(platform, registry, "globex")
            assert version == onboarded and served.tenant("globex").policy.blocked_categories == ["sports"]
            rules = registry.resolve(RULE_BUNDLE, "globex", "production")
            assert rules != first_rules
            checks = [r for r in registry.reviews(RULE_BUNDLE, "globex", rules) if r.decision == "note"][-1].checks
            assert "24 requests replayed" in checks["replay_policy"]["detail"], checks
        elif title == "Roll back":
            served, version = effective_platform(platform, registry, "globex")
            assert served.tenant("globex").policy.blocked_categories == []
            assert registry.resolve(RULE_BUNDLE, "globex", "production") == first_rules
            assert "rolled back" in done[title]
        elif title == "Kill a source":
            assert "source:trending off" in done[title]
            assert read_state(registry, "acme").off == ()
            flips = [(a.item, a.decision) for a in registry.audit(tenant="acme") if a.action == "kill_switch"]
            assert flips == [("source:trending", "off"), ("source:trending", "on")]
    assert len(done) == 4
