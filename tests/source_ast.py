"""``ast.parse`` for the tests that read the project's own source.

CPython 3.11 keeps the AST constructor's recursion counter in interpreter-wide state, so an
``ast.parse`` in another thread at the same moment — Python 3.11 formats every traceback's
``^^^`` carets with ``ast.parse``, so a background thread logging an exception is enough —
makes this thread's parse fail with ``SystemError: AST constructor recursion depth mismatch``
(python/cpython#106905, fixed in 3.12). The source is fine and a second parse succeeds, so
the parse is retried on that one error; any other error, or the same one three times, is
raised.
"""

from __future__ import annotations

import ast
from pathlib import Path


def parse_file(path: Path) -> ast.Module:
    source = path.read_text()
    for attempt in range(3):
        try:
            return ast.parse(source, filename=str(path))
        except SystemError as e:
            if "recursion depth mismatch" not in str(e) or attempt == 2:
                raise
    raise AssertionError("unreachable")
