"""Ranker task ``hide``: the user hid the impressed item (a negative outcome: its weight is negative)."""

from core.components import RankerTask, register_task

TASK = register_task(
    RankerTask(
        name="hide",
        label_event="hide",
        default_weight=-4.0,
        order=2,
        description="the user hid the impressed item (a negative outcome: its weight is negative)",
    )
)
