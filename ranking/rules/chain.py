"""Runs the tenant's configured eligibility rules in order and collects every removal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.components import RULES
from core.config import PolicyConfig
from core.contracts import (
    EligibilityRule,
    FilterResult,
    MergedCandidate,
    PolicyUnavailable,
    Query,
    Removal,
)


class RuleChain:
    """Invariants: a candidate is kept only if every rule kept it; each removed candidate has
    exactly one removal (from the first rule that dropped it); any rule failure, including an
    unexpected exception, raises :class:`PolicyUnavailable` (fail closed). The candidates
    travel as one :class:`CandidateBatch`: each rule narrows it (a mask), the catalogue rows
    are looked up once for every rule."""

    name = "rule_chain"

    def __init__(self, rules: Sequence[EligibilityRule]):
        self.rules = tuple(rules)

    @classmethod
    def from_policy(cls, policy: PolicyConfig | None, catalogue: Catalogue | None) -> RuleChain:
        if policy is None:
            raise PolicyUnavailable("policy bundle not loaded: the rule list itself is unknown")
        return cls([RULES.get(r.kind).cls.from_policy(policy, catalogue, r) for r in policy.rules])

    def apply(
        self, query: Query, candidates: Sequence[MergedCandidate], user_state: Any
    ) -> FilterResult:
        kept: Sequence[MergedCandidate] = CandidateBatch.of(candidates)
        removed: list[Removal] = []
        for rule in self.rules:
            try:
                result = rule.apply(query, kept, user_state)
            except PolicyUnavailable:
                raise
            except Exception as exc:  # a broken rule must not turn into "everything passes"
                raise PolicyUnavailable(f"{rule.name}: {type(exc).__name__}: {exc}") from exc
            kept = result.kept
            removed.extend(result.removed)
        return FilterResult(kept=CandidateBatch.of(kept), removed=removed)
