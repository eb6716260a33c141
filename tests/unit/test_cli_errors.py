"""Every ``recsys`` subcommand's user errors: one readable line on stderr, no traceback, exit 2.

In-process through :func:`cluster.cli.main`; no Ray cluster is started. "Cluster not running"
is a dashboard address where nothing listens; "port taken" is a socket this test holds.
:func:`test_every_subcommand_has_an_error_case` keeps the sweep complete: a new subcommand
fails it until it has a row in :data:`CASES`.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.cli import build_parser, main
from cluster.local import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NOBODY = f"http://127.0.0.1:{free_port()}"  # a dashboard address where nothing listens

# (argv, a fragment the one line must contain). Placeholders filled by the fixture below:
# {repo} the checkout, {tmp} an empty scratch dir, {free} a free port, {bad_platform} a
# platform config with an unknown key, {data} an existing dataset, {bad_yaml} an unparsable file,
# {taken} a port this test listens on, {nobody} a dashboard address with no cluster, {bad_job} a
# job config with a bad value, {gpu_shape} serving figures measured with the model deployments.
CASES: list[tuple[str, str]] = [
    ("", "the following arguments are required: command"),
    ("frobnicate", "invalid choice: 'frobnicate'"),
    ("data", "the following arguments are required: data_command"),
    ("config validate {tmp}/nope.yaml", "nope.yaml: no such file or folder"),
    ("config validate {tmp}", "no .yaml/.yml files"),
    ("data synth --preset tiny", "the following arguments are required: --out"),
    ("data synth --preset huge --out {tmp}/x", "invalid choice: 'huge'"),
    ("data synth --preset tiny --out {data}", "already has data"),
    ("data movielens --out {tmp}/ml", "give --path DIR (or --download NAME)"),
    ("data movielens --path {tmp}/nope --out {tmp}/ml", "nope does not exist"),
    ("registry", "the following arguments are required: registry_command"),
    ("registry list --type rankr", "argument --type: invalid choice: 'rankr'"),
    ("registry show two_tower v20300101T000000000Z-abcdef", "no two_tower version"),
    ("registry show two_tower production", "give --tenant"),
    ("registry promote ranker v20300101T000000000Z-abcdef --tenant acme", "no ranker version"),
    ("registry promote ranker candidate", "the following arguments are required: --tenant"),
    ("registry rollback ranker --tenant acme", "no 'previous' version"),
    ("registry production", "the following arguments are required: --tenant"),
    ("registry audit --limit many", "argument --limit: invalid int value: 'many'"),
    ("owners --stale-days 0", "--stale-days must be at least 1"),
    ("up --num-cpus 0 --temp-dir {tmp}/ray", "--num-cpus must be at least 1"),
    ("up --dashboard-port {taken} --temp-dir {tmp}/ray", "dashboard port {taken} is in use"),
    ("up --port {taken} --dashboard-port {free} --temp-dir {tmp}/ray", "GCS port {taken} is in use"),
    ("status --temp-dir {tmp}/ray", "run `recsys up`"),
    ("env --temp-dir {tmp}/ray", "run `recsys up`"),
    ("down --everything", "unrecognized arguments: --everything"),
    ("deploy {tmp}/nope.yaml", "nope.yaml: No such file or directory"),
    ("deploy {bad_yaml}", "invalid YAML"),
    ("deploy {repo}/configs/platform.yaml", "platform.yaml: applications: Field required"),
    ("deploy configs/serve.yaml --address {nobody}", "no Ray cluster answers at {nobody}"),
    ("deploy configs/serve.yaml --platform-config {tmp}/p.yaml", "p.yaml: no such file"),
    ("deploy configs/serve.yaml --platform-config {bad_platform}", "platform_bad.yaml: bogus: unknown key"),
    ("scale Ingress two", "argument replicas: invalid int value: 'two'"),
    ("scale Ingress 2 --address {nobody}", "no Ray cluster answers at {nobody}"),
    ("capacity", "the following arguments are required: --target-rps"),
    ("capacity --target-rps 10 --measured {tmp}/none.json", "none.json: no such file"),
    ("capacity --target-rps 10 --config {tmp}/none.yaml", "none.yaml"),
    ("capacity --target-rps -5", "--target-rps must be positive"),
    ("capacity --target-rps 10 --measured {gpu_shape}",
     "serving_gpu_shape.json does not fit configs/serve.yaml: measured with two_tower in the deployment"),
    ("k8s render", "the following arguments are required: --image"),
    ("k8s render {tmp}/none.yaml --image x", "none.yaml"),
    ("k8s render --image x --env NOEQUALS", "--env 'NOEQUALS': expected KEY=VALUE"),
    ("k8s render --image x --schedule nightly", "--schedule 'nightly': expected a cron expression of 5 fields"),
    ("k8s render --image x --tenant nobody", "--tenant: unknown tenant 'nobody'"),
    ("train two-tower --tenant nobody", "unknown tenant 'nobody'"),
    ("train two-tower --tenant acme --address {nobody}", "no Ray cluster answers at {nobody}"),
    ("train ranker --config {tmp}/none.yaml", "--config {tmp}/none.yaml: no such file"),
    ("index build --tenant nobody", "unknown tenant 'nobody'"),
    ("eval --tenant nobody", "unknown tenant 'nobody'"),
    ("review --tenant nobody --approve", "unknown tenant 'nobody'"),
    ("quality-gate --tenant nobody", "unknown tenant 'nobody'"),
    ("quality-gate --config {bad_job}", "job_bad.yaml: window_days: Input should be greater than or equal to 1"),
    ("batch-score --tenant nobody", "unknown tenant 'nobody'"),
    ("batch-score --config {bad_job}", "job_bad.yaml: window_days: unknown key"),
    ("batch-score --config {tmp}/none.yaml", "--config {tmp}/none.yaml: no such file"),
    ("fallback-lists --tenant nobody", "unknown tenant 'nobody'"),
    ("analyze-experiment --experiment nope", "unknown experiment 'nope'; the platform config has: acme-home-like-weight"),
    ("fallback-lists --config {bad_job}", "job_bad.yaml: window_days: Input should be greater than 0"),
    ("k8s render --image x --platform-config {tmp}/in-image.yaml", "name the nightly pipeline's tenants with --tenant"),
    ("config export --tenant acme {tmp}/a.yaml", "give --owner-team --owner-primary"),
    ("config export --tenant nobody {tmp}/a.yaml", "unknown tenant 'nobody'"),
    ("config publish --tenant acme {tmp}/nope.yaml", "nope.yaml: No such file or directory"),
    ("config publish --tenant acme {bad_yaml}", "invalid YAML"),
    ("config publish --tenant acme {bad_job}", "job_bad.yaml: owner: required key is missing"),
    ("config review --tenant acme", "no tenant_config alias 'candidate'"),
    ("config review --tenant acme --sign-off vibes", "invalid choice: 'vibes'"),
    ("config promote --tenant acme v20300101T000000000Z-abcdef", "no tenant_config version"),
    ("config rollback --tenant acme", "no 'previous' version"),
    ("config show --tenant acme", "no tenant_config alias 'production'"),
    ("config set {tmp}/nope.yaml policy.blocked_items=[x]", "nope.yaml: No such file or directory"),
    ("config set {bad_job} window_days", "'window_days': expected KEY=VALUE"),
    ("rules export --tenant acme {tmp}/r.yaml", "give --owner-team --owner-primary"),
    ("rules export --tenant nobody {tmp}/r.yaml", "unknown tenant 'nobody'"),
    ("rules publish --tenant acme {tmp}/nope.yaml", "nope.yaml: No such file or directory"),
    ("rules publish --tenant acme {bad_job}", "job_bad.yaml: owner: required key is missing"),
    ("rules review --tenant acme", "no rule_bundle alias 'candidate'"),
    ("rules promote --tenant acme v20300101T000000000Z-abcdef", "no rule_bundle version"),
    ("rules rollback --tenant acme", "no 'previous' version"),
    ("rules show --tenant acme", "no rule_bundle alias 'production'"),
    ("rules set {tmp}/nope.yaml blocked_items=[x]", "nope.yaml: No such file or directory"),
    ("kill-switch acme source trendy off --reason x", "has no source 'trendy'"),
    ("kill-switch acme source fresh off", "needs --reason"),
    ("kill-switch acme source fresh", "give TARGET NAME off|on"),
    ("kill-switch nobody source fresh off --reason x", "unknown tenant 'nobody'"),
]


@pytest.fixture
def places(tmp_path: Path, monkeypatch) -> Iterator[dict[str, str]]:
    monkeypatch.chdir(REPO_ROOT)  # default config paths (configs/...) are relative
    # A registry and config of the test's own: nothing read from or written to the checkout.
    monkeypatch.setenv("RECSYS_REGISTRY", str(tmp_path / "registry"))
    for name in ("RECSYS_CONFIG", "RAY_ADDRESS", "RAY_DASHBOARD_ADDRESS", "RECSYS_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty").mkdir()
    data = tmp_path / "data"
    (data / "catalogue").mkdir(parents=True)
    (data / "catalogue" / "part-0.parquet").write_bytes(b"x")
    bad = tmp_path / "serve_bad.yaml"
    bad.write_text("applications: [\n  - name: x\n")
    bad_platform = tmp_path / "platform_bad.yaml"
    bad_platform.write_text((REPO_ROOT / "configs" / "platform.yaml").read_text() + "bogus: 1\n")
    bad_job = tmp_path / "job_bad.yaml"
    bad_job.write_text("tenant: acme\nwindow_days: 0\n")
    gpu_shape = tmp_path / "serving_gpu_shape.json"  # measured with the model deployments
    gpu_shape.write_text('{"placement": {"ranker": "deployment"}, "capacity": {"per_replica_rps": {"Ingress": 30}}}')
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield {"repo": str(REPO_ROOT), "tmp": str(tmp_path / "empty"), "data": str(data), "bad_yaml": str(bad), "bad_platform": str(bad_platform), "bad_job": str(bad_job), "gpu_shape": str(gpu_shape),
               "taken": str(held.getsockname()[1]), "free": str(free_port()), "nobody": NOBODY}  # fmt: skip


@pytest.mark.parametrize(("command", "fragment"), CASES, ids=[c or "<none>" for c, _ in CASES])
def test_user_error_is_one_line_without_traceback(places, capsys, command, fragment) -> None:
    argv = [part.format(**places) for part in command.split()]
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert fragment.format(**places) in lines[0]
    assert "Traceback" not in err + out


def test_debug_shows_the_traceback(places) -> None:
    from cluster.ui import CliError

    with pytest.raises(CliError, match="no Ray cluster answers"):
        main(["deploy", "--address", places["nobody"], "--debug"])
    with pytest.raises(CliError, match="unknown tenant"):
        main(["--debug", "review", "--tenant", "nobody"])


def test_down_without_a_cluster_is_not_an_error(places, capsys) -> None:
    assert main(["down", "--temp-dir", places["tmp"]]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix)
        return
    for name, sub in subs[0].choices.items():
        yield from _leaf_commands(sub, (*prefix, name))


def test_every_subcommand_has_an_error_case() -> None:
    covered = {c for c, _ in CASES}
    missing = [leaf for leaf in _leaf_commands(build_parser())
               if not any(c == leaf or c.startswith(leaf + " ") for c in covered)]  # fmt: skip
    assert not missing, f"add a user-error case to CASES for: {missing}"
