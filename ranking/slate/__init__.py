"""Slate policies: turn scored candidates into the final ordered slate with reasons."""

from ranking.slate.exploration import ExplorationSlots, request_rng
from ranking.slate.frequency_cap import FrequencyCapRule
from ranking.slate.mmr import MmrSlatePolicy
from ranking.slate.pinned import PinnedPositions
from ranking.slate.policy import SlateOutcome, SlatePolicy

__all__ = [
    "ExplorationSlots",
    "FrequencyCapRule",
    "MmrSlatePolicy",
    "PinnedPositions",
    "SlateOutcome",
    "SlatePolicy",
    "request_rng",
]
