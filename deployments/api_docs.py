"""Whether the ingress publishes its API description (``args.api_docs`` in configs/serve.yaml).

``/docs``, ``/redoc`` and ``/openapi.json`` are served without a key (the request models are
public knowledge for a documented API; the fuzz test reads the schema from there). A
deployment that does not publish its API sets ``api_docs: false``: they answer 404.
"""

from __future__ import annotations

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def remove_api_docs(app) -> int:
    """Take the interactive docs and the OpenAPI schema off ``app`` (``args.api_docs: false``):
    they answer 404 like any unknown path. Returns how many routes were removed."""
    kept = [r for r in app.router.routes if getattr(r, "path", None) not in DOCS_PATHS]
    removed = len(app.router.routes) - len(kept)
    app.router.routes[:] = kept
    return removed
