"""Strict schemas of the training job configs (``configs/train/*.yaml``).

Every model forbids unknown keys (``core.config.StrictModel``); each job validates its file
once, at start, with :func:`core.config.load_model`. ``--smoke-test`` swaps in
:meth:`JobConfig.smoke` — the same code at toy size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from core.components import ranker_tasks
from core.config import StrictModel
from core.features import HISTORY_LEN


class OwnerConfig(StrictModel):
    team: str = "recsys-ml"
    primary: str = "ml-oncall@example.com"
    escalation: str = "#recsys-ml-oncall"
    runbook: str = "docs/runbooks/training.md"


class JobConfig(StrictModel):
    """Settings every job shares."""

    tenant: str = "acme"
    platform_config: str | None = None
    """Path of the platform config (storage roots); default ``$RECSYS_CONFIG`` or
    ``configs/platform.yaml``."""
    work_dir: str = "var/training"
    """Examples, Ray Train runs and reports go under ``<work_dir>/<tenant>/``."""
    owner: OwnerConfig = Field(default_factory=OwnerConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_partitions: int = Field(8, ge=1, description="shuffle partitions of the example builders")

    def smoke(self):
        return self.model_copy(update=self._smoke_update())

    def _smoke_update(self) -> dict:
        return {"num_partitions": 2}


class TwoTowerTrainConfig(JobConfig):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each training worker needs besides its CPUs (e.g. "
        "{training_node: 1} to keep workers on the nodes that offer it)",
    )
    dim: int = Field(64, ge=4)
    embed_dim: int = Field(64, ge=4)
    hidden: int = Field(128, ge=4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    user_id: bool = Field(
        True, description="a hashed user-id embedding in the query tower (false: history and context alone)"
    )
    user_dropout: float = Field(0.0, ge=0.0, le=1.0, description="share of training rows whose user-id embedding is zeroed")
    temperature: float = Field(0.05, gt=0.0)
    history_len: int = Field(
        20, ge=1, le=HISTORY_LEN, description="most recent history items the query tower attends over (and mean-pools)"
    )
    long_history_len: int = Field(
        0,
        ge=0,
        le=HISTORY_LEN,
        description="history items (most recent first) of a second, long-term mean pool of the query tower; 0 = none",
    )
    log_q_correction: bool = True
    log_q_strength: float = Field(
        1.0,
        ge=0.0,
        description="multiplier of the log-Q correction: 1 = the consistent estimate of the full softmax; "
        "above 1 the model also learns a popularity prior (see retrieval.losses.item_log_q)",
    )
    history_negatives: bool = Field(
        False,
        description="count an in-batch item that is in the query's own history as a negative for it "
        "(false: masked, as serving and evaluation never rank a user's engaged items)",
    )
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(512, ge=2)
    lr: float = Field(2e-3, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: lr decays to 0 over all epochs' steps (per step, so a resumed run continues it)"
    )
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, description="initialisation and shuffle seed; the same seed repeats a run exactly (one worker)")
    shuffle_buffer_rows: int = Field(
        8192, ge=1, description="minimum rows in each worker's local shuffle buffer (examples are stored grouped by user)"
    )
    max_failures: int = Field(2, ge=0)
    keep_checkpoints: int = Field(
        2, ge=1, description="checkpoints kept by the in-loop monitor; the protocol's validation NDCG@10 picks among them"
    )
    selection_users: int = Field(5000, ge=1, description="validation users (a seeded sample) that pick the checkpoint")

    def _smoke_update(self) -> dict:
        return {**super()._smoke_update(), "epochs": 1, "batch_size": 64, "dim": 16, "embed_dim": 16, "hidden": 32}


class RankerTrainConfig(JobConfig):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    tasks: list[str] = Field(default_factory=ranker_tasks, min_length=1)
    """Heads to train; every registered ranker task (``ranking/tasks/``) by default."""
    seed: int = Field(0, description="initialisation and shuffle seed; the same seed repeats a run (one worker)")
    embed_dim: int = Field(16, ge=2)
    n_experts: int = Field(4, ge=1)
    expert_hidden: int = Field(64, ge=4)
    tower_hidden: int = Field(32, ge=4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(1024, ge=2)
    lr: float = Field(2e-3, gt=0)
    holdout_fraction: float = Field(0.1, gt=0, lt=0.5)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    two_tower_alias: str | None = "candidate"
    """Two-tower version whose dot product fills ``retrieval_score``; None = always 0."""
    negatives: int = Field(8, ge=0)
    """Retrieved candidates the user did not engage with, per engagement, as ``click`` 0
    examples beside the engaged item (``training.datasets.CandidateSampler``; needs a
    two-tower). 0 = logged impressions only (a log without impressions then trains nothing)."""
    rows: Literal["retrieval_heldout", "all"] = "retrieval_heldout"
    """Which rows train the ranker (``training.ranker.select_rows``): ``retrieval_heldout``,
    the rows of each user's two-tower validation interaction, whose retrieval score the
    two-tower did not memorise; ``all`` (without a two-tower, always all)."""
    kinds: Literal["auto", "impressions", "engagements", "both"] = "auto"
    """``auto``: logged impressions where there are any, else engagement rows."""
    dense_features: list[str] | None = None
    """Dense features the ranker reads (None = all); the others are pinned to their training
    mean. Chosen on validation (docs/evaluation.md): a feature the logging policy selected
    impressions on (popularity) is confounded among impressions."""
    cat_features: list[str] | None = None
    """Categorical features the ranker reads (None = all); the others read as unknown (0)."""
    retrieval_blend: float = 0.0
    """Added to the click logit: this many standard deviations of the retrieval score."""
    retrieval_blend_grid: list[float] | None = None
    """Blends to try after training a ranker on engagement rows; the one whose order ranks the
    validation rows' engaged items highest (mean NDCG@10 per engagement moment) is kept. None,
    or a ranker trained on logged impressions: ``retrieval_blend`` as it is."""
    negatives_top_k: int = Field(200, ge=1)
    """The negatives are drawn from the two-tower's top this many for the user at that time."""
    shuffle_buffer_rows: int = Field(
        8192, ge=0, description="minimum rows in each worker's local shuffle buffer (examples are stored grouped by user); 0 = no shuffle"
    )
    max_failures: int = Field(2, ge=0)

    @field_validator("dense_features", "cat_features")
    @classmethod
    def _known_features(cls, v: list[str] | None, info) -> list[str] | None:
        from core.features import CAT_FEATURES, DENSE_FEATURES

        known = DENSE_FEATURES if info.field_name == "dense_features" else CAT_FEATURES
        unknown = sorted(set(v or ()) - set(known))
        if unknown:
            raise ValueError(f"unknown features {unknown}; expected some of {', '.join(known)}")
        return v

    def _smoke_update(self) -> dict:
        return {**super()._smoke_update(), "epochs": 1, "batch_size": 256}


class ScannConfig(StrictModel):
    """ScaNN settings; a missing value is sized to the catalogue (retrieval.index)."""

    num_leaves: int | None = Field(None, ge=0)
    num_leaves_to_search: int | None = Field(None, ge=0)
    training_sample_size: int | None = Field(None, ge=1)
    dims_per_block: int | None = Field(None, ge=0)
    anisotropic_quantization_threshold: float | None = None
    reorder_k: int | None = Field(None, ge=0)


class BuildIndexConfig(JobConfig):
    two_tower_alias: str = "candidate"
    batch_size: int = Field(4096, ge=1)
    embed_concurrency: int = Field(2, ge=1, description="actor-pool size of the embedding step")
    scann: ScannConfig = Field(default_factory=ScannConfig)
    recall_queries: int = Field(2000, ge=10, description="validation queries for recall@k")


class EvaluateConfig(JobConfig):
    two_tower_alias: str = "candidate"
    index_alias: str = "candidate"
    ranker_alias: str = "candidate"
    max_users: int = Field(5000, ge=1, description="test users evaluated (a seeded sample)")
    ease_lambda: float = Field(500.0, gt=0)
    ease_max_items: int = Field(50_000, ge=1)
    retrieve_k: int = Field(200, ge=10, description="candidates retrieved before ranking")
    mmr_lambda: float = Field(0.8, ge=0.0, le=1.0)
    seed: int = 0
    pipeline: bool = Field(True, description="also score the serving pipeline's final top-10 slates")


class SystemReviewConfig(StrictModel):
    """The launch review's whole-pipeline check (``training.system_review``): the serving
    pipeline replayed offline on held-out users with the candidate versions and with
    production, same users, same seed."""

    enabled: bool = True
    users: int = Field(500, ge=10, description="held-out users replayed (a seeded sample)")
    seed: int = 0
    tolerance: float = Field(0.02, ge=0.0, description="allowed relative loss of the final slate vs production's")
    metrics: list[str] = Field(default_factory=lambda: ["expected_ctr@10", "ndcg@10"])
    """Final-slate metrics compared; ``expected_ctr@10`` only where the data has a click
    simulator (synthetic tenants)."""
    retriever_budget: dict[str, float] = Field(default_factory=lambda: {"expected_ctr@10": 0.0, "ndcg@10": 0.25})
    """Metric -> the relative loss the final slate may have against the retriever's own top 10
    (the two-tower alone, same users): 0 = must be at least as good."""
    evaluate: str = "configs/train/evaluate.yaml"
    """Where the platform config and storage of the replay come from."""


class ReviewConfig(StrictModel):
    tolerance: float = Field(0.02, ge=0.0, description="allowed relative drop vs production")
    min_index_recall_at_100: float = Field(0.95, ge=0.0, le=1.0)
    system: SystemReviewConfig = Field(default_factory=SystemReviewConfig)


class PipelineConfig(StrictModel):
    tenant: str = "acme"
    two_tower: str = "configs/train/two_tower.yaml"
    build_index: str = "configs/train/build_index.yaml"
    ranker: str = "configs/train/ranker.yaml"
    evaluate: str = "configs/train/evaluate.yaml"
    review: ReviewConfig = Field(default_factory=ReviewConfig)


class QualityGateConfig(JobConfig):
    """The data-quality gate over the events a training run reads (``training.quality_gate``).

    The *window* is the last ``window_days`` days of the log (ending at its newest event); the
    *trailing period* the ``trailing_days`` before it. Ratios compare per-day means."""

    window_days: int = Field(7, ge=1)
    trailing_days: int = Field(21, ge=1)
    min_volume_ratio: float = Field(0.7, gt=0, description="window events/day over trailing events/day, at least")
    max_volume_ratio: float = Field(2.0, gt=0, description="... and at most")
    min_day_ratio: float = Field(
        0.4, ge=0, description="each day of the window against the trailing daily median, at least (a lost day)"
    )
    max_null_rate: float = Field(0.001, ge=0, le=1, description="share of rows with a required column null")
    max_malformed_rate: float = Field(
        0.001, ge=0, le=1, description="share of rows with an unknown event type, a non-finite value or an empty id"
    )
    min_label_ratio: float = Field(
        0.5, gt=0, description="each event type's rate per impression, window over trailing, at least"
    )
    max_label_ratio: float = Field(2.0, gt=0, description="... and at most")
    min_type_events: int = Field(
        20, ge=1, description="an event type with this many trailing events must appear in the window (else: vanished)"
    )
    max_unknown_item_share: float = Field(0.01, ge=0, le=1, description="events whose item is not in the catalogue")
    max_unknown_user_share: float = Field(0.05, ge=0, le=1, description="events whose user is not in the users table")
    max_future_skew_hours: float = Field(1.0, ge=0, description="events later than now plus this are future-dated")
    min_ts: str = Field("2000-01-01T00:00:00Z", description="events before this are malformed timestamps")


class BatchScoreConfig(JobConfig):
    """Batch scoring (``training.batch_score``): the serving pipeline offline for many users."""

    surfaces: list[str] = Field(
        default_factory=list, description="surfaces to score; empty = every `mode: precomputed` surface of the tenant"
    )
    k: int = Field(20, ge=1, le=500, description="slate length stored per user and surface")
    ttl_hours: float = Field(36.0, gt=0, description="the artifact's expires_at = its creation + this")
    alias: str = Field("production", description="the model versions scored with")
    users_file: str | None = Field(None, description="only these users: a text file, one user id a line")
    segments: list[str] = Field(default_factory=list, description="only users whose max_maturity is one of these")
    max_users: int | None = Field(None, ge=1, description="at most this many users (the first by id)")
    batch_size: int = Field(256, ge=1, description="users per Ray Data batch: the ranker scores them in one pass")
    concurrency: int = Field(1, ge=1, description="scoring actors (each holds the tenant's models and state)")
    cpus_per_actor: float = Field(1.0, gt=0)
    min_coverage: float = Field(0.99, ge=0, le=1, description="share of users with a full slate needed to promote")
    promote: bool = Field(True, description="review (coverage) and promote the version to production")

    def _smoke_update(self) -> dict:
        return {**super()._smoke_update(), "max_users": 100, "batch_size": 32}


class FallbackListsConfig(JobConfig):
    """Safe fallback lists (``training.fallback_lists``): popular, eligible items per surface
    and maturity segment, validated against the tenant's rules, owned, with an expiry."""

    surfaces: list[str] = Field(default_factory=list, description="empty = every surface of the tenant")
    size: int = Field(50, ge=1, le=1000, description="items per list")
    window_days: float = Field(14.0, gt=0, description="popularity over the last this many days of the log")
    ttl_hours: float = Field(7 * 24.0, gt=0, description="expires_at = creation + this; alerts fire a day before")
    min_items: int = Field(10, ge=1, description="a list shorter than this fails validation")
    promote: bool = Field(True, description="promote when validation passes")


class AnalyzeExperimentConfig(JobConfig):
    """The readout of one experiment (``training.analyze_experiment``): its decision records
    joined with the events that name their request id. The plan (control arm, primary metric,
    guardrails, weights) is the experiment's own in the platform config."""

    experiment: str = Field("", description="experiment id (platform config); --experiment overrides")
    start: str | None = Field(None, description="first decision date (YYYY-MM-DD); default the plan's start")
    end: str | None = Field(None, description="last decision date; default start + planned duration")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    srm_alpha: float = Field(0.001, gt=0, lt=1, description="sample-ratio mismatch below this p-value voids the readout")
