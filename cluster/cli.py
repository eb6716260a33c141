"""The ``recsys`` command line.

Each command group lives in a module of :data:`COMMAND_MODULES` exposing
``register(subparsers)``; a subcommand sets ``func=<callable(args) -> int>`` with
``set_defaults``. Command modules import heavy libraries (Ray, torch) inside their ``func`` so
``recsys --help`` stays fast.

Exit codes: 0 success, 1 the command ran and found problems, 2 a user error (bad argument,
missing file, unknown version...). User errors print one line naming the file/key/argument,
without a traceback (set ``RECSYS_DEBUG=1`` to get the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rich.markup import escape

from cluster.ui import CliError, console

COMMAND_MODULES = [
    "cluster.commands.config_cmd",
    "cluster.commands.data_cmd",
    "cluster.commands.registry_cmd",
    "cluster.commands.local_cmd",
    "cluster.commands.serve_cmd",
    "cluster.commands.train_cmd",
]


class _UsageError(CliError):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so ``main`` owns the exit status."""

    def error(self, message: str):  # noqa: D102 - argparse API
        raise _UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recsys", description="Operate the recommendation platform.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a missing dependency inside the module is a real bug
                raise
            console(stderr=True).print(
                f"[yellow]warning:[/] command module {name} not found; skipped"
            )
            continue
        module.register(subparsers)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        CliError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
    ]
    try:
        from core.registry import RegistryError

        errors.append(RegistryError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Run ``recsys`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    errors = _user_errors()
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        console(stderr=True).print("interrupted")
        return 130
    except (*errors, ValueError) as exc:
        if os.environ.get("RECSYS_DEBUG"):
            raise
        message = str(exc).strip() or type(exc).__name__
        console(stderr=True).print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
