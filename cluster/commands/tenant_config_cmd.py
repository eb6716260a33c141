"""`recsys config export|set|publish|review|promote|rollback|show --tenant T`: a tenant's
serving configuration as a reviewed ``tenant_config`` registry artifact (:mod:`core.tenant_config`;
docs/operations.md, "Tenant configuration"). Registered under `recsys config` by
:mod:`cluster.commands.config_cmd`.
"""

from __future__ import annotations

import argparse

from rich.markup import escape

from cluster.ui import CliError, console


def register_tenant_config(sub: argparse._SubParsersAction) -> None:
    import sys

    register_lifecycle(
        sub, sys.modules[__name__],
        export_help="write the tenant's config as served (production, else platform.yaml) to a file",
        owner_help="the production version's",
        against="production",
        set_help="edit a tenant config file: KEY=VALUE (dotted; list entries by name)",
        set_example="e.g. policy.blocked_categories=[news] surfaces.home.sources.fresh.quota=20; "
                    "VALUE is YAML, null removes the key or entry",
    )  # fmt: skip


def register_lifecycle(sub: argparse._SubParsersAction, handlers, *, export_help: str, owner_help: str,
                       against: str, set_help: str, set_example: str) -> None:  # fmt: skip
    """The reviewed-artifact lifecycle (export, publish, review, promote, rollback, set, show)
    under ``sub``, each command calling ``handlers.run_<command>``: `recsys config` (tenant
    configs, this module) and `recsys rules` (rule bundles) share it."""
    from core.promotion import CHECKLIST_ITEMS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tenant", required=True)
    common.add_argument("--root", help="registry URI (default: $RECSYS_REGISTRY, then the platform config)")
    common.add_argument("--actor", default=None, help="who (default: $USER)")

    export = sub.add_parser("export", parents=[common], help=export_help)
    export.add_argument("file")
    for field in ("team", "primary", "escalation", "runbook"):
        export.add_argument(f"--owner-{field}", help=f"owner {field} (default: {owner_help})")
    export.set_defaults(func=handlers.run_export)

    publish = sub.add_parser("publish", parents=[common],
                             help=f"validate FILE, store it as a candidate, print the diff against {against}, run the checks")  # fmt: skip
    publish.add_argument("file")
    publish.add_argument("--replay", type=int, default=None, help="logged requests to replay (default 200)")
    publish.set_defaults(func=handlers.run_publish)

    review = sub.add_parser("review", parents=[common], help="sign off, approve or reject a version")
    review.add_argument("version", nargs="?", default="candidate", help="version or alias (default: candidate)")
    review.add_argument("--sign-off", action="append", default=[], choices=CHECKLIST_ITEMS, metavar="ITEM",
                        help=f"record a checklist item as done (repeatable): {', '.join(CHECKLIST_ITEMS)}")  # fmt: skip
    decision = review.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve if nothing else is missing")
    decision.add_argument("--reject", action="store_true")
    review.add_argument("--recheck", action="store_true", help="run the automatic checks again first")
    review.add_argument("--comment", default="")
    review.set_defaults(func=handlers.run_review)

    promote = sub.add_parser("promote", parents=[common], help="make a reviewed version production")
    promote.add_argument("version", nargs="?", default="candidate")
    promote.add_argument("--reason", default="")
    promote.add_argument("--break-glass", action="store_true",
                         help="emergency roles only, --reason required; flagged in the audit log")  # fmt: skip
    promote.set_defaults(func=handlers.run_promote)

    rollback = sub.add_parser("rollback", parents=[common], help="swap the previous version back into production")
    rollback.add_argument("--reason", default="")
    rollback.set_defaults(func=handlers.run_rollback)

    edit = sub.add_parser("set", help=set_help)
    edit.add_argument("file")
    edit.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help=set_example)
    edit.set_defaults(func=handlers.run_set)

    show = sub.add_parser("show", parents=[common], help=f"a version: reviews, gate, diff against {against}")
    show.add_argument("version", nargs="?", default="production")
    show.set_defaults(func=handlers.run_show)


def known_tenant(platform, tenant: str) -> None:
    if tenant not in {t.id for t in platform.tenants}:
        raise CliError(f"unknown tenant {tenant!r}; the platform config has "
                       f"{', '.join(t.id for t in platform.tenants)} (onboard a tenant there first)")  # fmt: skip


def _context(args: argparse.Namespace):
    from cluster.commands.registry_cmd import registry_root
    from core.config import load_platform_config
    from core.registry import Registry

    platform = load_platform_config()
    known_tenant(platform, args.tenant)
    return platform, Registry(registry_root(args.root))


def _who(args: argparse.Namespace) -> str:
    from cluster.commands.registry_cmd import _actor

    return _actor(args)


def _version(registry, tenant: str, given: str, kind: str = "tenant_config") -> str:
    """The version ``given`` names (a version, or an alias of ``kind``)."""
    if given.startswith("v") and "Z-" in given:
        registry.manifest(kind, tenant, given)
        return given
    found = registry.resolve(kind, tenant, given)
    if found is None:
        command = "recsys rules publish" if kind == "rule_bundle" else "recsys config publish"
        raise CliError(f"tenant {tenant!r} has no {kind} alias {given!r} (publish one with `{command}`)")
    return found


def tenant_document(load, args: argparse.Namespace):
    """``load(args.file)``, refused when the file is for another tenant than ``--tenant``
    (a tenant config and a rule bundle alike)."""
    doc = load(args.file)
    if doc.tenant != args.tenant:
        raise CliError(f"{args.file}: tenant: the file is for {doc.tenant!r}, not --tenant {args.tenant!r}")
    return doc


def _print_checks(out, checks: dict) -> None:
    for name, c in checks.items():
        mark = "[green]PASS[/]" if c["ok"] else "[red]FAIL[/]"
        out.print(f"  {mark} {name} \\[{c['item']}]: {escape(str(c['detail']))}")


def _print_diff(out, old: dict | None, new: dict, against: str) -> None:
    from core.tenant_config import diff

    lines = diff(old, new)
    out.print(f"diff against {against}: {len(lines)} change(s)")
    for line in lines:
        out.print(f"  {line}", markup=False)


def run_export(args: argparse.Namespace) -> int:
    from core.tenant_config import (
        KIND,
        OwnerBlock,
        document_from_platform,
        production_document,
        write_document,
    )

    platform, registry = _context(args)
    current = production_document(registry, args.tenant)
    given = {f: getattr(args, f"owner_{f}") for f in ("team", "primary", "escalation", "runbook")}
    if current is not None:
        doc = current[1]
        owner = {**doc.owner.model_dump(), **{k: v for k, v in given.items() if v}}
        doc = doc.model_copy(update={"owner": OwnerBlock.model_validate(owner)})
    else:
        missing = [f"--owner-{k}" for k, v in given.items() if not v]
        if missing:
            raise CliError(f"{args.tenant} has no production {KIND} to take the owner from: give {' '.join(missing)}")
        doc = document_from_platform(platform, args.tenant, given)
    write_document(doc, args.file)
    console().print(f"{args.file}: {args.tenant}'s config as served "
                    f"({current[0] if current else 'platform.yaml'})")  # fmt: skip
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from core.tenant_config import (
        BOOTSTRAP,
        apply_document,
        load_document_file,
        production_document,
        publish_document,
        tenant_body,
    )
    from training.config_review import REPLAY_REQUESTS, run_checks

    platform, registry = _context(args)
    doc = tenant_document(load_document_file, args)
    apply_document(platform, doc, args.file)  # merged validation, errors name the file
    current = production_document(registry, args.tenant)
    manifest = publish_document(registry, doc, actor=_who(args))
    out = console()
    out.print(f"tenant_config {manifest.version} for {args.tenant}: published as candidate "
              f"(owner {doc.owner.team} / {doc.owner.primary})")  # fmt: skip
    old = current[1].body() if current else tenant_body(platform, args.tenant)
    _print_diff(out, old, doc.body(), f"production {current[0]}" if current else BOOTSTRAP)
    checks = run_checks(platform, registry, args.tenant, manifest.version,
                        REPLAY_REQUESTS if args.replay is None else args.replay)  # fmt: skip
    return report_checks(out, registry, "tenant_config", args.tenant, manifest.version, checks)


def report_checks(out, registry, kind: str, tenant: str, version: str, checks: dict) -> int:
    """Print a published version's automatic checks and what the promotion gate says of it;
    the exit code: 0 when every check passed."""
    out.print("automatic checks:")
    _print_checks(out, checks)
    problems = registry.promotion_problems(kind, tenant, version)
    out.print(f"promotion gate: {'; '.join(problems) or 'may be promoted'}")
    return 0 if all(c["ok"] for c in checks.values()) else 1


def run_review(args: argparse.Namespace) -> int:
    from training.config_review import record_review, run_checks

    platform, registry = _context(args)
    version = _version(registry, args.tenant, args.version)
    out = console()
    if args.recheck:
        out.print("automatic checks:")
        _print_checks(out, run_checks(platform, registry, args.tenant, version))
    blocking = record_review(registry, args.tenant, version, actor=_who(args), sign_offs=tuple(args.sign_off),
                             approve=args.approve, reject=args.reject, comment=args.comment)  # fmt: skip
    approved = args.approve and registry.reviews("tenant_config", args.tenant, version)[-1].decision == "approve"
    verdict = "; ".join(blocking) or "may be promoted"
    out.print(f"tenant_config {version} of {args.tenant}: " + (f"approved; {verdict}" if approved else verdict),
              soft_wrap=True)  # fmt: skip
    return 1 if args.approve and not approved else 0


def run_promote(args: argparse.Namespace) -> int:
    from core.tenant_config import load_published, production_document, safety_only, tenant_body

    platform, registry = _context(args)
    version = _version(registry, args.tenant, args.version)
    exempt = ""
    freeze = registry.policy.freeze_at("tenant_config", args.tenant)
    if freeze is not None and not args.break_glass:
        current = production_document(registry, args.tenant)
        old = current[1].body() if current else tenant_body(platform, args.tenant)
        if safety_only(old, load_published(registry, args.tenant, version).body()):
            exempt = f"safety rule through freeze {freeze.name!r}"
    aliases = registry.promote("tenant_config", args.tenant, version, actor=_who(args), reason=args.reason,
                               break_glass=args.break_glass, freeze_exempt=exempt)  # fmt: skip
    flag = escape(" [BREAK-GLASS]" if args.break_glass else (f" [{exempt}]" if exempt else ""))
    console().print(f"tenant_config/{args.tenant}: production = {aliases['production']}, "
                    f"previous = {aliases.get('previous', '-')}{flag}; Ingress replicas pick it up on their next poll")  # fmt: skip
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    platform, registry = _context(args)
    aliases = registry.rollback("tenant_config", args.tenant, actor=_who(args), reason=args.reason)
    console().print(f"tenant_config/{args.tenant}: rolled back; production = {aliases['production']}, "
                    f"previous = {aliases.get('previous', '-')}")  # fmt: skip
    return 0


def run_show(args: argparse.Namespace) -> int:
    from core.tenant_config import KIND, load_published, production_document, tenant_body

    platform, registry = _context(args)
    version = _version(registry, args.tenant, args.version)
    m = registry.manifest(KIND, args.tenant, version)
    aliases = [a for a, v in registry.aliases(KIND, args.tenant).items() if v == version]
    out = console()
    out.print(f"tenant_config {version} of {args.tenant}  aliases: {', '.join(aliases) or '-'}")
    out.print(f"owner: {m.owner.team} / {m.owner.primary} ({m.owner.escalation}; {m.owner.runbook})")
    for r in registry.reviews(KIND, args.tenant, version):
        what = f"{r.decision} {r.item}" if r.item else r.decision
        out.print(f"  {r.at:%Y-%m-%d %H:%M:%S} {r.actor} {what}: {r.comment}")
    problems = registry.promotion_problems(KIND, args.tenant, version)
    out.print(f"promotion gate: {'; '.join(problems) or 'may be promoted'}")
    current = production_document(registry, args.tenant)
    if current is None or current[0] != version:
        old = current[1].body() if current else tenant_body(platform, args.tenant)
        _print_diff(out, old, load_published(registry, args.tenant, version).body(),
                    f"production {current[0]}" if current else "platform.yaml")  # fmt: skip
    return 0


def _step(node, key: str, path: str):
    """The child ``key`` of ``node``: a mapping key, or the list entry whose name/id/kind is key."""
    if isinstance(node, dict):
        return node
    if isinstance(node, list):
        return next((e for e in node if isinstance(e, dict) and key in (e.get("name"), e.get("id"), e.get("kind"))), None)
    raise CliError(f"{path}: not a mapping or list")


def run_set(args: argparse.Namespace) -> int:
    from core.tenant_config import TenantConfigDocument, write_document

    return edit_file(args, TenantConfigDocument, write_document)


def edit_file(args: argparse.Namespace, model, write) -> int:
    """``recsys config set`` / ``recsys rules set``: apply ``args.assignments`` to the YAML file
    ``args.file``, validate it as ``model`` and ``write`` it back."""
    import yaml

    from core.config import read_yaml

    doc = read_yaml(args.file)
    for assignment in args.assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise CliError(f"{assignment!r}: expected KEY=VALUE")
        value = yaml.safe_load(raw)
        *parents, last = key.split(".")
        node = doc
        for i, part in enumerate(parents):
            where = ".".join(parents[: i + 1])
            holder = _step(node, part, where)
            child = holder.get(part) if isinstance(node, dict) else holder
            if child is None:
                if value is None:
                    break
                if not isinstance(node, dict):
                    raise CliError(f"{args.file}: {where}: no entry named {part!r}")
                child = node[part] = {}
            node = child
        else:
            if isinstance(node, list):
                entry = _step(node, last, key)
                if entry is None:
                    raise CliError(f"{args.file}: {key}: no entry named {last!r}")
                if value is None:
                    node.remove(entry)
                else:
                    node[node.index(entry)] = value
            elif value is None:
                node.pop(last, None)
            else:
                node[last] = value
    from pydantic import ValidationError

    from core.config import ConfigError, ConfigIssue

    try:
        checked = model.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError([ConfigIssue(file=args.file, key=".".join(map(str, e["loc"])), message=e["msg"])
                           for e in exc.errors()]) from None  # fmt: skip
    write(checked, args.file)
    console().print(f"{args.file}: {len(args.assignments)} change(s), valid")
    return 0
