"""Typed arguments of the Serve application and of each deployment's ``user_config``.

:class:`AppArgs` is the ``args:`` block of an application in ``configs/serve.yaml`` (Serve
validates it with this model before calling :func:`deployments.app.build_app`). The
``*UserConfig`` models are the ``user_config:`` blocks; Serve hands them to ``reconfigure`` on
every replica, live, without a restart, so batching and polling can be tuned in production.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.faults import FaultInjection


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageOverrides(_Strict):
    """Replace the storage URIs of ``platform.yaml`` (e.g. a test's temp dirs, an object store)."""

    data: str | None = None
    events: str | None = None
    registry: str | None = None
    decisions: str | None = None


class Placement(_Strict):
    """Where online user state and the non-model candidate sources (item-to-item, trending,
    editorial, fresh) run.

    ``ingress`` (default): inside every Ingress replica, as library objects. They are
    in-memory lookups of well under a millisecond, while a Serve hop costs several
    milliseconds of CPU on the two processes it joins (figures in docs/performance.md), so
    colocating them is what lets one small node serve its target rate. Accepted events are
    broadcast to every Ingress replica. A colocated source's timeout bounds how long the
    pipeline waits on it (an awaiting source, e.g. a remote feature store); it cannot
    interrupt CPU work, so only bounded in-memory sources belong here.
    ``deployment``: in the ``UserState`` / ``CandidateSources`` deployments, scaled on their
    own; for state or co-occurrence tables too big to hold in every ingress replica, or
    sources whose CPU cost must not share the ingress.
    """

    user_state: Literal["ingress", "deployment"] = "ingress"
    sources: Literal["ingress", "deployment"] = "ingress"
    """Where source kinds not named in ``source_kinds`` run."""
    source_kinds: dict[str, Literal["ingress", "deployment"]] = Field(
        default_factory=lambda: {"two_tower": "deployment"}
    )
    """Per source kind. ``two_tower`` in ``deployment`` runs in the ``TwoTowerRetriever``
    deployment (its model and index, hot-swapped there); in ``ingress`` every Ingress replica
    loads and hot-swaps its own pair (one Serve hop fewer per request; memory for the index in
    every ingress replica: for CPU-only nodes and indexes that fit). Any other kind placed in
    ``deployment`` runs in ``CandidateSources``."""

    ranker: Literal["ingress", "deployment"] = "deployment"
    """``deployment``: the ``Ranker`` deployment (``@serve.batch``; its own replicas, CPU or GPU:
    where a GPU is, batching pays). ``ingress``: every Ingress replica loads and hot-swaps the
    ranker and scores in process (no hop, no batching across requests: on CPU-only nodes,
    where the hop costs more than batching saves; docs/architecture.md)."""

    decision_log: Literal["ingress", "deployment"] = "deployment"
    """``deployment``: every Ingress replica ships its decision records in batches to the
    ``DecisionLog`` deployment, which writes them and answers lookups (one place for recent
    records of every replica; one per-tenant budget of unknown-id lookups). ``ingress``: every
    Ingress replica writes its own records to the same log and reads other replicas' records
    from its files (no hop, no extra process: ≈ 1 ms less CPU per request on a 2-core node;
    another replica's record is found once written, within ~0.5 s; the unknown-id budget is
    per replica). Same files either way (docs/architecture.md)."""

    @model_validator(mode="after")
    def _two_tower_named(self) -> Placement:
        # `sources` is the default of the non-model kinds only: the two-tower's home is chosen
        # on its own (it is a model with an index, not an in-memory lookup).
        self.source_kinds.setdefault("two_tower", "deployment")
        return self

    @property
    def two_tower_in_ingress(self) -> bool:
        return self.source_kinds["two_tower"] == "ingress"

    def deployment_for(self, kind: str) -> str | None:
        """The deployment a source kind runs in, or None for the ingress."""
        if self.source_kinds.get(kind, self.sources) == "ingress":
            return None
        return "TwoTowerRetriever" if kind == "two_tower" else "CandidateSources"


class AdmissionArgs(_Strict):
    """Early overload shedding in each Ingress replica (``deployments/quotas.py``); per-tenant
    quotas are in ``platform.yaml`` (``tenants[].quotas``)."""

    max_in_flight: int | None = Field(None, ge=1)
    """Admitted ``recommend``/``events`` requests one replica answers at once; more are
    answered 503 ``overloaded`` with ``Retry-After`` at once (None: no cap). Keep it under the
    Ingress's ``max_ongoing_requests`` so the refusal happens here, with a JSON body."""
    retry_after_s: float = Field(1.0, gt=0, le=3600)
    """``Retry-After`` of a 503 ``overloaded`` and of a tenant's in-flight 429."""


class AppArgs(_Strict):
    platform_config: str = "configs/platform.yaml"
    home: str | None = None
    """Project root that relative paths resolve against; default ``$RECSYS_HOME`` or the cwd
    of the process that builds the app."""
    storage: StorageOverrides = Field(default_factory=StorageOverrides)
    alias: str = "production"
    """Registry alias every replica serves and watches (``production``; ``candidate`` for a
    shadow app)."""
    max_body_bytes: int = Field(1_000_000, ge=1024)
    decision_queue_size: int = Field(10_000, ge=1)
    decision_lru_size: int = Field(20_000, ge=1)
    decision_lru_mb: float = Field(32.0, gt=0, le=65_536)
    """The recent decision records each Ingress replica and the DecisionLog deployment keep in
    memory for ``GET /v1/decisions/{id}`` (older ones are read from the log): at most
    ``decision_lru_size`` records and this many MB of their JSON, whichever is reached first
    (a record is a few KB to ~60 KB with the candidates a surface keeps)."""
    events_push_timeout_s: float = Field(1.0, gt=0)
    """How long ``POST /v1/events`` waits for online state to take the events in."""
    placement: Placement = Field(default_factory=Placement)
    decision_ship_interval_s: float = Field(0.1, ge=0, le=10)
    """How long the ingress gathers decision records before shipping them to the
    ``DecisionLog`` deployment in one call (bounded by ``decision_queue_size``; each call at
    most :data:`deployments.decision_log.SHIPMENT_BYTES` of records). Fewer calls cost the
    DecisionLog less CPU; another replica finds a record only once it has been shipped."""
    faults: FaultInjection = Field(default_factory=FaultInjection)
    admission: AdmissionArgs = Field(default_factory=AdmissionArgs)
    api_docs: bool = True
    """Serve ``/docs``, ``/redoc`` and ``/openapi.json`` (the API's schema, without a key);
    ``false`` answers them 404 (a deployment that does not publish its API)."""
    model_poll_interval_s: float = Field(2.0, gt=0, le=3600)
    """How often an Ingress replica that holds a model (``placement``: the two-tower, the
    ranker) checks its alias (the model deployment's ``user_config.poll_interval_s`` where
    the model has its own deployment)."""

    def root(self) -> Path:
        return Path(self.home or os.environ.get("RECSYS_HOME") or os.getcwd()).resolve()

    def resolve(self, path: str) -> str:
        """``path`` made absolute against :meth:`root` (URIs are kept as they are)."""
        if "://" in path or os.path.isabs(path):
            return path
        return str(self.root() / path)


class WatchUserConfig(_Strict):
    poll_interval_s: float = Field(2.0, gt=0, le=3600)
    """How often a replica checks the registry aliases for a newly promoted version."""


class RankerUserConfig(WatchUserConfig):
    max_batch_size: int = Field(16, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.002, ge=0, le=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
