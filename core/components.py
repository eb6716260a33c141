"""One registry per kind of pluggable component: candidate sources, eligibility rules, slate
steps and ranker tasks.

A component is one file that declares its config model and registers itself::

    @SOURCES.register("trending", TrendingSourceConfig)
    class TrendingSource: ...

and one config entry that names its ``kind``. The config schema (:mod:`core.config`) builds
each union from these registries, so a new kind needs no edit anywhere else.

Who fills the registries: importing a component package registers every module in it.
:data:`BUILTIN_PLUGINS` names the packages that ship with the platform; a deployment adds its
own with ``plugins:`` in ``platform.yaml`` (a module path each, imported before the config is
validated). The kernel names those packages as data and imports them only on demand
(:func:`load_plugins`), never at import time, so ``core`` still depends on nothing above it
(``tests/unit/test_layers.py`` checks the import statements).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

BUILTIN_PLUGINS: tuple[str, ...] = (
    "retrieval.sources",
    "ranking.rules",
    "ranking.slate",
    "ranking.tasks",
)


@dataclass(frozen=True)
class Component:
    kind: str
    cls: Any
    config: type[BaseModel] | None
    meta: dict[str, Any] = field(default_factory=dict)


class ComponentKinds:
    """``kind`` → :class:`Component` for one role (e.g. "candidate source")."""

    def __init__(self, role: str):
        self.role = role
        self._entries: dict[str, Component] = {}

    def register(
        self, kind: str, config: type[BaseModel] | None = None, **meta: Any
    ) -> Callable[[Any], Any]:
        """Class decorator. Registering the same class again (a module re-imported) is a
        no-op; another class under a taken kind is an error."""

        def add(cls: Any) -> Any:
            old = self._entries.get(kind)
            if old is not None and old.cls.__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.role} kind {kind!r} is taken by {old.cls.__qualname__}")
            self._entries[kind] = Component(kind, cls, config, dict(meta))
            return cls

        return add

    def get(self, kind: str) -> Component:
        load_plugins()
        try:
            return self._entries[kind]
        except KeyError:
            raise KeyError(f"unknown {self.role} kind {kind!r}; known: {sorted(self)}") from None

    def __contains__(self, kind: object) -> bool:
        load_plugins()
        return kind in self._entries

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        load_plugins()
        return len(self._entries)


SOURCES = ComponentKinds("candidate source")
"""Each source class has ``from_config(cfg, ctx)`` and ``async retrieve(query, state, limit)``;
meta ``personalised`` (bool): a source that reads the user (the sources-failed fallback fires
when every personalised source failed)."""
RULES = ComponentKinds("eligibility rule")
"""Each rule class has ``from_policy(policy, catalogue, cfg)`` and ``apply(...)``."""
SLATE_STEPS = ComponentKinds("slate step")
"""Each step class has ``from_config(cfg, ctx)`` and ``apply(draft)``."""
RANKER_TASKS = ComponentKinds("ranker task")
"""Each task is a :class:`RankerTask`; meta ``default_weight`` is its utility weight when a
surface names none."""

_loaded: set[str] = set()
_loading = False


def import_all(package: str) -> None:
    """Import ``package`` and every module directly in it (its components register)."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        importlib.import_module(f"{package}.{info.name}")


def load_plugins(extra: Iterable[str] = ()) -> None:
    """Import the built-in component packages once, then each module of ``extra``."""
    global _loading
    if _loading:  # a plugin module being imported asked for a registry: it is filling it
        return
    _loading = True
    try:
        for name in (*BUILTIN_PLUGINS, *extra):
            if name not in _loaded:
                import_all(name)
                _loaded.add(name)
    finally:
        _loading = False


@dataclass(frozen=True)
class RankerTask:
    """A task the multi-task ranker predicts: ``p(label_event | impression)`` where the label is
    an event of type ``label_event`` on the impressed item in the same request."""

    name: str
    label_event: str
    default_weight: float
    description: str = ""
    order: int = 100
    """Position of its head in a new model (lower first; then by name). A trained model keeps
    the order it was trained with in its own config."""


def register_task(task: RankerTask) -> RankerTask:
    RANKER_TASKS.register(task.name, None, default_weight=task.default_weight)(task)
    return task


def ranker_tasks() -> list[str]:
    """Every registered ranker task, in head order (:attr:`RankerTask.order`, then name)."""
    return sorted(RANKER_TASKS, key=lambda t: (RANKER_TASKS.get(t).cls.order, t))


def default_task_weights() -> dict[str, float]:
    return {t: RANKER_TASKS.get(t).meta["default_weight"] for t in ranker_tasks()}
