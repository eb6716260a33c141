"""Materialised example sets: built once per (dataset version, data fingerprint, feature
schema, builder version[, model]) with Ray Data and written as Parquet, so later jobs (evaluation, the ranker)
reuse them. The fingerprint (:meth:`JobStorage.data_fingerprint`) changes with the data's
content, so examples of regenerated data are never reused under an unchanged version."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.features import feature_schema_hash
from training.common import JobStorage

DONE = "_COMPLETE"


def examples_dir(storage: JobStorage, kind: str, extra: str = "") -> Path:
    from training.datasets import EXAMPLES_VERSION

    key = f"{storage.dataset_version()}-{storage.data_fingerprint()}-{feature_schema_hash()}-e{EXAMPLES_VERSION}" + (f"-{extra}" if extra else "")
    return storage.work / "examples" / kind / key


def two_tower_examples(storage: JobStorage, num_partitions: int) -> Path:
    """Build (or reuse) the tenant's two-tower examples; returns the Parquet directory."""
    from training.datasets import two_tower_dataset

    out = examples_dir(storage, "two_tower")
    if (out / DONE).exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    events = storage.eventlog().ray_dataset(storage.tenant)
    two_tower_dataset(events, storage.catalogue(), num_partitions).write_parquet(str(out))
    (out / DONE).touch()
    return out
