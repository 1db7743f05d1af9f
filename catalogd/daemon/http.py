"""The daemon's small HTTP listener: ``/healthz``, ``/readyz`` and ``/metrics``.

``[daemon] listen`` (``HOST:PORT``, ``[v6]:PORT``; empty disables it) names where
``catalogd run`` answers, for Prometheus, load balancers and ``catalogd status``:

- ``GET /healthz``: 200 while the daemon's main loop is turning (it ticked recently),
  503 otherwise; a JSON body says which;
- ``GET /readyz``: 200 when it watches the tree and its store is healthy, 503 when not
  (not yet watching, stopping, or the store degraded: Elasticsearch unreachable and
  writes spooled); the JSON body holds the state, reconcile progress and counters;
- ``GET /metrics``: the Prometheus text format of the daemon's registry
  (:mod:`catalogd.metrics`), encoded by prometheus-client.

It serves no path, no document and no configuration: what it shows is counts, rule ids
and states. It runs in its own threads (the standard library's threading HTTP server),
so a hung main loop still answers, with 503 on ``/healthz``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from catalogd.errors import EX_UNAVAILABLE, CatalogdError, ConfigError

log = logging.getLogger(__name__)

#: A probe answers (ok, JSON-able body).
Probe = Callable[[], tuple[bool, dict[str, Any]]]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port); ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("must be HOST:PORT (or empty to disable the listener)")
    return host, int(port)


class ListenerUnavailable(CatalogdError):
    """The address cannot be bound (in use, not local)."""

    exit_code = EX_UNAVAILABLE


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        health: Probe,
        ready: Probe,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.health = health
        self.ready = ready
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "catalogd"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(HTTPStatus.OK, encoder(self.server.registry), content_type)
        elif path in ("/healthz", "/readyz"):
            probe = self.server.health if path == "/healthz" else self.server.ready
            try:
                ok, body = probe()
            except Exception as exc:  # a probe that fails says "not ok", never crashes
                log.exception("the %s probe failed", path)
                ok, body = False, {"status": "error", "error": type(exc).__name__}
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            data = json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"
            self._reply(status, data, "application/json")
        else:
            self._reply(HTTPStatus.NOT_FOUND, b'{"error": "not found"}\n', "application/json")

    def _reply(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.debug("%s %s", self.address_string(), format % args)


class HealthListener:
    """Serves the three endpoints from a background thread until :meth:`close`."""

    def __init__(self, listen: str, registry: CollectorRegistry, *, health: Probe, ready: Probe):
        try:
            host, port = parse_listen(listen)
        except ValueError as exc:
            raise ConfigError(f"daemon.listen: {listen!r} {exc}") from None
        try:
            self._server = _Server((host, port), registry, health, ready)
        except OSError as exc:
            raise ListenerUnavailable(
                f"daemon.listen: cannot listen on {listen}: {exc.strerror or exc}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="catalogd-http",
            daemon=True,
        )

    @property
    def address(self) -> str:
        """Where it listens, with the port actually bound (``[daemon] listen`` may say 0)."""
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5.0)
        self._server.server_close()
