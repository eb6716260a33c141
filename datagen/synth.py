"""Deterministic synthetic tenants drawn from a known latent model.

Per tenant (``rng`` seeded from ``(seed, tenant index)``, so output is a pure function of
preset and seed):

* Categories ``k`` have centres ``c_k`` (unit vectors, dim :data:`DIM`). Item vectors are
  ``v_i = 0.8 c_cat(i) + 0.6 e_i`` (``e_i`` a random unit vector): items cluster by category.
* Users have 1–3 favourite categories; ``u = 0.8 mean(c_fav) / |.| + 0.6 e_u``.
  ``affinity(u, i) = 3 u.v_i`` (about N(0, 0.75) for random pairs, ~+2 for a favourite).
* Item popularity is Zipf-like: ``pop ∝ rank^-1.05`` over a random permutation;
  ``z_pop`` is the standardised ``log pop``, clipped to [-3, 3].
* 25% of items are created during the period (the rest before it), ~5% have an availability
  window; maturity general/teen/mature = 70/20/10%. 20% of users arrive during the period
  (cold start: few sessions); user ``max_maturity`` general/teen/mature = 30/30/40%.
* Sessions (1 + Poisson(1) requests, ~90 s apart) go to users in proportion to activity
  (log-normal) times days active. See :mod:`datagen.sessions` for exposure and outcomes.

Outputs (see :mod:`datagen.summary`) plus ``truth/tenant_id=<t>/{items,users,categories}
.parquet`` with the latent vectors and popularity, and ``synth.json``.

Length: one generator whose steps share the latent model and the seeded rng; read top to
bottom it is the data-generating process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pyarrow as pa

from core.eventlog import EventLog
from core.manifest import code_version
from core.schema import ITEM_SCHEMA, MATURITY_LEVELS, USER_SCHEMA
from datagen.sessions import OUTCOME_MODEL, LatentWorld, simulate_requests
from datagen.summary import (
    SynthSummary,
    check_empty_output,
    dataset_version,
    write_parquet,
)

DIM = 16
PERIOD_START = datetime(2025, 1, 1, tzinfo=UTC)
_US_PER_DAY = 86_400_000_000

CATEGORY_NAMES = (
    "news sports music movies books games travel food fashion science tech health finance "
    "comedy art history nature cars pets parenting education gardening fitness photography "
    "design crafts politics business careers religion poetry theatre dance anime podcasts "
    "diy beauty weddings outdoors space"
).split()
_ADJECTIVES = "bright quiet bold hidden golden urban wild modern classic tiny grand lost".split()
_NOUNS = "story guide journey secret moment world garden voice river light road echo".split()


@dataclass(frozen=True)
class Preset:
    """Sizes per tenant. ``chunk_requests`` bounds memory: events are simulated and written
    that many requests at a time."""

    name: str
    tenants: tuple[str, ...]
    n_items: int
    n_users: int
    n_categories: int
    n_sessions: int
    days: int
    chunk_requests: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", ("acme", "globex"), 400, 300, 12, 2_000, 28, 50_000),
    "small": Preset("small", ("acme", "globex"), 5_000, 3_000, 24, 28_000, 56, 40_000),
    "bench": Preset("bench", ("bench",), 1_000_000, 200_000, 40, 500_000, 90, 40_000),
}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("int64"), pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(n)], pa.string())


def build_world(preset: Preset, tenant: str, rng: np.random.Generator) -> tuple[LatentWorld, dict]:
    """Draw the latent model and the catalogue/users/truth tables of one tenant."""
    start_us = int(PERIOD_START.timestamp() * 1e6)
    end_us = start_us + preset.days * _US_PER_DAY
    n_i, n_u, n_c = preset.n_items, preset.n_users, preset.n_categories

    centres = _unit(rng.standard_normal((n_c, DIM)))
    item_cat = rng.integers(0, n_c, n_i)
    item_vec = _unit(0.8 * centres[item_cat] + 0.6 * _unit(rng.standard_normal((n_i, DIM))))
    pop = np.empty(n_i)
    pop[rng.permutation(n_i)] = np.arange(1, n_i + 1) ** -1.05
    log_pop = np.log(pop)
    # Clipped: with a Zipf head, the top items of a large catalogue sit 10+ std above the mean,
    # and an unbounded popularity term would make them near-certain clicks.
    z_pop = np.clip((log_pop - log_pop.mean()) / log_pop.std(), -3.0, 3.0)

    new_item = rng.random(n_i) < 0.25
    item_created = np.where(
        new_item,
        start_us + rng.random(n_i) * (end_us - start_us),
        start_us - rng.random(n_i) * 730 * _US_PER_DAY,
    ).astype(np.int64)
    windowed = rng.random(n_i) < 0.05
    avail_from = item_created + (rng.random(n_i) * 3 * _US_PER_DAY).astype(np.int64)
    avail_until = avail_from + ((3 + rng.random(n_i) * 11) * _US_PER_DAY).astype(np.int64)
    item_maturity = rng.choice(3, n_i, p=[0.7, 0.2, 0.1])

    n_fav = rng.integers(1, 4, n_u)
    favs = rng.integers(0, n_c, (n_u, 3))
    fav_mask = np.arange(3)[None, :] < n_fav[:, None]
    taste = (centres[favs] * fav_mask[..., None]).sum(1) / n_fav[:, None]
    user_vec = _unit(0.8 * _unit(taste) + 0.6 * _unit(rng.standard_normal((n_u, DIM))))
    late = rng.random(n_u) < 0.2
    user_created = np.where(
        late,
        start_us + rng.random(n_u) * (end_us - start_us),
        start_us - rng.random(n_u) * 365 * _US_PER_DAY,
    ).astype(np.int64)
    activity = rng.lognormal(0.0, 0.8, n_u)
    user_maturity = rng.choice(3, n_u, p=[0.3, 0.3, 0.4])

    n_tags = rng.integers(1, 5, n_i)
    tag_pool = rng.integers(0, 8, (n_i, 4))  # 8 tags per category: tags follow categories
    tag_names = np.array([f"{CATEGORY_NAMES[c]}-{t}" for c in range(n_c) for t in range(8)])
    tag_idx = item_cat[:, None] * 8 + tag_pool
    offsets = np.concatenate([[0], np.cumsum(n_tags)]).astype(np.int32)
    flat = tag_idx[np.arange(4)[None, :] < n_tags[:, None]]
    cats = np.array(CATEGORY_NAMES[:n_c])
    adj = np.array(_ADJECTIVES)[rng.integers(0, len(_ADJECTIVES), n_i)]
    noun = np.array(_NOUNS)[rng.integers(0, len(_NOUNS), n_i)]
    titles = np.char.add(np.char.add(np.char.add(adj, " "), noun), np.char.add(" ", cats[item_cat]))

    item_ids = _ids("i", n_i, 7)
    user_ids = _ids("u", n_u, 7)
    levels = np.array(MATURITY_LEVELS)
    items = pa.Table.from_arrays(
        [
            pa.array([tenant] * n_i, pa.string()),
            item_ids,
            pa.array(titles.tolist(), pa.string()),
            pa.array(cats[item_cat].tolist(), pa.string()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(tag_names[flat].tolist())),
            _ts(item_created),
            pa.array(np.where(windowed, avail_from, 0), pa.int64(), mask=~windowed).cast(
                pa.timestamp("us", tz="UTC")
            ),
            pa.array(np.where(windowed, avail_until, 0), pa.int64(), mask=~windowed).cast(
                pa.timestamp("us", tz="UTC")
            ),
            pa.array(levels[item_maturity].tolist(), pa.string()),
        ],
        schema=ITEM_SCHEMA,
    )
    users = pa.Table.from_arrays(
        [
            pa.array([tenant] * n_u, pa.string()),
            user_ids,
            _ts(user_created),
            pa.array(levels[user_maturity].tolist(), pa.string()),
        ],
        schema=USER_SCHEMA,
    )
    truth = {
        "items": pa.table(
            {
                "item_id": item_ids,
                "category": pa.array(cats[item_cat].tolist()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    item_vec.astype("float32").ravel(), DIM
                ),
                "popularity": pop / pop.sum(),
                "z_pop": z_pop,
            }
        ),
        "users": pa.table(
            {
                "user_id": user_ids,
                "vector": pa.FixedSizeListArray.from_arrays(
                    user_vec.astype("float32").ravel(), DIM
                ),
                "activity": activity,
                "late_arrival": late,
            }
        ),
        "categories": pa.table(
            {
                "category": pa.array(cats.tolist()),
                "vector": pa.FixedSizeListArray.from_arrays(centres.astype("float32").ravel(), DIM),
            }
        ),
    }
    world = LatentWorld(
        tenant=tenant,
        item_ids=item_ids,
        user_ids=user_ids,
        item_vec=item_vec.astype(np.float32),
        user_vec=user_vec.astype(np.float32),
        centres=centres.astype(np.float32),
        item_cat=item_cat,
        z_pop=z_pop,
        pop=pop / pop.sum(),
        item_created=item_created,
        avail_from=np.where(windowed, avail_from, np.iinfo(np.int64).min),
        avail_until=np.where(windowed, avail_until, np.iinfo(np.int64).max),
        item_maturity=item_maturity,
        user_maturity=user_maturity,
    )
    sessions = _sessions(preset, rng, user_created, activity, start_us, end_us)
    return world, {"items": items, "users": users, "truth": truth, "requests": sessions}


def _sessions(preset, rng, user_created, activity, start_us, end_us):
    """Requests as (user index, time µs, surface code 0=home 1=item_page), sorted by time."""
    first = np.maximum(user_created, start_us)
    active_days = np.maximum(end_us - first, 0) / _US_PER_DAY
    weight = activity * active_days
    users = rng.choice(len(weight), preset.n_sessions, p=weight / weight.sum())
    session_start = first[users] + (rng.random(preset.n_sessions) * (end_us - 3.6e9 - first[users]))
    n_req = 1 + rng.poisson(1.0, preset.n_sessions)
    req_user = np.repeat(users, n_req)
    session_of = np.repeat(np.arange(preset.n_sessions), n_req)
    first_of_session = np.concatenate([[0], np.cumsum(n_req)[:-1]])
    gaps = rng.exponential(90e6, len(req_user))
    gaps[first_of_session] = 0.0
    offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first_of_session], n_req)
    req_t = (np.repeat(session_start, n_req) + offset).astype(np.int64)
    surface = np.where(rng.random(len(req_user)) < 0.5, 1, 0)
    surface[first_of_session] = 0  # sessions open on the home feed
    order = np.lexsort((session_of, req_t))
    return req_user[order], np.minimum(req_t[order], end_us - 1), surface[order]


def generate(
    preset: Literal["tiny", "small", "bench"],
    out: str,
    seed: int = 0,
    progress: bool = True,
) -> SynthSummary:
    """Generate every tenant of ``preset`` under ``out`` (which must not hold a dataset yet).

    Deterministic: the same (preset, seed) gives identical tables. Returns the summary also
    written to ``out/synth.json``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    store = check_empty_output(out)
    log = EventLog(store.path("events"))
    rows: dict[str, dict] = {}
    with _progress(progress) as bar:
        for t_index, tenant in enumerate(spec.tenants):
            rng = np.random.default_rng([seed, t_index])
            world, tables = build_world(spec, tenant, rng)
            write_parquet(
                store, ("catalogue", f"tenant_id={tenant}", "part-00000.parquet"), tables["items"]
            )
            write_parquet(
                store, ("users", f"tenant_id={tenant}", "part-00000.parquet"), tables["users"]
            )
            for name, table in tables["truth"].items():
                write_parquet(store, ("truth", f"tenant_id={tenant}", f"{name}.parquet"), table)
            req_user, req_t, surface = tables["requests"]
            task = bar.add_task(f"{tenant}: events", total=len(req_user)) if bar else None
            counts: dict[str, int] = {}
            consumed = None
            for lo in range(0, len(req_user), spec.chunk_requests):
                sl = slice(lo, lo + spec.chunk_requests)
                events, consumed = simulate_requests(
                    world, req_user[sl], req_t[sl], surface[sl], lo, rng, consumed
                )
                log.write_table(events)
                for k, v in zip(
                    *np.unique(events.column("event_type").to_numpy(False), return_counts=True),
                    strict=True,
                ):
                    counts[str(k)] = counts.get(str(k), 0) + int(v)
                if bar:
                    bar.advance(task, len(req_user[sl]))
            rows[tenant] = {
                "items": tables["items"].num_rows,
                "users": tables["users"].num_rows,
                "events": sum(counts.values()),
                "event_types": dict(sorted(counts.items())),
            }
    start = PERIOD_START
    summary = SynthSummary(
        source=f"synth:{preset}",
        out=store.uri,
        tenants=list(spec.tenants),
        rows=rows,
        start=start,
        end=start + timedelta(days=spec.days),
        dataset_version=f"synth-{preset}-{seed}-" + dataset_version(preset, seed, code_version()),
        params={
            "dim": DIM,
            "outcome_model": OUTCOME_MODEL,
            "code_version": code_version(),
        },
        preset=preset,
        seed=seed,
    )
    summary.write("synth.json")
    return summary


def _progress(enabled: bool):
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )
