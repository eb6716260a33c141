"""Online user state for serving: the training-side :class:`core.features.UserState` fold,
bootstrapped from the event log and kept current by live events.

Invariants:

* Feature semantics are exactly :class:`core.features.UserState`'s (this module only adds
  policy fields next to them), so serving features match training features for the same
  events.
* An accepted event is visible to the next :meth:`OnlineUserStateStore.get`: a ``hide``
  removes the item from the next recommendation, an ``impression`` counts towards the
  frequency cap at once.
* :meth:`OnlineUserStateStore.get` returns a snapshot; the pipeline never sees a state that a
  concurrent :meth:`observe` is changing.
* Events of another tenant are ignored, never folded.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.catalogue import Catalogue
from core.clock import column_seconds, epoch_seconds
from core.features import UserState
from core.schema import MATURITY_LEVELS


@dataclass
class ServingUserState(UserState):
    """A :class:`UserState` plus what eligibility rules need about the user."""

    max_maturity: str | None = None
    """The user's own maturity limit; ``None`` means use the tenant policy's default."""

    def snapshot(self) -> ServingUserState:
        """An independent copy (what ``copy.deepcopy`` gives, several times cheaper): every
        field is immutable or a container of immutable values (str, float, ``(ts, item)``
        tuples), so copying the containers (deques keep their ``maxlen``) is a deep copy."""
        return replace(self, **{f.name: copy.copy(getattr(self, f.name)) for f in _CONTAINERS})


_CONTAINERS = tuple(
    f for f in fields(ServingUserState) if f.name not in ("user_id", "n_positive", "last_ts", "max_maturity")
)




class OnlineUserStateStore:
    """Per-tenant user states. Unknown users get an empty state (``history_missing`` = 1)."""

    def __init__(
        self,
        catalogue: Catalogue,
        tenant_id: str,
        *,
        max_maturity: Mapping[str, str] | None = None,
    ):
        self.catalogue = catalogue
        self.tenant_id = tenant_id
        self._max_maturity = {u: m for u, m in (max_maturity or {}).items() if m in MATURITY_LEVELS}
        self._states: dict[str, ServingUserState] = {}
        self._lock = threading.Lock()

    @classmethod
    def bootstrap(
        cls,
        catalogue: Catalogue,
        tenant_id: str,
        events: pa.Table | None,
        users: pa.Table | None = None,
    ) -> OnlineUserStateStore:
        """Fold ``events`` (an :data:`core.schema.EVENT_SCHEMA` table) in time order."""
        max_maturity = {}
        if users is not None and users.num_rows:
            if "tenant_id" in users.column_names:
                users = users.filter(pc.equal(users["tenant_id"], tenant_id))
            max_maturity = dict(
                zip(users["user_id"].to_pylist(), users["max_maturity"].to_pylist(), strict=True)
            )
        store = cls(catalogue, tenant_id, max_maturity=max_maturity)
        if events is not None and events.num_rows:
            store.fold_table(events)
        return store

    def fold_table(self, events: pa.Table) -> int:
        """Fold a table of events (any order; sorted here). Returns rows folded."""
        if "tenant_id" in events.column_names:
            events = events.filter(pc.equal(events["tenant_id"], self.tenant_id))
        # Same order as the training replay (training.datasets.replay_user,
        # core.schema.event_order_keys): events sharing a ts fold by arrival ``seq``, then
        # (event_type, item_id), since UserState.apply's collapsing of repeated positives and
        # the history's order depend on it.
        if "seq" not in events.column_names:
            events = events.append_column("seq", pa.nulls(events.num_rows, pa.int64()))
        events = events.sort_by(
            [("ts", "ascending"), ("seq", "ascending", "at_start"),
             ("event_type", "ascending"), ("item_id", "ascending")]
        )  # fmt: skip
        users = events["user_id"].to_pylist()
        items = events["item_id"].to_pylist()
        types = events["event_type"].to_pylist()
        ts = column_seconds(events["ts"])
        ts_list = ts.to_pylist()
        with self._lock:
            for u, i, t, s in zip(users, items, types, ts_list, strict=True):
                self._fold(u, t, i, s)
        return len(users)

    def observe(self, event: Mapping[str, Any]) -> bool:
        """Fold one accepted live event (a row as :func:`core.schema.normalize_event` returns,
        ``ts`` a datetime, ISO string or epoch seconds). Returns False if it is not ours."""
        if event.get("tenant_id", self.tenant_id) != self.tenant_id:
            return False
        with self._lock:
            self._fold(event["user_id"], event["event_type"], event["item_id"], epoch_seconds(event["ts"]))
        return True

    def _fold(self, user_id: str, event_type: str, item_id: str, ts: float) -> None:
        state = self._states.get(user_id)
        if state is None:
            state = self._states[user_id] = ServingUserState(
                user_id=user_id, max_maturity=self._max_maturity.get(user_id)
            )
        state.apply(event_type, item_id, ts, self.catalogue)

    def get(self, user_id: str) -> ServingUserState:
        with self._lock:
            state = self._states.get(user_id)
            if state is None:
                return ServingUserState(
                    user_id=user_id, max_maturity=self._max_maturity.get(user_id)
                )
            return state.snapshot()

    def __len__(self) -> int:
        return len(self._states)
