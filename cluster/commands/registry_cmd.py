"""`recsys registry list|show|promote|rollback|production|audit`: inspect and move versions.

``promote`` is review-gated (:mod:`core.promotion`): a refusal prints one line naming each
missing check or sign-off. ``--break-glass --reason`` skips the gate for emergency roles.

The registry root is ``--root``, else ``$RECSYS_REGISTRY``, else ``storage.registry`` of the
platform config (when ``core.config`` exists and the config file is there), else
``./var/registry``.
"""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import json
import os

from cluster.ui import CliError, console

DEFAULT_ROOT = "var/registry"


def register(subparsers: argparse._SubParsersAction) -> None:
    from core.manifest import ARTIFACT_KINDS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", help="registry URI (default: $RECSYS_REGISTRY, then config)")
    registry = subparsers.add_parser("registry", help="artifact versions, aliases and audit log")
    sub = registry.add_subparsers(dest="registry_command", required=True)

    ls = sub.add_parser("list", parents=[common], help="list visible versions")
    ls.add_argument("--type", dest="kind", choices=ARTIFACT_KINDS)
    ls.add_argument("--tenant")
    ls.set_defaults(func=run_list)

    show = sub.add_parser("show", parents=[common], help="a version's manifest, aliases, reviews")
    show.add_argument("kind", choices=ARTIFACT_KINDS)
    show.add_argument("version", help="a version id, or an alias (with --tenant)")
    show.add_argument("--tenant")
    show.set_defaults(func=run_show)

    promote = sub.add_parser("promote", parents=[common], help="make a version production")
    promote.add_argument("kind", choices=ARTIFACT_KINDS)
    promote.add_argument("version")
    promote.add_argument("--tenant", required=True)
    promote.add_argument("--reason", default="")
    promote.add_argument("--actor", default=None, help="who (default: $USER)")
    promote.add_argument(
        "--break-glass",
        action="store_true",
        help="emergency: promote without review or through a freeze (emergency roles only, "
        "--reason required; flagged in the audit log and /v1/versions)",
    )
    promote.set_defaults(func=run_promote)

    rollback = sub.add_parser("rollback", parents=[common], help="swap previous into production")
    rollback.add_argument("kind", choices=ARTIFACT_KINDS)
    rollback.add_argument("--tenant", required=True)
    rollback.add_argument("--reason", default="")
    rollback.add_argument("--actor", default=None, help="who (default: $USER)")
    rollback.set_defaults(func=run_rollback)

    prod = sub.add_parser("production", parents=[common], help="production version per kind")
    prod.add_argument("--tenant", required=True)
    prod.set_defaults(func=run_production)

    audit = sub.add_parser("audit", parents=[common], help="the audit log, oldest first")
    audit.add_argument("--type", dest="kind", choices=ARTIFACT_KINDS)
    audit.add_argument("--tenant")
    audit.add_argument("--limit", type=int, default=50, help="show the last N records (0: all)")
    audit.set_defaults(func=run_audit)


def registry_root(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("RECSYS_REGISTRY"):
        return os.environ["RECSYS_REGISTRY"]
    if importlib.util.find_spec("core.config") is not None:
        import core.config as config

        default = getattr(config, "DEFAULT_PLATFORM_CONFIG", "configs/platform.yaml")
        path = os.environ.get("RECSYS_CONFIG") or config.resolve_uri(default)
        if os.path.exists(path):  # a broken config is an error; no config is not
            return config.resolve_uri(config.load_platform_config(path).storage.registry)
    return DEFAULT_ROOT


def _registry(args):
    from core.registry import Registry

    return Registry(registry_root(args.root))


def _actor(args) -> str:
    return args.actor or os.environ.get("USER") or getpass.getuser()


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    reg = _registry(args)
    versions = reg.versions(kind=args.kind, tenant=args.tenant)
    table = Table(title=f"registry {reg.uri}")
    for col in ("tenant", "kind", "version", "created (UTC)", "aliases", "files", "bytes", "owner"):
        table.add_column(col, no_wrap=col in ("version", "aliases"))
    alias_cache: dict[tuple[str, str], dict[str, str]] = {}
    for m in versions:
        key = (m.kind, m.tenant)
        if key not in alias_cache:
            alias_cache[key] = reg.aliases(m.kind, m.tenant)
        names = ", ".join(a for a, v in alias_cache[key].items() if v == m.version)
        table.add_row(
            m.tenant,
            m.kind,
            m.version,
            f"{m.created_at:%Y-%m-%d %H:%M:%S}",
            names,
            str(len(m.files)),
            f"{sum(f.bytes for f in m.files):,}",
            m.owner.team,
        )
    out = console()
    out.print(table if versions else f"no versions in {reg.uri}")
    return 0


def _find(reg, kind: str, version: str, tenant: str | None):
    from core.registry import ArtifactNotFound

    if not version.startswith("v") or "Z-" not in version:  # an alias name
        if tenant is None:
            raise CliError(f"'{version}' looks like an alias: give --tenant to resolve it")
        resolved = reg.resolve(kind, tenant, version)
        if resolved is None:
            raise ArtifactNotFound(f"no alias '{version}' for {kind} of tenant '{tenant}'")
        version = resolved
    if tenant is not None:
        return reg.manifest(kind, tenant, version)
    matches = [m for m in reg.versions(kind=kind) if m.version == version]
    if not matches:
        raise ArtifactNotFound(f"no {kind} version {version} in registry {reg.uri}")
    return matches[0]


def run_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    m = _find(reg, args.kind, args.version, args.tenant)
    aliases = [a for a, v in reg.aliases(m.kind, m.tenant).items() if v == m.version]
    out = console()
    out.print(f"[bold]{m.kind}[/] {m.version}  tenant [bold]{m.tenant}[/]")
    out.print(f"aliases: {', '.join(aliases) or '-'}")
    out.print_json(m.model_dump_json())
    reviews = reg.reviews(m.kind, m.tenant, m.version)
    out.print(f"reviews: {len(reviews) or 'none'}")
    for r in reviews:
        what = f"{r.decision} {r.item}" if r.item else r.decision
        out.print(
            f"  {r.at:%Y-%m-%d %H:%M:%S} {r.actor} {what}: {r.comment} {json.dumps(r.checks)}"
        )
    problems = reg.promotion_problems(m.kind, m.tenant, m.version)
    out.print(f"promotion gate: {'; '.join(problems) if problems else 'may be promoted'}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    reg = _registry(args)
    version = _find(reg, args.kind, args.version, args.tenant).version
    aliases = reg.promote(args.kind, args.tenant, version, actor=_actor(args), reason=args.reason,
                          break_glass=args.break_glass)  # fmt: skip
    flag = " [BREAK-GLASS]" if args.break_glass else ""
    console().print(f"{args.kind}/{args.tenant}: production = {aliases['production']}, "
                    f"previous = {aliases.get('previous', '-')}{flag}")  # fmt: skip
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    reg = _registry(args)
    aliases = reg.rollback(args.kind, args.tenant, actor=_actor(args), reason=args.reason)
    console().print(f"{args.kind}/{args.tenant}: rolled back; production = "
                    f"{aliases['production']}, previous = {aliases.get('previous', '-')}")  # fmt: skip
    return 0


def run_production(args: argparse.Namespace) -> int:
    from rich.table import Table

    reg = _registry(args)
    records = reg.production_versions(args.tenant)
    table = Table(title=f"production of {args.tenant} in {reg.uri}")
    for col in ("kind", "version", "since (UTC)", "by", "reason", "break-glass"):
        table.add_column(col, no_wrap=col == "version")
    for kind, r in records.items():
        table.add_row(kind, r.version, f"{r.at:%Y-%m-%d %H:%M:%S}", r.actor, r.reason,
                      "YES" if r.break_glass else "")  # fmt: skip
    console().print(table if records else f"nothing in production for {args.tenant}")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from rich.table import Table

    reg = _registry(args)
    records = reg.audit(kind=args.kind, tenant=args.tenant)
    if args.limit:
        records = records[-args.limit :]
    table = Table(title=f"audit log of {reg.uri}")
    for col in (
        "at (UTC)",
        "actor",
        "action",
        "tenant",
        "kind",
        "alias",
        "version",
        "previous",
        "reason",
        "flags",
    ):
        table.add_column(col, no_wrap=col in ("version", "previous"))
    for r in records:
        flags = [f"BREAK-GLASS ({r.role})" if r.break_glass else "", r.decision or "", r.item or ""]
        table.add_row(f"{r.at:%Y-%m-%d %H:%M:%S}", r.actor, r.action, r.tenant, r.kind,
                      r.alias or "", r.version or "", r.previous or "", r.reason,
                      " ".join(f for f in flags if f))  # fmt: skip
    console().print(table if records else f"no audit records in {reg.uri}")
    return 0
