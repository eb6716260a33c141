"""A minimal OTLP/HTTP trace receiver on loopback, for tests of the exporter path.

It accepts what a collector accepts at ``POST /v1/traces`` (protobuf
``ExportTraceServiceRequest``, optionally gzip-compressed), decodes it with the OpenTelemetry
protocol's own generated classes and keeps every span as a plain dict. Nothing is stubbed on
the sending side: the SDK's real ``OTLPSpanExporter`` posts here over HTTP.
"""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OtlpReceiver:
    """``with OtlpReceiver() as rx:`` → ``rx.endpoint`` (for ``OTEL_EXPORTER_OTLP_ENDPOINT``),
    ``rx.spans()`` (every span received so far), ``rx.wait_for(pred, timeout_s)``."""

    def __init__(self, host: str = "127.0.0.1"):
        self._spans: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                )

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.endpoint = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, request) -> None:
        from google.protobuf.json_format import MessageToDict

        rows = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    rows.append({
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_id": s.parent_span_id.hex() or None,
                        "attributes": {a.key: _value(a.value) for a in s.attributes},
                        "status": MessageToDict(s.status).get("code", "STATUS_CODE_UNSET"),
                        "scope": ss.scope.name,
                        "resource": resource,
                    })  # fmt: skip
        with self._lock:
            self._spans.extend(rows)

    def spans(self) -> list[dict]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, predicate, timeout_s: float = 30.0) -> list[dict]:
        """Poll (bounded) until ``predicate(spans)`` holds; returns the spans either way."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.1)
        return self.spans()


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def main() -> None:
    """``python -m tests.otlp_receiver``: serve on a free loopback port, print the endpoint,
    and on stdin's end print the number of spans received (benchmarks run it as a stand-in
    collector in its own process)."""
    import sys

    with OtlpReceiver() as rx:
        print(rx.endpoint, flush=True)
        sys.stdin.read()
        print(len(rx.spans()), flush=True)


if __name__ == "__main__":
    main()
