"""Registry-alias watching and atomic runtime swaps for Serve replicas (pure asyncio, no Ray).

A replica serves from one immutable runtime object per tenant (a loaded model, index, ...).
:class:`RuntimeSlot` polls what the registry alias points at; when it changes, the new
runtime is loaded in a worker thread while requests keep using the old one, then the
reference is replaced in one assignment. A request reads the reference once at its start, so
it runs entirely on the old or entirely on the new runtime and never fails because of a swap.

A load that raises :class:`Refused` (e.g. a query tower and an ANN index that do not match)
is refused: logged, counted, remembered so it is not retried every poll, and the old runtime
keeps serving. Any other load error is counted and retried on the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from serving.loaders import Refused  # noqa: F401  (re-exported: a load raises it to refuse)

logger = logging.getLogger("ray.serve")

R = TypeVar("R")




class RuntimeSlot(Generic[R]):
    """One tenant's current runtime plus the alias watcher that replaces it.

    ``resolve()`` returns a hashable key naming the versions the alias points at now (None
    when nothing is published); ``load(key)`` builds the runtime for a key (blocking; run in
    a thread). ``on_event(outcome, key, error)`` reports ``swapped``/``refused``/``failed``.
    """

    def __init__(
        self,
        name: str,
        resolve: Callable[[], Hashable | None],
        load: Callable[[Hashable], R],
        on_event: Callable[[str, Hashable, str | None], None] | None = None,
    ):
        self.name = name
        self._resolve = resolve
        self._load = load
        self._on_event = on_event or (lambda outcome, key, error: None)
        self.runtime: R | None = None
        self.key: Hashable | None = None
        self.refused_key: Hashable | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> bool:
        """Check the alias once; load and swap if it moved. Returns True if it swapped."""
        async with self._lock:  # one load at a time per slot
            try:
                key = await asyncio.to_thread(self._resolve)
            except Exception as exc:
                self.last_error = f"resolve: {type(exc).__name__}: {exc}"
                logger.warning("%s: cannot read registry alias: %s", self.name, exc)
                return False
            if key is None or key == self.key or key == self.refused_key:
                return False
            try:
                runtime = await asyncio.to_thread(self._load, key)
            except Refused as exc:
                self.refused_key, self.last_error = key, str(exc)
                logger.error("%s: refusing %s, still serving %s: %s", self.name, key, self.key, exc)
                self._on_event("refused", key, str(exc))
                return False
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("%s: loading %s failed; still serving %s", self.name, key, self.key)
                self._on_event("failed", key, self.last_error)
                return False
            self.runtime, self.key, self.refused_key, self.last_error = runtime, key, None, None
            logger.info("%s: now serving %s", self.name, key)
            self._on_event("swapped", key, None)
            return True


async def poll_forever(slots: Callable[[], list[RuntimeSlot]], interval_s: Callable[[], float]):
    """Refresh every slot, then sleep ``interval_s()``; forever (cancel the task to stop)."""
    while True:
        for slot in slots():
            await slot.refresh()
        await asyncio.sleep(interval_s())
