"""Eligibility rules: one file per rule, registered here by its name in ``policy.rules``."""

from __future__ import annotations

from ranking.rules.availability import AvailabilityRule
from ranking.rules.blocked import BlockedRule
from ranking.rules.catalogue import CatalogueRule
from ranking.rules.chain import RuleChain
from ranking.rules.exclude import ExcludeRule
from ranking.rules.hidden import HiddenByUserRule
from ranking.rules.maturity import MaturityRule

RULE_KINDS: dict[str, type] = {
    "catalogue": CatalogueRule,
    "availability": AvailabilityRule,
    "blocked": BlockedRule,
    "hidden": HiddenByUserRule,
    "maturity": MaturityRule,
    "exclude": ExcludeRule,
}
"""``policy.rules`` name → rule class (each has ``from_policy(policy, catalogue)``)."""

__all__ = [
    "RULE_KINDS",
    "AvailabilityRule",
    "BlockedRule",
    "CatalogueRule",
    "ExcludeRule",
    "HiddenByUserRule",
    "MaturityRule",
    "RuleChain",
]
