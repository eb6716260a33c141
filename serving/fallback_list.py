"""The tenant's safe fallback list: the owned ``fallback_list`` artifact serving falls back to
when policy data cannot be read (``training.fallback_lists`` generates, validates and publishes
it; ``docs/runbooks/fallback-list-expiring.md``).

Layout of a version: ``fallback.json`` = ``{"lists": {surface: {segment: [item, ...]}}}``, a
segment being a user's maturity limit (``general``/``teen``/``mature``) or ``default`` (users
whose limit is unknown: the tenant's ``policy.default_max_maturity``); ``expires_at`` is in the
manifest's ``config``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

LISTS_FILE = "fallback.json"
DEFAULT_SEGMENT = "default"


@dataclass(frozen=True)
class FallbackList:
    version: str
    expires_at: datetime
    lists: dict[str, dict[str, list[str]]]

    def items_for(self, surface: str, segment: str | None) -> list[str]:
        """The list for ``surface`` and the user's segment (its maturity limit), else the
        surface's ``default`` segment; empty when the surface has none."""
        per_segment = self.lists.get(surface, {})
        return list(per_segment.get(segment or DEFAULT_SEGMENT) or per_segment.get(DEFAULT_SEGMENT) or [])

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def load_fallback_list(registry: Any, tenant: str, alias: str = "production") -> FallbackList | None:
    """The ``fallback_list`` version ``alias`` points at, or None when there is none."""
    version = registry.resolve("fallback_list", tenant, alias)
    if version is None:
        return None
    manifest = registry.manifest("fallback_list", tenant, version)
    body = json.loads((registry.local_path("fallback_list", tenant, version) / LISTS_FILE).read_text())
    return FallbackList(version, datetime.fromisoformat(manifest.config["expires_at"]), body["lists"])
