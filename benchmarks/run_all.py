"""Run every benchmark in ``benchmarks/`` and print one summary table (``make bench``).

    python -m benchmarks.run_all [--quick] [--only NAME[,NAME...]] [--list]

Each ``benchmarks/bench_*.py`` is one entry of :data:`BENCHMARKS` (a unit test keeps the two
lists equal). Every benchmark runs in its own process (``python -m benchmarks.<name>``), one
after the other (they measure the machine, so they must not share it), its output streamed as
it runs; a failing one is reported and the rest still run. Each writes its JSON under
``benchmarks/results/``; the summary table reads those files back.

Sizes: by default each benchmark's own defaults, the sizes ``docs/performance.md`` and
``docs/evaluation.md`` report, and the files ``recsys capacity`` reads
(``results/serving.json``). Expect about an hour on a 2-core machine. ``--quick``: a
seconds-to-minutes smoke size of the same code, written to ``*_smoke.json`` / ``*_quick.json``
so the published figures are never overwritten by toy runs.

Exit status: 0 when every benchmark ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO_ROOT = RESULTS.parents[1]


def _num(value: Any, fmt: str = ",.0f") -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def _index(r: dict) -> str:
    return (f"ScaNN {_num(r.get('scann_qps_at_recall'))} q/s at recall@10 {_num(r.get('scann_recall@10'), '.2f')}, "
            f"exact {_num(r.get('brute_force_qps'))} q/s, n={_num(r.get('n'))}")  # fmt: skip


def _training(r: dict) -> str:
    runs = r.get("runs") or {}
    return ", ".join(f"{name} {_num(run.get('examples_per_s'))} ex/s" for name, run in runs.items())


def _embed(r: dict) -> str:
    return (f"Ray Data x{r.get('concurrency', '?')} {_num(r.get('ray_data_rows_per_s'))} rows/s, "
            f"one process {_num(r.get('single_process_rows_per_s'))} rows/s")  # fmt: skip


def _device(r: dict) -> str:
    parts = []
    for name, d in (r.get("devices") or {}).items():
        rb = d.get("ranker_batching") or {}
        parts.append(f"{name}: ranker batching {_num(rb.get('speedup_vs_batch_1'), '.2f')}x, "
                     f"two-tower {_num((d.get('two_tower_training') or {}).get('examples_per_s'))} ex/s")  # fmt: skip
    return "; ".join(parts) or "no device measured"


def _serving(r: dict) -> str:
    rates = ", ".join(f"{_num(s.get('target_rps'), 'g')} req/s p99 {_num(s.get('p99_ms'), '.0f')} ms"
                      for s in r.get("serve") or [])  # fmt: skip
    in_process = (r.get("in_process") or {}).get("p50_ms")
    return f"in-process p50 {_num(in_process, '.1f')} ms; {rates}"


def _batch_score(r: dict) -> str:
    return "; ".join(f"{s}: batched {_num(e['batched']['users_per_s'], '.0f')} users/s, one at a time "
                     f"{_num(e['one_at_a_time']['users_per_s'], '.0f')}" for s, e in (r.get("per_surface") or {}).items()) or "-"  # fmt: skip


def _noisy(r: dict) -> str:
    s = r.get("summary") or {}
    share = (s.get("a_429_share_in_flood") or [None])[0]
    return (f"B p99 solo {_num(s.get('b_p99_solo_pooled_ms'), '.0f')} ms, with A flooding "
            f"{_num(s.get('b_p99_flood_pooled_ms'), '.0f')} ms (x{_num(s.get('b_p99_flood_over_solo'), '.2f')}); "
            f"A answered 429: {_num(share, '.0%')}")  # fmt: skip


def _refusal(r: dict) -> str:
    return f"{_num(r.get('us_per_refusal'), '.1f')} us per 429 in the admission middleware"


def _ranker_forward(r: dict) -> str:
    rows = {x["case"]: x for x in r.get("results") or []}
    return ", ".join(f"{case} {_num(x.get('old_cpu_ms'), '.2f')} -> {_num(x.get('new_cpu_ms'), '.2f')} ms"
                     for case, x in rows.items() if "predict" not in case)  # fmt: skip


def _soak(r: dict) -> str:
    s = r.get("summary") or {}
    return (f"{_num(r.get('minutes'), 'g')} min at {_num(r.get('rate_rps'), 'g')} req/s: "
            f"{_num(s.get('failed'))} failed of {_num(s.get('requests'))}, events missing "
            f"{_num(s.get('events_missing'))} / duplicated {_num(s.get('events_duplicated'))}, "
            f"replica RSS {_num(s.get('rss_mb_start_total'))} -> {_num(s.get('rss_mb_end_total'))} MB")  # fmt: skip


@dataclass(frozen=True)
class Benchmark:
    """One ``benchmarks/<name>.py``: its arguments at each size, where it writes, its headline."""

    name: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    result: str
    """File under ``results/`` written at the default size."""
    quick_result: str
    headline: Callable[[dict], str]

    def command(self, quick: bool) -> list[str]:
        return [sys.executable, "-m", f"benchmarks.{self.name}", *(self.quick_args if quick else self.args)]

    def result_path(self, quick: bool) -> Path:
        return RESULTS / (self.quick_result if quick else self.result)


BENCHMARKS: list[Benchmark] = [
    Benchmark("bench_index", (), ("--smoke",), "bench_index.json", "bench_index_smoke.json", _index),
    Benchmark("bench_embed", (), ("--smoke",), "bench_embed.json", "bench_embed_smoke.json", _embed),
    Benchmark("bench_training", (), ("--smoke",), "bench_training.json", "bench_training_smoke.json", _training),
    Benchmark("bench_device", ("--out", str(RESULTS / "bench_device.json")),
              ("--items", "5000", "--batch-sizes", "1,8", "--seconds", "0.2",
               "--out", str(RESULTS / "bench_device_quick.json")),
              "bench_device.json", "bench_device_quick.json", _device),  # fmt: skip
    Benchmark("bench_serving", ("--out", str(RESULTS / "serving.json")),
              ("--items", "5000", "--rates", "5", "--seconds", "3", "--batch-sizes", "1,4",
               "--out", str(RESULTS / "serving_quick.json")),
              "serving.json", "serving_quick.json", _serving),  # fmt: skip
    Benchmark("bench_batch_score", (), ("--quick",), "bench_batch_score.json", "bench_batch_score_quick.json", _batch_score),
    Benchmark("bench_noisy_neighbour", (),
              ("--seconds", "4", "--out", str(RESULTS / "noisy_neighbour_quick.json")),
              "noisy_neighbour.json", "noisy_neighbour_quick.json", _noisy),  # fmt: skip
    Benchmark("bench_refusal", ("--out", str(RESULTS / "refusal.json")),
              ("--n", "2000", "--out", str(RESULTS / "refusal_quick.json")),
              "refusal.json", "refusal_quick.json", _refusal),  # fmt: skip
    Benchmark("bench_ranker_forward", (),
              ("--rounds", "1", "--seconds", "0.2", "--out", str(RESULTS / "bench_ranker_forward_quick.json")),
              "bench_ranker_forward.json", "bench_ranker_forward_quick.json", _ranker_forward),  # fmt: skip
    Benchmark("bench_soak", (),
              ("--minutes", "1", "--capacity", "10", "--out", str(RESULTS / "soak_quick.json")),
              "soak.json", "soak_quick.json", _soak),  # fmt: skip
]


@dataclass
class Outcome:
    name: str
    ok: bool
    seconds: float
    result: Path
    summary: str


def run_one(bench: Benchmark, quick: bool) -> Outcome:
    """Run one benchmark in its own process, streaming its output; read its JSON back."""
    path = bench.result_path(quick)
    before = path.stat().st_mtime if path.exists() else None
    started = time.monotonic()
    code = subprocess.call(bench.command(quick), cwd=REPO_ROOT)
    seconds = time.monotonic() - started
    fresh = path.exists() and path.stat().st_mtime != before
    if code != 0 or not fresh:
        why = f"exit {code}" if code != 0 else f"wrote no {path.name}"
        return Outcome(bench.name, False, seconds, path, f"FAILED ({why}; its output is above)")
    try:
        summary = bench.headline(json.loads(path.read_text()))
    except (ValueError, AttributeError, TypeError) as exc:  # a changed result layout
        summary = f"(result not summarised: {exc})"
    return Outcome(bench.name, True, seconds, path, summary)


def print_summary(outcomes: list[Outcome]) -> None:
    from rich.table import Table

    from cluster.ui import console

    table = Table(title="benchmarks")
    for col in ("benchmark", "status", "seconds", "result", "headline"):
        table.add_column(col, justify="right" if col == "seconds" else "left", no_wrap=col != "headline")
    for o in outcomes:
        status = "[green]ok[/]" if o.ok else "[red]failed[/]"
        table.add_row(o.name, status, f"{o.seconds:.0f}", str(o.result.relative_to(REPO_ROOT)), o.summary)
    console().print(table)  # wide when not a terminal (make bench | tee), like recsys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke sizes (seconds to minutes each)")
    p.add_argument("--only", help="comma list of benchmark names (default: all)")
    p.add_argument("--list", action="store_true", help="print the benchmarks and their commands")
    a = p.parse_args(argv)
    chosen = BENCHMARKS
    if a.only:
        wanted = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {b.name for b in BENCHMARKS})
        if unknown:
            p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(b.name for b in BENCHMARKS)}")
        chosen = [b for b in BENCHMARKS if b.name in wanted]
    if a.list:
        for b in chosen:
            print(f"{b.name:<16} {' '.join(b.command(a.quick)[1:])}  -> results/{b.result_path(a.quick).name}")
        return 0
    outcomes = []
    for i, bench in enumerate(chosen, 1):
        print(f"\n=== [{i}/{len(chosen)}] {bench.name} {'(quick)' if a.quick else ''} "
              f"started {time.strftime('%H:%M:%S')}: {' '.join(bench.command(a.quick)[1:])}", flush=True)  # fmt: skip
        outcome = run_one(bench, a.quick)
        outcomes.append(outcome)
        print(f"=== [{i}/{len(chosen)}] {bench.name}: {'ok' if outcome.ok else 'FAILED'} "
              f"in {outcome.seconds:.0f} s -> {outcome.result.relative_to(REPO_ROOT)}", flush=True)  # fmt: skip
    print_summary(outcomes)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
