"""The ``recsys`` command line.

Each command group lives in a module of :data:`COMMAND_MODULES` exposing
``register(subparsers)``; a subcommand sets ``func=<callable(args) -> int>`` with
``set_defaults``. Command modules import heavy libraries (Ray, torch) inside their ``func`` so
``recsys --help`` stays fast.

Exit codes: 0 success, 1 the command ran and found problems, 2 a user error. User errors are
handled here and nowhere else: a command raises :class:`cluster.ui.CliError` (or lets a known
user-error type through: a missing or existing file, an unknown registry version, an invalid
config file, a rejected value) and :func:`main` prints it as ONE line on stderr,
``error: <what is wrong and the fix>``, without a traceback. ``--debug`` (anywhere on the
command line) or ``RECSYS_DEBUG=1`` re-raises it with its traceback. Any other exception is a
bug and keeps its traceback.
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
    "cluster.commands.kill_switch_cmd",
    "cluster.commands.registry_cmd",
    "cluster.commands.local_cmd",
    "cluster.commands.owners_cmd",
    "cluster.commands.rules_cmd",
    "cluster.commands.serve_cmd",
    "cluster.commands.train_cmd",
]


class _UsageError(CliError):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so ``main`` owns the exit status."""

    def error(self, message: str):  # noqa: D102 - argparse API
        raise _UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recsys", description="Operate the recommendation platform.")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a user error (anywhere on the line)"
    )
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


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} (and {len(lines) - 1} more lines; --debug shows all)"


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user error, or None when ``exc`` is a bug."""
    from core.config import ConfigError

    if isinstance(exc, ConfigError):
        if not exc.issues:
            return _first_line(str(exc))
        first = exc.issues[0]
        line = f"{first.file}: {first.key}: {first.message}" if first.key else f"{first.file}: {first.message}"
        more = len(exc.issues) - 1
        return f"{line} (and {more} more; `recsys config validate {first.file}` lists them)" if more else line
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError):
        if exc.filename is not None:
            return f"{exc.filename}: {exc.strerror or type(exc).__name__}"
        return _first_line(str(exc)) or type(exc).__name__
    known: list[type[BaseException]] = [CliError, FileExistsError, ValueError]
    try:
        from core.registry import RegistryError

        known.append(RegistryError)
    except ImportError:
        pass
    if isinstance(exc, tuple(known)):
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return _first_line(str(text)) or type(exc).__name__
    return None


def _pop_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (before a ``--`` separator) and whether it was there."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != "--debug"]
    return head + argv[end:], len(head) != end


def adopt_local_auth() -> None:
    """When the caller says nothing about Ray authentication and the cluster ``recsys up``
    recorded (``$RECSYS_RAY_TEMP_DIR`` or ``/tmp/ray``) runs with token auth, use its token, so
    ``recsys deploy``/``train``/``status`` reach it as they did before token auth was on."""
    if any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return
    from cluster import local

    cluster = local.read_state()
    if cluster is not None and cluster.auth_mode == "token" and cluster.auth_token_path:
        if os.path.exists(cluster.auth_token_path):
            local.use_auth(cluster)


def main(argv: list[str] | None = None) -> int:
    """Run ``recsys`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv, debug = _pop_debug(list(sys.argv[1:] if argv is None else argv))
    debug = debug or bool(os.environ.get("RECSYS_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
        adopt_local_auth()
        return int(args.func(args) or 0)
    except SystemExit as exc:  # --help, or a command that exits with a message
        if isinstance(exc.code, int) or exc.code is None:
            return exc.code or 0
        console(stderr=True).print(f"[red]error:[/] {escape(_first_line(str(exc.code)))}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console(stderr=True).print("interrupted")
        return 130
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or debug:
            raise
        console(stderr=True).print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
