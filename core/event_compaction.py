"""Background compaction of the event log, so that one file per ``append`` does not last.

Each online ``append`` writes one file per (tenant, date) it touches. A
:class:`BackgroundCompactor` merges every tenant's partitions that have at least
``min_files`` files every ``interval_s`` (:meth:`core.eventlog.EventLog.compact`, which is
safe with concurrent appends from any process). Run one per event-log writer process (the
ingress) or one for the whole cluster: compactions of a tenant are serialised by a lock on
local storage; on object stores run exactly one, since two could merge the same files (no
event is lost then, but duplicates stay until the next pass).

The current date is rewritten at most once per interval, so a day's partition costs
``O(events of the day × passes)`` bytes written; pick ``interval_s`` accordingly (minutes).
"""

from __future__ import annotations

import logging
import threading

from core.eventlog import EventLog

logger = logging.getLogger(__name__)


class BackgroundCompactor:
    """A daemon thread that compacts ``log`` every ``interval_s`` until :meth:`stop`.

    ``run_once`` is the unit of work (also usable from a cron job or a Ray task); it never
    raises: a failed tenant is logged, counted in ``errors`` and retried next pass.
    """

    def __init__(self, log: EventLog, *, interval_s: float = 300.0, min_files: int = 2):
        self.log = log
        self.interval_s = interval_s
        self.min_files = min_files
        self.passes = 0
        self.errors = 0
        self.files_removed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, dict[str, int]]:
        """Compact every tenant once; returns per-tenant stats (failed tenants left out)."""
        out = {}
        for tenant in self.log.tenants():
            try:
                stats = self.log.compact(tenant, min_files=self.min_files)
            except Exception:  # storage hiccup: next pass retries; appends are unaffected
                logger.exception("event compaction of tenant %s failed", tenant)
                self.errors += 1
                continue
            self.files_removed += stats["files_before"] - stats["files_after"]
            out[tenant] = stats
        self.passes += 1
        return out

    def start(self) -> BackgroundCompactor:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="event-compaction", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()
