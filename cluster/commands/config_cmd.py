"""`recsys config validate [PATH…]`: check config files against their schemas.

`recsys config export|publish|review|promote|rollback|show --tenant T`: a tenant's serving
configuration as a reviewed ``tenant_config`` registry artifact (:mod:`core.tenant_config`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from cluster.ui import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="configuration files")
    sub = config.add_subparsers(dest="config_command", required=True)
    validate = sub.add_parser(
        "validate", help="validate config files (default: every YAML file under configs/)"
    )
    validate.add_argument("paths", nargs="*", help="files or folders to validate")
    validate.set_defaults(func=run_validate)
    from cluster.commands.tenant_config_cmd import register_tenant_config

    register_tenant_config(sub)


def _expand(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths or ["configs"]:
        p = Path(raw)
        if not p.exists():
            raise CliError(f"{raw}: no such file or folder (`recsys config validate` alone checks configs/)")
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.suffix in {".yaml", ".yml"}))
        else:
            files.append(p)
    return files


def run_validate(args: argparse.Namespace) -> int:
    from cluster.config_files import validate_file
    from core.config import ConfigError

    console = Console(highlight=False)
    failed = 0
    files = _expand(args.paths)
    if not files:
        raise CliError(f"no .yaml/.yml files in {', '.join(args.paths or ['configs'])}")
    for path in files:
        try:
            validate_file(path)
        except ConfigError as exc:
            failed += 1
            for issue in exc.issues:
                console.print(f"[red]✗[/red] {issue.file}: [bold]{issue.key or '<root>'}[/bold]: {issue.message}")
        else:
            console.print(f"[green]✓[/green] {path}")
    console.print(f"{len(files) - failed} valid, {failed} invalid")
    return 1 if failed else 0
