"""What every Ray Train per-worker loop here does around its own training step: resume from
the run's latest checkpoint, sum counters over workers, and report an epoch with a checkpoint
written by rank 0 (``model.pt``, ``optimizer.pt``, ``config.json``, ``meta.json``)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch


def pin_threads(device: torch.device, cpus_per_worker: float) -> None:
    """On CPU, run torch with the CPUs this worker reserved, not every core of the node (two
    workers on two cores each spawning two threads oversubscribe the machine)."""
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cpus_per_worker)))


def learning_rate(config: dict, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): constant, or a cosine decay from
    ``lr`` to 0 over ``total_steps``. A function of the step alone, so a resumed run continues
    the schedule from its checkpoint's step count."""
    if config.get("lr_schedule", "constant") == "constant":
        return config["lr"]
    frac = min(step / max(config["total_steps"], 1), 1.0)
    return config["lr"] * 0.5 * (1.0 + math.cos(math.pi * frac))


def shuffled_batches(shard, *, batch_size: int, device, shuffle_rows: int, seed: int, drop_last: bool = False):
    """``shard.iter_torch_batches`` through a seeded local shuffle buffer of at least one batch
    (``shuffle_rows`` 0 = none). Examples are stored grouped by user: unshuffled batches are
    runs of a few users' rows."""
    return shard.iter_torch_batches(
        batch_size=batch_size,
        device=device,
        drop_last=drop_last,
        local_shuffle_buffer_size=max(shuffle_rows, batch_size) if shuffle_rows else None,
        local_shuffle_seed=seed if shuffle_rows else None,
    )


def resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Load the latest checkpoint of this run into ``model`` and ``optimizer``; its
    ``meta.json`` (``{"epoch": …, …}``), or None when the run starts fresh."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return None
    with checkpoint.as_directory() as d:
        model.load_state_dict(torch.load(Path(d) / "model.pt", weights_only=True))
        optimizer.load_state_dict(torch.load(Path(d) / "optimizer.pt", weights_only=True))
        return json.loads((Path(d) / "meta.json").read_text())


def all_reduce_sum(values: list[float]) -> list[float]:
    """``values`` summed over every worker (as they are with one worker)."""
    t = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def report_epoch(metrics: dict, model: Any, optimizer: torch.optim.Optimizer, meta: dict) -> None:
    """``ray.train.report`` the epoch's ``metrics`` with a checkpoint from rank 0 (``model``
    is the unwrapped module; ``meta`` goes to ``meta.json``)."""
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            torch.save(model.state_dict(), Path(d) / "model.pt")
            torch.save(optimizer.state_dict(), Path(d) / "optimizer.pt")
            (Path(d) / "config.json").write_text(json.dumps(model.cfg))
            (Path(d) / "meta.json").write_text(json.dumps(meta))
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)
