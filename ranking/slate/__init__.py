"""Slate steps: one file per step. Each module registers its class and config model with
:data:`core.components.SLATE_STEPS`; importing this package imports every module in it, so a
new step is one new file here plus one entry in a surface's ``slate.steps``.
:class:`SlatePolicy` runs a surface's steps in order."""

from core.components import import_all
from ranking.slate.exploration import ExplorationStep, request_rng
from ranking.slate.frequency_cap import FrequencyCapStep
from ranking.slate.mmr import MmrDiversityStep
from ranking.slate.pinned import PINNED_SOURCE, PinnedStep
from ranking.slate.policy import SlateOutcome, SlatePolicy

import_all(__name__)

__all__ = [
    "PINNED_SOURCE",
    "ExplorationStep",
    "FrequencyCapStep",
    "MmrDiversityStep",
    "PinnedStep",
    "SlateOutcome",
    "SlatePolicy",
    "request_rng",
]
