"""Errors the request path raises to its caller (the ingress maps them to HTTP)."""

from __future__ import annotations


class ServiceUnavailable(RuntimeError):
    """No safe answer exists for this request (HTTP 503). ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class UnknownSurface(KeyError):
    """The tenant has no such surface (HTTP 404)."""
