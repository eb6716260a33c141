"""Exposure and outcomes of the synthetic tenants (see :mod:`datagen.synth`).

For a block of requests (user, time, surface), vectorised with numpy:

1. **Candidates.** :data:`CANDIDATES` draws per request: half by popularity (exposure bias
   towards popular items), half by the user's taste (a category drawn from
   ``softmax(1.5 * 3 u.c_k)``, then an item of that category by popularity).
2. **Eligibility.** An item may be shown only after its ``created_at``, inside its availability
   window and at or below the user's ``max_maturity``, and never again once the user clicked or
   hid it (so each positive (user, item) pair happens once). Duplicates are dropped.
3. **Logging policy.** Score ``s = 0.8 z_pop + 0.8 affinity``; the slate (10 items on ``home``,
   6 on ``item_page``) is a Plackett–Luce sample from ``softmax(s)`` over the eligible
   candidates (Gumbel top-k). ``propensity`` is the Plackett–Luce probability of the item at
   its position given the items above it (conditional on the candidate draw).
4. **Outcomes** (:data:`OUTCOME_MODEL`), with ``a`` the affinity and ``p`` the 0-based position:
   ``click ~ Bernoulli(sigmoid(1.2 a + 0.4 z_pop - 3.8 - 0.05 p))``;
   ``like | click ~ Bernoulli(sigmoid(1.5 a - 2.0))``;
   ``hide | no click ~ Bernoulli(sigmoid(-1.5 a - 3.0))``;
   ``dwell | click ~ LogNormal(log 20 + 0.5 a, 0.6)`` seconds.

Rows: one ``impression`` per shown item (value 1), then ``click`` (+0.5–10 s), ``dwell``
(value = seconds, at the end of the dwell), ``like`` (during the dwell) and ``hide``.
Event ids are ``<tenant>-<request index>-<position>-<i|c|d|l|h>``: unique and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.schema import EVENT_SCHEMA

CANDIDATES = 64
SLATE_SIZE = {0: 10, 1: 6}
SURFACES = ("home", "item_page")
OUTCOME_MODEL = {
    "affinity_scale": 3.0,
    "policy": {"z_pop": 0.8, "affinity": 0.8},
    "click": {"affinity": 1.2, "z_pop": 0.4, "bias": -3.8, "position": -0.05},
    "like_given_click": {"affinity": 1.5, "bias": -2.0},
    "hide_given_no_click": {"affinity": -1.5, "bias": -3.0},
    "dwell_given_click": {"log_mean": float(np.log(20.0)), "affinity": 0.5, "sigma": 0.6},
}


@dataclass
class LatentWorld:
    """One tenant's latent model; arrays are indexed by item / user / category index."""

    tenant: str
    item_ids: pa.Array
    user_ids: pa.Array
    item_vec: np.ndarray  # (I, D) float32, unit norm
    user_vec: np.ndarray  # (U, D) float32, unit norm
    centres: np.ndarray  # (C, D) float32, unit norm
    item_cat: np.ndarray  # (I,) category index
    z_pop: np.ndarray  # (I,) standardised log popularity
    pop: np.ndarray  # (I,) popularity, sums to 1
    item_created: np.ndarray  # (I,) µs
    avail_from: np.ndarray  # (I,) µs (int64 min when unrestricted)
    avail_until: np.ndarray  # (I,) µs (int64 max when unrestricted)
    item_maturity: np.ndarray  # (I,) index into MATURITY_LEVELS
    user_maturity: np.ndarray  # (U,)

    def __post_init__(self) -> None:
        # Items grouped by category, with a cumulative popularity per category shifted by the
        # category index, so one searchsorted draws "an item of category k by popularity".
        self._by_cat = np.argsort(self.item_cat, kind="stable")
        cats = self.item_cat[self._by_cat]
        p = self.pop[self._by_cat]
        totals = np.bincount(cats, weights=p, minlength=len(self.centres))
        cum = np.cumsum(p) - np.concatenate([[0.0], np.cumsum(totals)[:-1]])[cats]
        self._cat_cdf = cats + cum / np.maximum(totals[cats], 1e-300)
        self._pop_cdf = np.cumsum(self.pop)
        self._cat_logits = OUTCOME_MODEL["affinity_scale"] * 1.5 * (self.user_vec @ self.centres.T)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _candidates(w: LatentWorld, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, half = len(users), CANDIDATES // 2
    last = len(w.pop) - 1
    by_pop = np.minimum(np.searchsorted(w._pop_cdf, rng.random((n, half)) * w._pop_cdf[-1]), last)
    logits = w._cat_logits[users]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
    u = rng.random((n, CANDIDATES - half, 1))
    cats = np.minimum((cdf[:, None, :] < u).sum(-1), len(w.centres) - 1)
    pos = np.searchsorted(w._cat_cdf, cats + rng.random(cats.shape) * (1 - 1e-12))
    by_taste = w._by_cat[np.minimum(pos, last)]
    return np.concatenate([by_pop, by_taste], axis=1)


def simulate_requests(
    w: LatentWorld,
    req_user: np.ndarray,
    req_t: np.ndarray,
    surface: np.ndarray,
    first_index: int,
    rng: np.random.Generator,
    consumed: np.ndarray | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """Simulate requests ``first_index, first_index+1, ...`` (in time order) and return their
    EVENT_SCHEMA rows and the updated ``consumed`` keys.

    ``consumed`` holds sorted ``user * n_items + item`` keys of items a user already clicked or
    hid in earlier requests: the logging policy never shows those again (as a real feed hides
    what was watched or dismissed), so every positive (user, item) pair happens at most once and
    a user's held-out last interaction is a new item, as the evaluation protocol assumes.
    """
    n_items = len(w.pop)
    consumed = np.empty(0, np.int64) if consumed is None else consumed
    cand = _candidates(w, req_user, rng)  # (n, M)
    affinity = OUTCOME_MODEL["affinity_scale"] * np.einsum(
        "nd,nmd->nm", w.user_vec[req_user], w.item_vec[cand]
    )
    t = req_t[:, None]
    ok = (w.item_created[cand] <= t) & (w.avail_from[cand] <= t) & (t < w.avail_until[cand])
    ok &= w.item_maturity[cand] <= w.user_maturity[req_user][:, None]
    if len(consumed):
        ok &= ~np.isin(req_user[:, None].astype(np.int64) * n_items + cand, consumed)
    order = np.argsort(cand, axis=1, kind="stable")
    ranked = np.take_along_axis(cand, order, 1)
    dup = np.zeros_like(ok)
    np.put_along_axis(dup, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], 1)
    ok &= ~dup

    policy = OUTCOME_MODEL["policy"]
    score = policy["z_pop"] * w.z_pop[cand] + policy["affinity"] * affinity
    noisy = np.where(ok, score + rng.gumbel(size=score.shape), -np.inf)
    k_max = max(SLATE_SIZE.values())
    top = np.argpartition(-noisy, k_max - 1, axis=1)[:, :k_max]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(noisy, top, 1), axis=1), 1)
    shown = np.isfinite(np.take_along_axis(noisy, top, 1))
    shown &= np.arange(k_max)[None, :] < np.array([SLATE_SIZE[0], SLATE_SIZE[1]])[surface][:, None]

    weight = np.where(ok, np.exp(score - np.where(ok, score, -np.inf).max(1, keepdims=True)), 0.0)
    w_top = np.take_along_axis(weight, top, 1)
    denom = weight.sum(1, keepdims=True) - np.cumsum(w_top, 1) + w_top
    propensity = np.clip(w_top / np.maximum(denom, 1e-300), 1e-9, 1.0)

    r, p = np.nonzero(shown)  # row-major: requests in order, positions ascending
    c = top[r, p]
    item = cand[r, c]
    a = affinity[r, c]
    zp = w.z_pop[item]
    m = OUTCOME_MODEL
    clicked = rng.random(len(r)) < _sigmoid(
        m["click"]["affinity"] * a + m["click"]["z_pop"] * zp + m["click"]["bias"]
        + m["click"]["position"] * p
    )  # fmt: skip
    like, hide = m["like_given_click"], m["hide_given_no_click"]
    hidden = ~clicked & (rng.random(len(r)) < _sigmoid(hide["affinity"] * a + hide["bias"]))
    # Requests of one chunk are simulated together, so the same user can be shown an item
    # again before the chunk's clicks are known: keep only the first click or hide of each
    # (user, item) pair (rows are in request = time order); later ones become plain impressions.
    key = req_user[r].astype(np.int64) * n_items + item
    acted = clicked | hidden
    first = np.zeros(len(r), bool)
    _, first_idx = np.unique(np.where(acted, key, -1 - np.arange(len(r))), return_index=True)
    first[first_idx] = True
    keep = acted & first
    clicked &= keep
    hidden &= keep
    liked = clicked & (rng.random(len(r)) < _sigmoid(like["affinity"] * a + like["bias"]))
    consumed = np.union1d(consumed, key[keep])
    d = m["dwell_given_click"]
    dwell = rng.lognormal(d["log_mean"] + d["affinity"] * a, d["sigma"])
    t_imp = req_t[r]
    t_click = t_imp + (0.5e6 + rng.exponential(3e6, len(r))).astype(np.int64)
    t_dwell = t_click + (dwell * 1e6).astype(np.int64)
    t_like = t_click + (dwell * 0.8e6).astype(np.int64)
    t_hide = t_imp + (0.5e6 + rng.exponential(2e6, len(r))).astype(np.int64)

    parts = [
        ("impression", "i", np.ones(len(r), bool), t_imp, np.ones(len(r))),
        ("click", "c", clicked, t_click, np.ones(len(r))),
        ("dwell", "d", clicked, t_dwell, np.round(dwell, 3)),
        ("like", "l", liked, t_like, np.ones(len(r))),
        ("hide", "h", hidden, t_hide, np.ones(len(r))),
    ]
    tables = []
    for event_type, code, mask, ts, value in parts:
        idx = np.nonzero(mask)[0]
        req_index = pa.array(first_index + r[idx], pa.int64()).cast(pa.string())
        pos = pa.array(p[idx], pa.int32())
        tenant = pa.scalar(w.tenant)
        tables.append(
            pa.Table.from_arrays(
                [
                    pc.binary_join_element_wise(
                        tenant, req_index, pos.cast(pa.string()), code, "-"
                    ),
                    pa.array(np.full(len(idx), w.tenant), pa.string()),
                    w.user_ids.take(pa.array(req_user[r[idx]])),
                    w.item_ids.take(pa.array(item[idx])),
                    pa.array(np.full(len(idx), event_type), pa.string()),
                    pa.array(value[idx], pa.float64()),
                    pa.array(ts[idx], pa.int64()).cast(EVENT_SCHEMA.field("ts").type),
                    pa.array(np.array(SURFACES)[surface[r[idx]]], pa.string()),
                    pc.binary_join_element_wise(
                        tenant, pc.binary_join_element_wise("r", req_index, ""), "-"
                    ),
                    pos,
                    pa.nulls(len(idx), pa.string()),
                    pa.array(propensity[r[idx], p[idx]], pa.float64()),
                    pa.nulls(len(idx), pa.int64()),  # seq: times are distinct microseconds
                ],
                schema=EVENT_SCHEMA,
            )
        )
    return pa.concat_tables(tables), consumed
