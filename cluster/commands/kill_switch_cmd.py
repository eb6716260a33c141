"""`recsys kill-switch TENANT [source|ranker|experiment NAME off|on --reason …]`.

Turns one source, ranker or experiment of a tenant off (or back on), live: Ingress replicas
pick it up on their next config poll. No review and no freeze stops it; every flip is in the
audit log (``recsys registry audit --tenant T``). With only TENANT: the switches that are off.
"""

from __future__ import annotations

import argparse

from cluster.ui import CliError, console


def register(subparsers: argparse._SubParsersAction) -> None:
    from core.kill_switches import TARGETS

    p = subparsers.add_parser("kill-switch", help="turn a tenant's source, ranker or experiment off/on, live")
    p.add_argument("tenant")
    p.add_argument("target", nargs="?", choices=TARGETS)
    p.add_argument("name", nargs="?", help="source name, experiment id, or ranker: default, all or a pinned version")
    p.add_argument("state", nargs="?", choices=("off", "on"))
    p.add_argument("--reason", default="", help="why (required to flip; audited)")
    p.add_argument("--actor", default=None, help="who (default: $USER)")
    p.add_argument("--root", help="registry URI (default: $RECSYS_REGISTRY, then the platform config)")
    p.set_defaults(func=run_kill_switch)


def run_kill_switch(args: argparse.Namespace) -> int:
    from cluster.commands.registry_cmd import _actor, registry_root
    from core.config import load_platform_config
    from core.kill_switches import read_state, set_switch
    from core.registry import Registry
    from core.tenant_config import effective_platform

    registry = Registry(registry_root(args.root))
    out = console()
    if args.target is None:
        state = read_state(registry, args.tenant)
        out.print(f"kill switches of {args.tenant} (revision {state.revision}): "
                  + (", ".join(f"{s.label} off ({s.reason}; {s.actor}, {s.at:%Y-%m-%d %H:%M:%S})" for s in state.off)
                     or "none off"))  # fmt: skip
        return 0
    if args.name is None or args.state is None:
        raise CliError("kill-switch: give TARGET NAME off|on (e.g. `recsys kill-switch acme source fresh off --reason …`)")
    from cluster.commands.tenant_config_cmd import known_tenant

    base = load_platform_config()
    known_tenant(base, args.tenant)
    platform, _ = effective_platform(base, registry, args.tenant)
    state = set_switch(registry, platform, args.tenant, args.target, args.name, args.state,
                       reason=args.reason, actor=_actor(args))  # fmt: skip
    out.print(f"{args.tenant}: {args.target} {args.name} is {args.state} (revision {state.revision}); "
              "Ingress replicas pick it up on their next poll")  # fmt: skip
    return 0
