"""The API's Prometheus metrics, on a registry of the application's own.

Each application gets its own :class:`~prometheus_client.CollectorRegistry` (tests build
many applications in one process; ``catalogd run`` may pass the daemon's registry so that
one ``/metrics`` shows both). Requests are labelled by route *template*
(``/api/v1/files/{doc_id}``), never by the path asked for: a label must not carry a
document id, and unmatched paths all count as ``unmatched``.

:class:`MetricsMiddleware` is a plain ASGI middleware: it sees the status the
application answered and the route the router chose, after the fact.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"


class ApiMetrics:
    """The API's counters and histograms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "catalogd_api_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "catalogd_api_request_duration_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.auth_failures = Counter(
            "catalogd_api_auth_failures",
            "Failed authentications, by method (basic, oidc, service).",
            ["method"],
            registry=self.registry,
        )
        self.throttled = Counter(
            "catalogd_api_logins_throttled",
            "Requests refused (429) because their source failed to log in too often.",
            registry=self.registry,
        )
        self.unavailable = Counter(
            "catalogd_api_unavailable",
            "Requests answered 503 because a dependency failed, by dependency.",
            ["dependency"],
            registry=self.registry,
        )


class MetricsMiddleware:
    """Counts and times every HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
