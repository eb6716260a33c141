"""``benchmarks.run_all`` (``make bench``) knows every benchmark; nothing here runs one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run_all

BENCH_DIR = Path(run_all.__file__).parent


def test_run_all_lists_every_bench_module() -> None:
    on_disk = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    assert sorted(b.name for b in run_all.BENCHMARKS) == on_disk


def test_quick_runs_never_overwrite_the_published_results() -> None:
    for b in run_all.BENCHMARKS:
        assert b.result_path(quick=True) != b.result_path(quick=False), b.name
        assert b.result_path(quick=False).parent == run_all.RESULTS


def test_recsys_capacity_reads_the_file_bench_serving_writes() -> None:
    from cluster.commands.serve_cmd import DEFAULT_MEASURED

    serving = next(b for b in run_all.BENCHMARKS if b.name == "bench_serving")
    assert serving.result_path(quick=False) == run_all.REPO_ROOT / DEFAULT_MEASURED


@pytest.mark.parametrize("bench", run_all.BENCHMARKS, ids=lambda b: b.name)
def test_headline_summarises_a_result_file(bench) -> None:
    # The committed result when there is one (the layout the benchmark writes), else empty.
    candidates = sorted(run_all.RESULTS.glob(f"{Path(bench.result).stem}*.json"))
    data = json.loads(candidates[0].read_text()) if candidates else {}
    assert isinstance(bench.headline(data), str)


def test_list_and_only(capsys) -> None:
    assert run_all.main(["--list", "--quick", "--only", "bench_index,bench_serving"]) == 0
    out = capsys.readouterr().out
    assert "bench_index" in out and "--smoke" in out and "serving_quick.json" in out
    assert "bench_training" not in out
    with pytest.raises(SystemExit):
        run_all.main(["--only", "bench_nope"])
