"""The two-tower similarity ``q · v`` of any catalogue items for one user: the ranker's
``retrieval_score`` feature, computed for every candidate whatever source proposed it.

``training.ranker`` fills that feature with this very computation (query tower on the
point-in-time query features, item tower over the catalogue; ``RetrievalScorer``), using the
two-tower version named in the ranker's lineage. Serving builds a :class:`TwoTowerSimilarity`
from the same version (``deployments.ranker``, ``serving.assembly``), so the feature means the same
online and offline; items outside the catalogue get NaN (unknown: the ranker reads its
training mean).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.catalogue import Catalogue
from core.features import item_features, query_features


def similarity_item_features(catalogue: Catalogue) -> dict[str, np.ndarray]:
    """Item-tower inputs for the ranker's ``retrieval_score``, in training and serving alike:
    item ages at the newest item's creation time."""
    now = float(np.nanmax(catalogue.created_at)) if len(catalogue) else 0.0
    return item_features(catalogue, now)


_MEMO_SIZE = 4096
_memos: weakref.WeakKeyDictionary[Any, OrderedDict[tuple, np.ndarray]] = weakref.WeakKeyDictionary()
_memo_lock = threading.Lock()


def query_vectors(model: Any, catalogue: Catalogue, states: Sequence[Any], *, surface: str, now: float) -> np.ndarray:
    """``(B, D)`` query-tower vectors of ``B`` users at ``now`` on ``surface``, from their
    point-in-time query features: the one definition the two-tower source (retrieval) and
    :class:`TwoTowerSimilarity` (the ranker's feature) share.

    The one query-vector cache: each user's vector is remembered per loaded model (the last
    few thousand, keyed by the query tower's exact inputs), and only the users not remembered
    go through the query tower, in one pass. So a request whose two-tower source and ranker
    feature use the same loaded model encodes the user once, and batch scoring encodes a
    batch of users in one pass (:meth:`TwoTowerSimilarity.prime`) that each user's
    :meth:`TwoTowerSimilarity.scores` then finds. The memo belongs to the model object: a hot
    swap loads a new one, and the old memo goes with the old model."""
    feats = [query_features(s, catalogue, surface=surface, now=now) for s in states]
    keys = [(f["user"], f["history"].tobytes(), f["surface"], f["hour"]) for f in feats]
    found: list[np.ndarray | None] = [None] * len(keys)
    with _memo_lock:
        memo = _memos.get(model)
        if memo is not None:
            for i, key in enumerate(keys):
                hit = memo.get(key)
                if hit is not None:
                    memo.move_to_end(key)
                    found[i] = hit
    missing = [i for i, v in enumerate(found) if v is None]
    if missing:
        batch = {k: np.stack([np.asarray(feats[i][k]) for i in missing]) for k in feats[0]}
        fresh = np.asarray(model.encode_queries(batch))
        with _memo_lock:
            memo = _memos.get(model)
            if memo is None:
                memo = _memos[model] = OrderedDict()
            for i, row in zip(missing, fresh, strict=True):
                row.flags.writeable = False  # shared by whoever asks again
                found[i] = memo[keys[i]] = row
            while len(memo) > _MEMO_SIZE:
                memo.popitem(last=False)
    if not found:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(found)


class TwoTowerSimilarity:
    def __init__(self, model: Any, catalogue: Catalogue, version: str):
        self.model = model
        self.catalogue = catalogue
        self.version = version
        self.items = np.asarray(model.encode_items(similarity_item_features(catalogue)), np.float32)

    def prime(self, states: Sequence[Any], *, surface: str, now: float) -> None:
        """Encode ``states`` at this ``surface`` and ``now`` in one query-tower pass, so each
        one's :meth:`scores` finds its vector remembered (:func:`query_vectors`)."""
        if states:
            query_vectors(self.model, self.catalogue, states, surface=surface, now=now)

    def scores(self, state: Any, item_ids: Sequence[str], *, surface: str, now: float,
               rows: np.ndarray | None = None, query_vector: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """``(B,)`` float32 ``q · v`` for ``item_ids``; NaN for items not in the catalogue.
        ``rows``: their catalogue rows when already looked up. ``query_vector``: ``q`` when
        the caller has it from this very two-tower version (the request's two-tower source,
        another replica), instead of the query tower here."""
        if query_vector is not None:
            q = np.asarray(query_vector, dtype=np.float32)
        else:
            q = query_vectors(self.model, self.catalogue, [state], surface=surface, now=now)[0]
        if rows is None:
            rows = self.catalogue.index_of(list(item_ids))
        q = q.astype(np.float32, copy=False)
        if len(rows) and rows.min() >= 0:  # every item in the catalogue (the merge's candidates)
            return np.take(self.items, rows, axis=0) @ q
        out = np.full(len(rows), np.nan, dtype=np.float32)
        known = rows >= 0
        out[known] = self.items[rows[known]] @ q
        return out


def for_ranker(registry: Any, tenant: str, ranker_version: str, catalogue: Catalogue | None,
               loaded: dict[str, Any] | None = None) -> TwoTowerSimilarity | None:  # fmt: skip
    """The similarity of the two-tower the ranker ``ranker_version`` was trained with (its
    manifest's ``lineage.parents["two_tower"]``), or None when it names none (the feature is
    then the two-tower source's score where there is one, NaN elsewhere). ``loaded`` maps
    two-tower versions already in memory to their models (not read again)."""
    if catalogue is None:
        return None
    parent = registry.manifest("ranker", tenant, ranker_version).lineage.parents.get("two_tower")
    if not parent:
        return None
    model = (loaded or {}).get(parent)
    if model is None:
        from retrieval.two_tower import TwoTowerModel

        model = TwoTowerModel.load(registry.local_path("two_tower", tenant, parent))
    return TwoTowerSimilarity(model, catalogue, parent)
