"""A model's serving form: a cheaper inference path built once from its eval weights (the
ranker's folded first layers, :class:`ranking.serving_ranker.ServingRanker`; the query tower's,
:class:`retrieval.serving_query_tower.ServingQueryTower`), and the lifecycle both share.

:class:`ServingForm` is a mixin for a ``torch.nn.Module`` (listed before it): after
:meth:`~ServingForm.compile_for_serving`, :meth:`~ServingForm.serving_form` answers the built
form while the model stays in eval mode. Putting the model in train mode ends it (the weights
are about to change); moving it (``.to``, ``.float``) or loading new weights drops the built
tensors, and the form is rebuilt on the next use in eval mode. A pickled model leaves the form
behind: it is rebuilt where the model is used.
"""

from __future__ import annotations

from typing import Any


class ServingForm:
    _serving: Any = None
    _serving_args: tuple | None = None  # set by compile_for_serving: what to build it with

    def _build_serving(self, *args: Any) -> Any:
        raise NotImplementedError

    def compile_for_serving(self, *args: Any):
        """Serve through the form built from the current eval weights (once per loaded model)."""
        self.eval()  # type: ignore[attr-defined]
        self._serving_args = args
        self._serving = self._build_serving(*args)
        return self

    def serving_form(self) -> Any:
        """The built form; ``None`` in train mode or when never compiled."""
        if self._serving_args is None or self.training:  # type: ignore[attr-defined]
            return None
        if self._serving is None:
            self._serving = self._build_serving(*self._serving_args)
        return self._serving

    def train(self, mode: bool = True):
        if mode:
            self._serving, self._serving_args = None, None
        return super().train(mode)  # type: ignore[misc]

    def _apply(self, fn, *args, **kwargs):
        self._serving = None  # the built tensors stay where they were
        return super()._apply(fn, *args, **kwargs)  # type: ignore[misc]

    def load_state_dict(self, *args, **kwargs):
        self._serving = None
        return super().load_state_dict(*args, **kwargs)  # type: ignore[misc]

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_serving": None}  # type: ignore[misc]
