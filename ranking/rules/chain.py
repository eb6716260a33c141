"""Runs the tenant's configured eligibility rules in order and collects every removal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

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
from ranking.rules.base import JudgingRule


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
        batch = CandidateBatch.of(candidates)
        dead: set[int] = set()  # positions some rule has dropped already
        removed: list[Removal] = []
        for rule in self.rules:
            try:
                if isinstance(rule, JudgingRule):  # judged on the whole batch, kept as a mask
                    ids, name = batch.item_ids, rule.name
                    for i, why in rule.judge(query, batch, user_state):
                        if i not in dead:
                            dead.add(i)
                            removed.append(Removal(ids[i], name, why))
                    continue
                if dead:  # a rule of the row contract sees only what is left
                    batch, dead = batch.take(_alive(len(batch), dead)), set()
                result = rule.apply(query, batch, user_state)
            except PolicyUnavailable:
                raise
            except Exception as exc:  # a broken rule must not turn into "everything passes"
                raise PolicyUnavailable(f"{rule.name}: {type(exc).__name__}: {exc}") from exc
            batch = CandidateBatch.of(result.kept)
            removed.extend(result.removed)
        return FilterResult(kept=batch.take(_alive(len(batch), dead)) if dead else batch, removed=removed)


def _alive(n: int, dead: set[int]) -> np.ndarray:
    """``(n,)`` bool: the positions not in ``dead``."""
    keep = np.ones(n, dtype=bool)
    keep[list(dead)] = False
    return keep
