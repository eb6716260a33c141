"""`recsys rules export|set|publish|review|promote|rollback|show --tenant T`: a tenant's policy
rules as a reviewed ``rule_bundle`` registry artifact (:mod:`core.rule_bundle`;
docs/operations.md, "Rule bundles").

The same lifecycle as `recsys config` (the helpers of :mod:`cluster.commands.tenant_config_cmd`,
the checks of :mod:`training.config_review`), as its own command: a bundle has its own owner,
checklist and freeze exemption, and every command names the kind it moves.
"""

from __future__ import annotations

import argparse

from rich.markup import escape

from cluster.commands.tenant_config_cmd import (
    _context,
    _print_checks,
    _print_diff,
    _version,
    _who,
    edit_file,
    register_lifecycle,
    report_checks,
    tenant_document,
)
from cluster.ui import CliError, console

KIND = "rule_bundle"


def register(subparsers: argparse._SubParsersAction) -> None:
    import sys

    rules = subparsers.add_parser("rules", help="a tenant's policy rules as a reviewed rule_bundle artifact")
    register_lifecycle(
        rules.add_subparsers(dest="rules_command", required=True), sys.modules[__name__],
        export_help="write the rules the tenant is served with (its production bundle, else its config's) to a file",
        owner_help="the production bundle's",
        against="the served rules",
        set_help="edit a rule bundle file: KEY=VALUE (dotted; VALUE is YAML)",
        set_example="e.g. blocked_categories=[sports] default_max_maturity=general; null removes the key",
    )  # fmt: skip


def _served_rules(platform, registry, tenant: str) -> tuple[dict, str]:
    """The rule fields the tenant is served with now and where they come from."""
    from core.rule_bundle import INLINE, policy_rules, production_bundle, served_rules
    from core.tenant_config import effective_platform

    served, config_version = effective_platform(platform, registry, tenant)  # the config alone
    served, rules = served_rules(served, tenant, production_bundle(registry, tenant))
    where = f"production {KIND} {rules}" if rules != INLINE else f"the inline rules of tenant_config {config_version}"
    return policy_rules(served.tenant(tenant).policy), where


def run_export(args: argparse.Namespace) -> int:
    from core.rule_bundle import (
        document_from_policy,
        effective_platform,
        production_bundle,
        write_document,
    )

    platform, registry = _context(args)
    current = production_bundle(registry, args.tenant)
    given = {f: getattr(args, f"owner_{f}") for f in ("team", "primary", "escalation", "runbook")}
    owner = {**(current[1].owner.model_dump() if current else {}), **{k: v for k, v in given.items() if v}}
    missing = [f"--owner-{k}" for k in given if not owner.get(k)]
    if missing:
        raise CliError(f"{args.tenant} has no production {KIND} to take the owner from: give {' '.join(missing)}")
    served, _ = effective_platform(platform, registry, args.tenant)
    doc = document_from_policy(served.tenant(args.tenant).policy, args.tenant, owner)
    write_document(doc, args.file)
    _, where = _served_rules(platform, registry, args.tenant)
    console().print(f"{args.file}: {args.tenant}'s rules as served ({where})")
    return 0


def run_set(args: argparse.Namespace) -> int:
    from core.rule_bundle import RuleBundleDocument, write_document

    return edit_file(args, RuleBundleDocument, write_document)


def run_publish(args: argparse.Namespace) -> int:
    from core.rule_bundle import (
        apply_bundle,
        effective_platform,
        load_document_file,
        publish_document,
    )
    from training.config_review import REPLAY_REQUESTS, run_bundle_checks

    platform, registry = _context(args)
    doc = tenant_document(load_document_file, args)
    apply_bundle(effective_platform(platform, registry, args.tenant)[0], args.tenant, doc, args.file)
    old, where = _served_rules(platform, registry, args.tenant)
    manifest = publish_document(registry, doc, actor=_who(args))
    out = console()
    out.print(f"{KIND} {manifest.version} for {args.tenant}: published as candidate "
              f"(owner {doc.owner.team} / {doc.owner.primary})")  # fmt: skip
    _print_diff(out, old, doc.body(), where)
    checks = run_bundle_checks(platform, registry, args.tenant, manifest.version,
                               REPLAY_REQUESTS if args.replay is None else args.replay)  # fmt: skip
    return report_checks(out, registry, KIND, args.tenant, manifest.version, checks)


def run_review(args: argparse.Namespace) -> int:
    from training.config_review import record_review, run_bundle_checks

    platform, registry = _context(args)
    version = _version(registry, args.tenant, args.version, KIND)
    out = console()
    if args.recheck:
        out.print("automatic checks:")
        _print_checks(out, run_bundle_checks(platform, registry, args.tenant, version))
    blocking = record_review(registry, args.tenant, version, actor=_who(args), sign_offs=tuple(args.sign_off),
                             approve=args.approve, reject=args.reject, comment=args.comment, kind=KIND)  # fmt: skip
    approved = args.approve and registry.reviews(KIND, args.tenant, version)[-1].decision == "approve"
    verdict = "; ".join(blocking) or "may be promoted"
    out.print(f"{KIND} {version} of {args.tenant}: " + (f"approved; {verdict}" if approved else verdict),
              soft_wrap=True)  # fmt: skip
    return 1 if args.approve and not approved else 0


def run_promote(args: argparse.Namespace) -> int:
    """A bundle that only makes the served rules stricter is a safety rule: a change freeze
    lets it through (reviewed all the same), and the audit reason says so."""
    from core.rule_bundle import load_published, stricter_only

    platform, registry = _context(args)
    version = _version(registry, args.tenant, args.version, KIND)
    exempt = ""
    freeze = registry.policy.freeze_at(KIND, args.tenant)
    if freeze is not None and not args.break_glass:
        old, _ = _served_rules(platform, registry, args.tenant)
        if stricter_only(old, load_published(registry, args.tenant, version).body()):
            exempt = f"safety rule through freeze {freeze.name!r}"
    aliases = registry.promote(KIND, args.tenant, version, actor=_who(args), reason=args.reason,
                               break_glass=args.break_glass, freeze_exempt=exempt)  # fmt: skip
    flag = escape(" [BREAK-GLASS]" if args.break_glass else (f" [{exempt}]" if exempt else ""))
    console().print(f"{KIND}/{args.tenant}: production = {aliases['production']}, "
                    f"previous = {aliases.get('previous', '-')}{flag}; Ingress replicas pick it up on their next poll")  # fmt: skip
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    _, registry = _context(args)
    aliases = registry.rollback(KIND, args.tenant, actor=_who(args), reason=args.reason)
    console().print(f"{KIND}/{args.tenant}: rolled back; production = {aliases['production']}, "
                    f"previous = {aliases.get('previous', '-')}")  # fmt: skip
    return 0


def run_show(args: argparse.Namespace) -> int:
    from core.rule_bundle import load_published

    platform, registry = _context(args)
    version = _version(registry, args.tenant, args.version, KIND)
    m = registry.manifest(KIND, args.tenant, version)
    aliases = [a for a, v in registry.aliases(KIND, args.tenant).items() if v == version]
    out = console()
    out.print(f"{KIND} {version} of {args.tenant}  aliases: {', '.join(aliases) or '-'}")
    out.print(f"owner: {m.owner.team} / {m.owner.primary} ({m.owner.escalation}; {m.owner.runbook})")
    for r in registry.reviews(KIND, args.tenant, version):
        what = f"{r.decision} {r.item}" if r.item else r.decision
        out.print(f"  {r.at:%Y-%m-%d %H:%M:%S} {r.actor} {what}: {r.comment}")
    problems = registry.promotion_problems(KIND, args.tenant, version)
    out.print(f"promotion gate: {'; '.join(problems) or 'may be promoted'}")
    old, where = _served_rules(platform, registry, args.tenant)
    _print_diff(out, old, load_published(registry, args.tenant, version).body(), where)
    return 0
