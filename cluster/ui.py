"""What every ``recsys`` command shares: the user-error type and the output console."""

from __future__ import annotations

import os
import sys

from rich.console import Console


class CliError(Exception):
    """A user error: ``recsys`` prints it as one line and exits with status 2."""


def console(stderr: bool = False) -> Console:
    """The rich console commands print to (wide when not a terminal, so logs keep whole lines)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", 160))
    return Console(file=stream, width=width, highlight=False)
