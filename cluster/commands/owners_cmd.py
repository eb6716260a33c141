"""`recsys owners`: who answers for every kind of artifact, and which reviews are stale.

Lists each (kind, tenant) in the registry with the owner in its production (else newest)
version's manifest, each registry kind with nothing published with its default from
``configs/owners.yaml``, each experiment of the platform config, and the kinds kept as files
(alert rules, dashboards, runbooks). An owner whose ``last_reviewed`` is older than
``--stale-days`` (default: the owners file's ``stale_after_days``), or missing, is flagged.
Exit status 1 when any row has no owner or a stale review.
"""

from __future__ import annotations

import argparse
import json

from cluster.ui import CliError, console


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("owners", help="owners of every artifact kind; stale reviews")
    p.add_argument("--root", help="registry URI (default: $RECSYS_REGISTRY, then config)")
    p.add_argument("--tenant", help="only this tenant's rows (and those of every tenant)")
    p.add_argument("--owners", help="owners file (default: $RECSYS_OWNERS, then configs/owners.yaml)")
    p.add_argument("--platform-config", help="platform config whose experiments to list (default: $RECSYS_CONFIG)")
    p.add_argument("--stale-days", type=int, help="a review older than this many days is stale")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=run_owners)


def run_owners(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cluster.commands.registry_cmd import registry_root
    from core.config import load_platform_config
    from core.owners import load_owners, ownership_rows
    from core.registry import Registry

    if args.stale_days is not None and args.stale_days < 1:
        raise CliError("--stale-days must be at least 1")
    try:
        owners = load_owners(args.owners)
    except ValueError as exc:
        raise CliError(str(exc).splitlines()[0] + " (`recsys config validate` shows every problem)") from None
    if args.stale_days is not None:
        owners = owners.model_copy(update={"stale_after_days": args.stale_days})
    experiments = load_platform_config(args.platform_config).experiments
    registry = Registry(registry_root(args.root), owners=owners)
    rows = ownership_rows(registry, owners, experiments=experiments, tenant=args.tenant)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
    else:
        table = Table(title=f"owners (registry {registry.uri}; stale after {owners.stale_after_days} days)")
        for col in ("kind", "tenant", "covers", "team", "primary", "escalation", "runbook", "last reviewed"):
            table.add_column(col)
        for r in rows:
            o = r.owner
            reviewed = (str(o.last_reviewed) if o and o.last_reviewed else "never") + (" STALE" if r.stale else "")
            cells = (o.team, o.primary, o.escalation, o.runbook) if o else ("NO OWNER", "", "", "")
            table.add_row(r.kind, r.tenant, r.subject, *cells, reviewed,
                          style="red" if r.owner is None or r.stale else None)  # fmt: skip
        console().print(table)
    return 1 if any(r.owner is None or r.stale for r in rows) else 0


def main(argv: list[str]) -> int:
    """``recsys owners ARGV`` in process (``make demo`` prints it after promotion)."""
    from cluster.cli import main as cli

    return cli(["owners", *argv])
