"""Every ```bash block of README.md and docs/**/*.md still runs, in the order written.

The checkout's files (``git ls-files``: tracked and untracked-but-not-ignored, as they are on
disk) are copied to a scratch directory; ``.venv`` there is a link to this checkout's, and
``PYTHONPATH`` puts the scratch copy first, so the copied code is what runs. README.md comes
first, then ``docs/`` files in path order; every command runs in ONE bash session (so
``export`` and ``cd`` carry over, as for a reader following along), and the test fails at the
first command whose exit status is not 0, naming its file and line.

Markers, in a command's trailing comment (or alone on a block's first line, for the block):

* ``# test: long`` — takes minutes (training jobs, ``make demo``); run only when
  ``RECSYS_DOCS_LONG=1``. Commands that need a long one's output are marked long too.
* ``# test: skip`` — the test cannot run it: a Kubernetes cluster, a second promotion, a
  performance benchmark, the test suite itself.

What the test changes before running a command, so that it is safe and short on a shared
2-core machine: ``--preset small``/``bench`` (and ``generate('small'…``) become ``tiny``; the
documented ports become free ones (``127.0.0.1:8265`` → the test's dashboard port, ``:8000``
→ its HTTP port; ``recsys up`` gets ``--dashboard-port``, ``recsys deploy`` ``--http-port``,
``make demo`` its ``DEMO_*_PORT``); absolute ``/tmp/`` paths move into the scratch directory.
Ray runs with its own temp dir (``RECSYS_RAY_TEMP_DIR``), so ``recsys up``/``down`` in the
docs start and stop the test's cluster only; it is stopped at the end whatever happened.
A cluster any doc needs comes from the README's own ``recsys up``, with Ray token
authentication on as it is by default (the README's ``eval "$(recsys env)"`` gives the shell
the token).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster.local import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"#.*\btest:\s*(long|skip)\b")
LONG = os.environ.get("RECSYS_DOCS_LONG") == "1"


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    text: str  # continuation lines joined
    mark: str | None  # "long", "skip" or None


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def bash_commands(path: Path, root: Path) -> list[DocCommand]:
    """The commands of ``path``'s ```bash blocks: comment-only lines dropped, ``\\``
    continuations joined; a marker on a block's first line applies to the whole block."""
    commands: list[DocCommand] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```bash":
            i += 1
            continue
        i += 1
        block_mark = None
        first = True
        while i < len(lines) and not lines[i].startswith("```"):
            line, start = lines[i], i + 1
            if first and line.strip().startswith("#") and MARKER.search(line):
                block_mark = MARKER.search(line).group(1)
            first = False
            if not line.strip() or line.strip().startswith("#"):
                i += 1
                continue
            parts = [line]
            while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                parts.append(lines[i])
            text = "\n".join(parts)
            found = MARKER.search(parts[-1])
            where = f"{path.relative_to(root)}:{start}"
            commands.append(DocCommand(where, text, found.group(1) if found else block_mark))
            i += 1
        i += 1
    return commands


def adapt(command: str, env: dict[str, str], scratch_tmp: str) -> str:
    """The command as the test runs it (see the module docstring)."""
    dash, http = env["DEMO_DASHBOARD_PORT"], env["DEMO_HTTP_PORT"]
    command = re.sub(r"--preset (small|bench)\b", "--preset tiny", command)
    command = re.sub(r"generate\('(small|bench)'", "generate('tiny'", command)
    command = command.replace("127.0.0.1:8265", f"127.0.0.1:{dash}")
    command = command.replace("127.0.0.1:8000", f"127.0.0.1:{http}")
    command = re.sub(r"\brecsys up\b", f"recsys up --dashboard-port {dash}", command)
    command = re.sub(r"\brecsys deploy\b", f"recsys deploy --http-port {http}", command)
    return re.sub(r"(?<![\w.])/tmp/", f"{scratch_tmp}/", command)


def scratch_checkout(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, check=True, capture_output=True).stdout  # fmt: skip
    for name in filter(None, listed.decode().split("\0")):
        src = REPO_ROOT / name
        if src.is_file():  # deleted but not yet staged files are listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(REPO_ROOT / ".venv")


def test_every_doc_command_block_parses() -> None:
    commands = [c for f in doc_files(REPO_ROOT) for c in bash_commands(f, REPO_ROOT)]
    assert commands, "no ```bash blocks found"
    for c in commands:
        code = re.sub(r"(^|\s)#.*$", "", c.text, flags=re.M)  # trailing comments may say <job>
        assert "<" not in re.sub(r"(<<|<\(|2>&1|>&2)", "", code) or c.mark == "skip", (
            f"{c.where}: a <placeholder> cannot run as written; use a real value or mark it "
            "'# test: skip'"
        )
        bash = subprocess.run(["bash", "-n", "-c", c.text], capture_output=True, text=True)
        assert bash.returncode == 0, f"{c.where}: not valid bash: {bash.stderr.strip()}"


@pytest.mark.skipif(not (REPO_ROOT / ".venv" / "bin" / "recsys").exists(), reason="make install first")
def test_doc_commands_run_in_order() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="recsys-docs-"))
    ray_tmp = tempfile.mkdtemp(prefix="rd", dir="/tmp")  # short: Ray's socket paths are limited
    checkout, scratch_tmp = scratch / "checkout", scratch / "tmp"
    checkout.mkdir()
    scratch_tmp.mkdir()
    scratch_checkout(checkout)
    venv_bin = str(REPO_ROOT / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECSYS_", "RAY_", "PYTEST_")) and k != "PYTHONPATH"}  # fmt: skip
    env.update(PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(checkout),
               RECSYS_RAY_TEMP_DIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0",
               DEMO_DASHBOARD_PORT=str(free_port()), DEMO_HTTP_PORT=str(free_port()), COLUMNS="120")  # fmt: skip
    commands = [c for f in doc_files(checkout) for c in bash_commands(f, checkout)]
    run = [c for c in commands if c.mark is None or (c.mark == "long" and LONG)]
    script = ["set -o pipefail"]
    for n, c in enumerate(run):
        script += [f"echo {shlex.quote(f'@@ {n} {c.where}')}",
                   adapt(c.text, env, str(scratch_tmp)),
                   f"rc=$?; if [ $rc -ne 0 ]; then echo \"@@ FAILED {n} exit $rc\"; exit 1; fi"]  # fmt: skip
    try:
        proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=checkout, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=3600 if LONG else 900)  # fmt: skip
        output = proc.stdout
    finally:
        subprocess.run([f"{venv_bin}/recsys", "down"], cwd=checkout, env=env, capture_output=True)
    failed = re.search(r"@@ FAILED (\d+) exit (\d+)", output)
    if failed:
        c = run[int(failed.group(1))]
        tail = output[: failed.start()].rsplit(f"@@ {failed.group(1)} ", 1)[-1][-3000:]
        pytest.fail(f"{c.where}: `{c.text}` exited {failed.group(2)} (scratch copy kept: {checkout}):\n{tail}")
    assert proc.returncode == 0, output[-3000:]
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    skipped = len(commands) - len(run)
    print(f"{len(run)} doc commands ran, {skipped} skipped (long: set RECSYS_DOCS_LONG=1)", file=sys.stderr)
