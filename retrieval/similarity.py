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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from core.catalogue import Catalogue
from core.features import item_features, query_features


def similarity_item_features(catalogue: Catalogue) -> dict[str, np.ndarray]:
    """Item-tower inputs for the ranker's ``retrieval_score``, in training and serving alike:
    item ages at the newest item's creation time."""
    now = float(np.nanmax(catalogue.created_at)) if len(catalogue) else 0.0
    return item_features(catalogue, now)


_MEMO_SIZE = 256
_memos: weakref.WeakKeyDictionary[Any, OrderedDict[tuple, np.ndarray]] = weakref.WeakKeyDictionary()
_memo_lock = threading.Lock()


def query_vectors(model: Any, catalogue: Catalogue, states: Sequence[Any], *, surface: str, now: float) -> np.ndarray:
    """``(B, D)`` query-tower vectors of ``B`` users at ``now`` on ``surface``, from their
    point-in-time query features: the one definition the two-tower source (retrieval) and
    :class:`TwoTowerSimilarity` (the ranker's feature) share.

    One user's vector is remembered per loaded model (the last few hundred, keyed by the
    query tower's exact inputs), so a request whose two-tower source and ranker feature use
    the same loaded model encodes the user once. The memo belongs to the model object: a hot
    swap loads a new one, and the old memo goes with the old model."""
    feats = [query_features(s, catalogue, surface=surface, now=now) for s in states]
    key = None
    if len(feats) == 1:
        f = feats[0]
        key = (f["user"], f["history"].tobytes(), f["surface"], f["hour"])
        with _memo_lock:
            memo = _memos.get(model)
            hit = memo.get(key) if memo is not None else None
            if hit is not None:
                memo.move_to_end(key)
                return hit
    batch = {k: np.stack([np.asarray(f[k]) for f in feats]) for k in feats[0]}
    out = np.asarray(model.encode_queries(batch))
    if key is not None:
        out.flags.writeable = False  # shared by whoever asks again
        with _memo_lock:
            memo = _memos.get(model)
            if memo is None:
                memo = _memos[model] = OrderedDict()
            memo[key] = out
            if len(memo) > _MEMO_SIZE:
                memo.popitem(last=False)
    return out


class TwoTowerSimilarity:
    def __init__(self, model: Any, catalogue: Catalogue, version: str):
        self.model = model
        self.catalogue = catalogue
        self.version = version
        self.items = np.asarray(model.encode_items(similarity_item_features(catalogue)), np.float32)
        self._primed = threading.local()

    def __getstate__(self) -> dict:
        # Ray ships the similarity into training tasks (the ranker's examples): the primed
        # vectors are per thread and per process, never sent along.
        return {k: v for k, v in self.__dict__.items() if k != "_primed"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._primed = threading.local()

    @contextmanager
    def primed(self, states: Sequence[Any], *, surface: str, now: float) -> Iterator[None]:
        """Within the block, on this thread, :meth:`scores` for any of ``states`` at this
        ``surface`` and ``now`` uses the query vector computed here for all of them in one
        query-tower pass (a batch of users: one pass instead of one each)."""
        vectors = query_vectors(self.model, self.catalogue, states, surface=surface, now=now) if states else []
        before = getattr(self._primed, "vectors", None)
        self._primed.vectors = {**(before or {}),
                                **{(id(s), surface, now): (s, v) for s, v in zip(states, vectors, strict=True)}}  # fmt: skip
        try:
            yield
        finally:
            self._primed.vectors = before

    def scores(self, state: Any, item_ids: Sequence[str], *, surface: str, now: float,
               rows: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """``(B,)`` float32 ``q · v`` for ``item_ids``; NaN for items not in the catalogue.
        ``rows``: their catalogue rows when already looked up."""
        hit = (getattr(self._primed, "vectors", None) or {}).get((id(state), surface, now))
        if hit is not None and hit[0] is state:
            q = hit[1]
        else:
            q = query_vectors(self.model, self.catalogue, [state], surface=surface, now=now)[0]
        if rows is None:
            rows = self.catalogue.index_of(list(item_ids))
        out = np.full(len(rows), np.nan, dtype=np.float32)
        known = rows >= 0
        out[known] = self.items[rows[known]] @ q.astype(np.float32)
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
