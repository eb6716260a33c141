"""Adding a component is one file plus one config entry: a toy candidate source, eligibility
rule and slate step (``tests/fixtures/toy_plugins/``, one file each, a package named in the
config's ``plugins:``) are each used end to end by the in-process pipeline."""

from __future__ import annotations

import asyncio

import pytest

from core.components import RANKER_TASKS, RULES, SLATE_STEPS, SOURCES, ranker_tasks
from core.config import ConfigError, PlatformConfig
from core.contracts import Query
from tests.unit.test_pipeline import pipeline, platform, world  # noqa: F401  (fixture)


def _toys(raw) -> None:
    raw["plugins"] = ["tests.fixtures.toy_plugins"]
    acme = raw["tenants"][0]
    home = acme["surfaces"]["home"]
    lucky = [f"i{n:07d}" for n in (13, 17, 21)]
    home["sources"].append({"name": "lucky", "kind": "lucky", "items": lucky, "timeout_ms": 5000})
    acme["policy"]["rules"] = ["catalogue", "availability", "blocked", "hidden", "maturity",
                               "exclude", {"kind": "no_sevens", "digit": "7"}]  # fmt: skip
    home["slate"]["steps"].insert(1, {"kind": "spotlight", "source": "lucky"})


def test_toy_source_rule_and_step_run_end_to_end(world) -> None:  # noqa: F811
    config = platform(toys=_toys)
    assert {"lucky" in SOURCES, "no_sevens" in RULES, "spotlight" in SLATE_STEPS} == {True}
    query = Query("toy-1", "acme", "u-toy", "home", 10, world["now"])
    record = asyncio.run(pipeline(world, config).recommend(query)).decision
    # The source answered, and its items are candidates with its provenance and version.
    assert {o.source: o.status for o in record.sources}["lucky"] == "ok"
    rows = {r["item_id"]: r for r in record.candidates.rows()}
    assert "lucky" in {s["source"] for s in rows["i0000013"]["sources"]}
    assert record.versions["lucky"] == "lucky:v1"
    # The rule removed what it must, with its reason.
    removed = {(r.item_id, r.rule, r.reason) for r in record.removals}
    assert ("i0000017", "no_sevens", "ends_in_7") in removed
    assert not any(s.item_id.endswith("7") for s in record.slate)
    # The step placed the lucky source's best survivor first, with its reasons.
    first = record.slate[0]
    assert "lucky" in first.sources and first.reasons == ["spotlight", "source:lucky"]


def test_unknown_kinds_name_the_key_and_the_known_kinds() -> None:
    def bad(raw):
        raw["tenants"][0]["surfaces"]["home"]["slate"]["steps"].append({"kind": "confetti"})

    with pytest.raises(Exception) as err:
        platform(bad=bad)
    assert "unknown slate step kind 'confetti'" in str(err.value) and "diversity" in str(err.value)

    def bad_plugin(raw):
        raw["plugins"] = ["tests.fixtures.no_such_package"]

    with pytest.raises((ConfigError, ValueError)) as err:
        PlatformConfig.model_validate({**_raw_with(bad_plugin)})
    assert "no_such_package" in str(err.value)


def _raw_with(edit) -> dict:
    from core.config import read_yaml
    from tests.unit.test_pipeline import ROOT

    raw = read_yaml(ROOT / "configs/platform.yaml")
    edit(raw)
    return raw


def test_ranker_tasks_are_defined_once() -> None:
    from core.config import RankerConfig
    from core.train_config import RankerTrainConfig
    from ranking.model import DEFAULTS
    from training.datasets import LABEL_TASKS

    assert ranker_tasks()[:3] == ["click", "like", "hide"]
    assert list(LABEL_TASKS) == ranker_tasks() == DEFAULTS["tasks"] == RankerTrainConfig().tasks
    assert set(RankerConfig().task_weights) == set(RANKER_TASKS)
