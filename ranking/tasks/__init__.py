"""Ranker tasks: one file per task. Each module registers a :class:`core.components.RankerTask`
with :data:`core.components.RANKER_TASKS`; the ranker's heads, the training labels and the
default utility weights all come from that registry, so a new task is one new file here plus
its weight in a surface's ``ranker.task_weights`` (and a retrain: the model learns a head per
task it is trained with)."""

from __future__ import annotations

from core.components import import_all

import_all(__name__)
