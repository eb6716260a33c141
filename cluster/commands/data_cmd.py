"""`recsys data synth|movielens`: write a tenant dataset (catalogue, users, events)."""

from __future__ import annotations

import argparse
import time

from cluster.ui import CliError, console


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="generate or import tenant data")
    sub = data.add_subparsers(dest="data_command", required=True)

    synth = sub.add_parser("synth", help="deterministic synthetic tenants from a latent model")
    synth.add_argument("--preset", choices=["tiny", "small", "bench"], default="tiny")
    synth.add_argument("--out", required=True, help="output directory or URI (must be empty)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=run_synth)

    ml = sub.add_parser("movielens", help="import a GroupLens MovieLens dataset")
    ml.add_argument("--path", help="directory holding u.data, ratings.dat or ratings.csv")
    ml.add_argument("--out", required=True, help="output directory or URI (must be empty)")
    ml.add_argument("--tenant", default="movielens")
    ml.add_argument(
        "--download",
        metavar="NAME",
        help="first download NAME (ml-100k, ml-1m, ml-latest-small, ml-20m, ml-25m) "
        "from files.grouplens.org into --path (default: ./var/movielens)",
    )
    ml.set_defaults(func=run_movielens)


def run_synth(args: argparse.Namespace) -> int:
    from datagen.synth import generate

    started = time.perf_counter()
    summary = generate(args.preset, args.out, seed=args.seed, progress=not args.no_progress)
    print_summary(summary, time.perf_counter() - started)
    return 0


def run_movielens(args: argparse.Namespace) -> int:
    from datagen.movielens import download_movielens, load_movielens

    path = args.path
    if args.download:
        path = str(download_movielens(args.download, path or "var/movielens"))
    if not path:
        raise CliError("recsys data movielens: give --path DIR (or --download NAME)")
    started = time.perf_counter()
    summary = load_movielens(path, args.out, tenant=args.tenant)
    print_summary(summary, time.perf_counter() - started)
    return 0


def print_summary(summary, seconds: float) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"{summary.source} → {summary.out}")
    for col in ("tenant", "items", "users", "events", "event types"):
        table.add_column(col, justify="right" if col in ("items", "users", "events") else "left")
    for tenant in summary.tenants:
        rows = summary.rows[tenant]
        types = ", ".join(f"{k} {v:,}" for k, v in rows.get("event_types", {}).items())
        table.add_row(
            tenant, f"{rows['items']:,}", f"{rows['users']:,}", f"{rows['events']:,}", types
        )
    out.print(table)
    start = summary.start.isoformat() if summary.start else "-"
    end = summary.end.isoformat() if summary.end else "-"
    out.print(f"events from {start} to {end}")
    out.print(f"dataset_version {summary.dataset_version}  ({seconds:.1f} s)")
