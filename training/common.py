"""What every training job shares: arguments, Ray connection, storage, lineage, summaries."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from core.catalogue import Catalogue
from core.config import ConfigError, load_model, load_platform_config, resolve_uri
from core.features import feature_schema_hash
from core.manifest import Lineage, Owner, code_version
from core.train_config import JobConfig

C = TypeVar("C", bound=JobConfig)
console = Console(width=160)


def parse_args(description: str, default_config: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config)
    parser.add_argument("--tenant", help="overrides the config's tenant")
    parser.add_argument("--smoke-test", action="store_true", help="same code at toy size")
    parser.add_argument("--resume", action="store_true", help="continue the latest run")
    parser.add_argument("--allow-bad-data", metavar="REASON", default=None,
                        help="train although the data-quality gate fails; the reason goes in the lineage")  # fmt: skip
    return parser.parse_args(argv)


def load_job_config(args: argparse.Namespace, model: type[C]) -> C:
    """The job's config from ``--config`` (``--tenant`` and ``--smoke-test`` applied). A file
    that cannot be used ends the job before any work: every problem on its own line naming
    the file and the key, no traceback, exit status 2 (as the ``recsys`` CLI and argparse)."""
    try:
        cfg = load_model(resolve_uri(args.config), model)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.tenant:
        cfg = cfg.model_copy(update={"tenant": args.tenant})
    return cfg.smoke() if args.smoke_test else cfg


def init_ray() -> None:
    """Connect to ``$RAY_ADDRESS`` (set by ``ray job submit``) or start a local cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    # Recording the whole log per op is noise in job output; the final table summarises.
    ctx.print_on_execution_start = False


def reproducible_data_order() -> None:
    """Make Ray Data deliver blocks in the dataset's own order (``preserve_order``), so a
    training job fed by streaming reads sees the same batches every run of one ``seed``.
    Without it, the order in which read tasks finish decides what enters the shuffle buffer:
    two runs of one two-tower seed differed by 0.007 test NDCG@10 (docs/evaluation.md)."""
    import ray

    ray.data.DataContext.get_current().execution_options.preserve_order = True


def train_data_config(num_workers: int):
    """How Ray Train hands a job's datasets to its workers. Several workers: each dataset is
    split among them (``streaming_split``, a SplitCoordinator actor per dataset). One worker
    (the configs' default): it iterates each whole dataset itself, the same rows in the same
    order, without the two coordinator actors (processes) a job would otherwise start."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split="all" if num_workers > 1 else [])


class JobStorage:
    """Resolved storage roots for one job (named apart from :class:`core.storage.Storage`,
    the filesystem wrapper)."""

    def __init__(self, cfg: JobConfig):
        platform = load_platform_config(cfg.platform_config)
        s = platform.resolved_storage()
        self.data, self.events, self.registry_uri = s.data, s.events, s.registry
        self.work = Path(resolve_uri(cfg.work_dir)) / cfg.tenant
        self.work.mkdir(parents=True, exist_ok=True)
        self.tenant = cfg.tenant
        self.data_quality: dict[str, Any] | None = None
        """Set by :func:`quality_gate`: the gate's verdict that :func:`lineage` records."""

    def registry(self):
        from core.registry import Registry

        return Registry(self.registry_uri)

    def eventlog(self):
        from core.eventlog import EventLog

        return EventLog(self.events)

    def catalogue(self) -> Catalogue:
        return Catalogue.load(self.data, self.tenant)

    def dataset_version(self) -> str:
        """The generator's ``dataset_version`` when the data root has one (``synth.json`` /
        ``movielens.json``), else a hash of the tenant's event file names and sizes."""
        for name in ("synth.json", "movielens.json", "dataset.json"):
            path = Path(self.data) / name
            if "://" not in self.data and path.is_file():
                version = json.loads(path.read_text()).get("dataset_version")
                if version:
                    return str(version)
        files = self.eventlog().files(self.tenant)
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.encode())
        return f"events-{self.tenant}-{len(files)}-{digest.hexdigest()[:12]}"

    def data_fingerprint(self) -> str:
        """12 hex digits that change whenever the tenant's data does: the generator/importer
        summary file's bytes, and the name and size of every event and catalogue file.

        ``dataset_version`` alone is not enough for caches: it is derived from the generator's
        parameters, so a generator fix that keeps them would silently reuse stale examples."""
        from core.storage import Storage as Store

        store = Store(self.data)
        digest = hashlib.sha256()
        for name in ("synth.json", "movielens.json", "dataset.json"):
            if store.is_file(store.path(name)):
                digest.update(name.encode() + b"\0" + store.read_bytes(store.path(name)))
        log = self.eventlog()
        infos = list(log.store.fs.get_file_info(log.files(self.tenant)))
        catalogue = store.ls(store.path("catalogue", f"tenant_id={self.tenant}"), recursive=True)
        infos += sorted((i for i in catalogue if i.path.endswith(".parquet")), key=lambda i: i.path)
        for info in infos:
            # Names relative to the tenant partition, so a copied dataset keeps its fingerprint.
            rel = info.path[info.path.find(f"tenant_id={self.tenant}") :]
            digest.update(f"{rel}:{info.size}\n".encode())
        return digest.hexdigest()[:12]


def quality_gate(args: argparse.Namespace, storage: JobStorage) -> None:
    """The data-quality gate a training job passes before it reads any data
    (:mod:`training.quality_checks`): raises ``SystemExit`` with the failed checks unless
    ``--allow-bad-data REASON``; :func:`lineage` then records the report (and the reason)."""
    from training.quality_checks import gate_for_training

    storage.data_quality = gate_for_training(storage, getattr(args, "allow_bad_data", None), show=summary_table)


def owner(cfg: JobConfig) -> Owner:
    return Owner(**cfg.owner.model_dump())


def lineage(storage: JobStorage, parents: dict[str, str] | None = None) -> Lineage:
    return Lineage(
        dataset_version=storage.dataset_version(),
        parents=parents or {},
        feature_schema_hash=feature_schema_hash(),
        code_version=code_version(),
        data_quality=getattr(storage, "data_quality", None),
    )


def summary_table(title: str, rows: dict[str, Any] | list[tuple[str, Any]]) -> None:
    """Print a two-column summary; floats with 4 decimals."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in rows.items() if isinstance(rows, dict) else rows:
        table.add_row(str(k), f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return path
