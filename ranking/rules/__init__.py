"""Eligibility rules: one file per rule. Each module registers its class with
:data:`core.components.RULES`; importing this package imports every module in it, so a new
rule is one new file here plus its name in a tenant's ``policy.rules``."""

from __future__ import annotations

from core.components import RULES, import_all
from ranking.rules.availability import AvailabilityRule
from ranking.rules.blocked import BlockedRule
from ranking.rules.catalogue import CatalogueRule
from ranking.rules.chain import RuleChain
from ranking.rules.exclude import ExcludeRule
from ranking.rules.hidden import HiddenByUserRule
from ranking.rules.maturity import MaturityRule

import_all(__name__)

__all__ = [
    "RULES",
    "AvailabilityRule",
    "BlockedRule",
    "CatalogueRule",
    "ExcludeRule",
    "HiddenByUserRule",
    "MaturityRule",
    "RuleChain",
]
