"""The experiment readout as a Ray job (Ray Data over the decision log joined with events by
request id) on the session cluster, on synthetic logged data with a known effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from core.decision_log import DecisionLogWriter
from core.eventlog import EventLog
from tests.unit.experiment_data import DAY, experiment, synth

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SAME = {"click": 0.10, "like": 0.04, "hide": 0.02}


def test_the_job_names_the_better_arm_with_an_interval_excluding_zero(ray_connected, tmp_path, monkeypatch, capsys):
    from training import analyze_experiment

    exp = experiment({"control": 34, "copy": 33, "better": 33})  # "copy" is an A/A twin of control
    records, events = synth(exp, {"control": SAME, "copy": SAME, "better": {**SAME, "click": 0.14}},
                            users=3000, seed=1)  # fmt: skip
    platform = yaml.safe_load((REPO / "configs/platform.yaml").read_text())
    platform["storage"] = {"data": str(tmp_path / "data"), "events": str(tmp_path / "events"),
                           "registry": str(tmp_path / "registry"), "decisions": str(tmp_path / "decisions")}  # fmt: skip
    platform["experiments"] = [exp.model_dump(mode="json", exclude_none=True)]
    (tmp_path / "platform.yaml").write_text(yaml.safe_dump(platform))
    monkeypatch.setenv("RECSYS_CONFIG", str(tmp_path / "platform.yaml"))
    log = DecisionLogWriter(str(tmp_path / "decisions"))
    assert all(log.submit(r) for r in records)
    log.close()
    EventLog(str(tmp_path / "events")).write_table(events)

    job = yaml.safe_load((REPO / "configs/train/analyze_experiment.yaml").read_text())
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**job, "work_dir": str(tmp_path / "work")}))

    code = analyze_experiment.main(["--experiment", exp.id, "--smoke-test", "--config", str(tmp_path / "job.yaml")])
    assert code == 0
    report = json.loads((tmp_path / "work/acme/experiments" / f"{exp.id}.json").read_text())
    # The window is the plan's: its start and planned duration (7 days).
    assert report["window"] == {"start": "2026-11-25", "end": "2026-12-01"} and DAY.day == 25
    assert report["better_arms"] == ["better"]
    diff = report["comparisons"]["better"]["click_rate"]["difference"]
    assert diff["ci_low"] > 0 and diff["ci_low"] < 0.04 < diff["ci_high"]
    aa = report["comparisons"]["copy"]["click_rate"]
    assert aa["verdict"] == "no_difference" and aa["difference"]["ci_low"] < 0 < aa["difference"]["ci_high"]
    assert sum(a["exposures"] for a in report["arms"].values()) == len(records)
    assert "better on click_rate" in capsys.readouterr().out
    # An experiment the config does not have is a clear error, not a traceback.
    assert analyze_experiment.main(["--experiment", "nope", "--config", str(tmp_path / "job.yaml")]) == 2
