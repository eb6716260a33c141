"""Ranker task ``like``: the user liked the impressed item."""

from core.components import RankerTask, register_task

TASK = register_task(
    RankerTask(
        name="like",
        label_event="like",
        default_weight=2.0,
        order=1,
        description="the user liked the impressed item",
    )
)
