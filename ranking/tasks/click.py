"""Ranker task ``click``: the user clicked the impressed item."""

from core.components import RankerTask, register_task

TASK = register_task(
    RankerTask(
        name="click",
        label_event="click",
        default_weight=1.0,
        order=0,
        description="the user clicked the impressed item",
    )
)
