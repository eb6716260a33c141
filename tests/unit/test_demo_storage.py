"""``make demo`` keeps its own data: whatever ``var/data`` holds, the demo neither reads nor
refuses it, and its jobs and Serve app read the storage it wrote (no Ray here)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cluster import demo
from cluster.commands.serve_cmd import prepare_config
from core.config import load_platform_config
from core.eventlog import EventLog

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_platform_config_moves_every_storage_root_and_nothing_else(tmp_path: Path) -> None:
    base = REPO_ROOT / "configs" / "platform.yaml"
    path = demo.demo_platform_config(base, tmp_path / "demo")
    ours, theirs = load_platform_config(path), load_platform_config(base)
    for key, uri in ours.resolved_storage().model_dump().items():
        assert uri.startswith(str(tmp_path / "demo")), key
    assert ours.model_dump(exclude={"storage"}) == theirs.model_dump(exclude={"storage"})


def test_ensure_data_reuses_its_own_and_rebuilds_what_is_not(tmp_path: Path, capsys) -> None:
    data = tmp_path / "demo" / "data"
    demo._ensure_data("tiny", str(data), seed=0)
    version = json.loads((data / "synth.json").read_text())["dataset_version"]
    demo._ensure_data("tiny", str(data), seed=0)
    assert "reusing tiny data" in capsys.readouterr().out
    # An interrupted generation (tables, no summary) is rebuilt instead of "already has data".
    (data / "synth.json").unlink()
    demo._ensure_data("tiny", str(data), seed=0)
    assert json.loads((data / "synth.json").read_text())["dataset_version"] == version
    # A demo's sample requests posted an event today (POST /v1/events): the quality gate
    # would compare a week of nothing but it against the synthetic history, so the next run
    # generates the data again instead of failing its training jobs.
    log = EventLog(str(data / "events"))
    hidden = log.read("acme", columns=["item_id", "user_id"]).slice(0, 1).to_pylist()[0]
    accepted = log.append([{"event_id": "demo-hide-1", "tenant_id": "acme", "event_type": "hide",
                            "ts": datetime.now(UTC), "surface": "home", **hidden}])  # fmt: skip
    assert accepted.accepted == ["demo-hide-1"], accepted
    capsys.readouterr()
    demo._ensure_data("tiny", str(data), seed=0)
    assert "posted after it was generated" in capsys.readouterr().out
    assert log.read("acme", start=datetime.now(UTC) - timedelta(days=1)).num_rows == 0
    demo._ensure_data("tiny", str(data), seed=0)
    assert "reusing tiny data" in capsys.readouterr().out


def test_deploy_points_every_app_at_the_demo_config() -> None:
    config = {"applications": [{"name": "a", "args": {"platform_config": "configs/platform.yaml"}},
                                {"name": "b"}]}  # fmt: skip
    out = prepare_config(config, "/srv", platform_config="/srv/var/demo/tiny/platform.yaml")
    assert [a["args"]["platform_config"] for a in out["applications"]] == ["/srv/var/demo/tiny/platform.yaml"] * 2
    assert config["applications"][0]["args"]["platform_config"] == "configs/platform.yaml"
