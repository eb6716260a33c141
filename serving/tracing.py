"""OpenTelemetry spans on the request path: off, and free, unless switched on.

Off (the default), :func:`span` returns one shared do-nothing context manager after reading
one module global: no SDK object is made and no context is touched on the hot path.

On, there are two ways, one per runtime:

* **Ray Serve** (``configs/serve.yaml``, top-level ``tracing_config``): Ray Serve 2.60 traces
  itself. In every replica and proxy it starts it calls the exporter named by
  ``exporter_import_path`` -- :func:`otlp_span_processors` -- installs a ``TracerProvider``
  with a ``ParentBasedTraceIdRatio(sampling_ratio)`` sampler, opens a span per HTTP request
  and per handle call, and carries the W3C trace context of the caller across every handle
  call (in the request's metadata). The spans opened here are children of whatever span is
  current, so one request is one trace: proxy → ``Ingress`` → the pipeline's stage spans →
  handle call → ``TwoTowerRetriever`` / ``Ranker`` replica → their spans. Here spans are only
  opened under a recording parent (Ray Serve's request span), so Serve's sampler decides
  once per request and an unsampled request costs one context lookup per span site.
* **In process** (benchmarks, offline jobs, tests): :func:`configure` with a provider;
  the pipeline's ``recommend`` span is then the root and samples by its own ratio.

Spans go to the OTLP/HTTP endpoint of ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL)
or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is appended), read by the exporter in each
process. Attribute names are under ``recsys.``; the trace id (32 hex digits) of a traced
request is in its response and decision record (:func:`trace_id`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACER_NAME = "recsys"

_tracer: Any = None
"""The tracer when tracing is on; ``None`` when off (the one global read on the hot path)."""
_follow = False
"""Open spans only under a recording parent (Ray Serve's request span decides sampling)."""


class _Off:
    """The context manager :func:`span` returns when tracing is off: enters to ``None``."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


_OFF = _Off()


def enabled() -> bool:
    return _tracer is not None


def span(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """A context manager over a child span of the current one, made current while open; it
    enters to the span, or to ``None`` when tracing is off or the request is not sampled.
    An exception leaving the block is recorded on the span and marks it an error."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    if _follow:
        from opentelemetry import trace

        if not trace.get_current_span().is_recording():
            return _OFF
    return tracer.start_as_current_span(name, attributes=attributes)


def trace_id(sp: Any = None) -> str | None:
    """The trace id (32 hex digits) of ``sp`` (default: the current span) when it is sampled,
    else ``None`` (tracing off, or this request not sampled)."""
    if _tracer is None:
        return None
    if sp is None:
        from opentelemetry import trace

        sp = trace.get_current_span()
    ctx = sp.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid and ctx.trace_flags.sampled else None


def versions_attributes(versions: Mapping[str, str]) -> dict[str, str]:
    """``{"recsys.version.<artifact>": version}``: the versions a stage served with."""
    return {f"recsys.version.{k}": str(v) for k, v in versions.items()}


# ------------------------------------------------------------------------------ switching on


def endpoint() -> str | None:
    """The OTLP/HTTP endpoint configured in this process's environment, or ``None``."""
    for name in ENDPOINT_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def otlp_span_processors() -> list:
    """Ray Serve's tracing exporter hook (``tracing_config.exporter_import_path:
    serving.tracing:otlp_span_processors``), called once in each Serve process as it starts:
    a batching OTLP/HTTP exporter to :func:`endpoint`, and this module's spans switched on
    under Ray Serve's tracer provider. With no endpoint configured it returns no processor
    and leaves this module off (Serve's own spans then go nowhere)."""
    global _tracer, _follow
    url = endpoint()
    if url is None:
        logger.warning("tracing_config is enabled but no %s is set: spans are not exported",
                       " / ".join(ENDPOINT_ENV))  # fmt: skip
        return []
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The exporter resolves the endpoint itself (…_TRACES_ENDPOINT as is, else
    # OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces), as every OpenTelemetry SDK does.
    processors = [BatchSpanProcessor(OTLPSpanExporter())]
    # A proxy tracer: Serve installs its provider right after this hook returns.
    _tracer, _follow = trace.get_tracer(TRACER_NAME), True
    return processors


def make_provider(processors: Sequence[Any], sampling_ratio: float = 1.0,
                  service: str = "recsys") -> Any:  # fmt: skip
    """A tracer provider of its own (not OpenTelemetry's global one, so it can be replaced)
    with these span processors, sampling ``sampling_ratio`` of requests at the pipeline's root
    span (``shutdown()`` flushes its processors)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(sampling_ratio),
                              resource=Resource.create({"service.name": service}))  # fmt: skip
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def configure(provider: Any) -> Any:
    """Switch tracing on in this process without Ray Serve, through ``provider``
    (:func:`make_provider`); the pipeline's ``recommend`` span is then a root. Returns it."""
    global _tracer, _follow
    _tracer, _follow = provider.get_tracer(TRACER_NAME), False
    return provider


def disable() -> None:
    """Switch this module's spans off (tests; the provider is the caller's to shut down)."""
    global _tracer, _follow
    _tracer, _follow = None, False
