"""Every training job's unusable ``--config``: one line per problem naming the file and the key,
on stderr, no traceback, exit status 2 — before any Ray work (as ``tests/unit/test_cli_errors.py``
checks for the ``recsys`` CLI)."""

from __future__ import annotations

import importlib

import pytest

JOBS = ["analyze_experiment", "batch_score", "build_index", "evaluate", "fallback_lists",
        "quality_gate", "ranker", "slate_tradeoff", "two_tower"]  # fmt: skip


@pytest.mark.parametrize("job", JOBS)
def test_unknown_key_names_file_and_key(job, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("frobnicate: 1\n")
    main = importlib.import_module(f"training.{job}").main
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {bad}: frobnicate: unknown key" in err
    assert "Traceback" not in err
    assert all(line.startswith("error: ") for line in err.splitlines())


@pytest.mark.parametrize("job", ["two_tower", "ranker"])
def test_missing_and_unparsable_files(job, tmp_path, capsys):
    main = importlib.import_module(f"training.{job}").main
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(tmp_path / "nope.yaml")])
    assert exc.value.code == 2
    assert f"error: {tmp_path / 'nope.yaml'}: <root>: No such file or directory" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1\n")
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(broken)])
    assert exc.value.code == 2
    assert f"{broken}: <root>: line 2, column 1: invalid YAML" in capsys.readouterr().err
