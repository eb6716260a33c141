"""What every ``recsys`` command shares: the user-error type, the output console, and the
checks that turn a missing cluster or a taken port into a :class:`CliError`."""

from __future__ import annotations

import os
import sys

from rich.console import Console


class CliError(Exception):
    """A user error: ``recsys`` prints it as one line and exits with status 2.

    The message names the thing that is wrong and, where there is one, the fix
    (``"no Ray cluster answers at http://127.0.0.1:8265; start one with `recsys up`"``).
    Commands raise it; only ``cluster.cli.main`` catches it.
    """


def console(stderr: bool = False) -> Console:
    """The rich console commands print to (wide when not a terminal, so logs keep whole lines)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", 160))
    return Console(file=stream, width=width, highlight=False)


def require_dashboard(address: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`CliError` unless a Ray dashboard answers at ``address`` (an ``http://`` URL).

    Checked before any Ray client is built: those fail with a page of retries and a traceback.
    """
    import requests

    try:
        requests.get(f"{address.rstrip('/')}/api/version", timeout=timeout_s)
    except requests.RequestException:
        raise CliError(
            f"no Ray cluster answers at {address}; start one with `recsys up` "
            "or pass --address URL (or set RAY_DASHBOARD_ADDRESS)"
        ) from None


def one_line_error(exc: BaseException) -> CliError:
    """``exc`` as a :class:`CliError`: its first line, plus its last when there are several
    (``ray start`` failing prints a log whose last line is the reason)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return CliError(" ".join(lines[:1] + lines[1:][-1:]))
