"""Running the API: uvicorn on ``[api] listen``, alone (``catalogd serve``) or beside the
daemon (``catalogd run`` with ``[api] enabled = true``).

The listening socket is bound here, before uvicorn starts, so an address in use or a
port the process may not bind is a clear error with an exit status, not a log line from
a server thread. Alone, uvicorn runs in the main thread and handles SIGTERM and SIGINT
itself (it finishes the requests in flight, then returns); beside the daemon it runs in
a thread of its own and is stopped by :meth:`BackgroundServer.stop` when the daemon
stops.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from api.principal import Directory
from catalogd.config import Settings
from catalogd.daemon.notify import Notifier
from catalogd.errors import (
    EX_UNAVAILABLE,
    CatalogdError,
    ConfigError,
    UsageError,
    describe_os_error,
)
from catalogd.optional import require
from catalogd.store.base import Store

log = logging.getLogger("catalogd.api")

#: Seconds to wait for requests in flight when stopping.
GRACEFUL_STOP_S = 5


def directory_from_settings(settings: Settings) -> Directory:
    """The LDAP directory ``[ldap]`` configures; ConfigError when there is none (the API
    resolves every caller's groups from it, whatever the login method)."""
    if not settings.ldap.url:
        raise ConfigError(
            "the API needs the facility's directory to resolve callers' groups: "
            "set [ldap] url, user_base and group_base"
        )
    require("ldap3", "api")
    from api.ldap import LdapDirectory

    return LdapDirectory(settings.ldap)


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[V6ADDR]:PORT``) as (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"listen address {listen!r} is not HOST:PORT")
    return host, int(port)


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on ``listen``; CatalogdError (exit 69) when it cannot be had."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise CatalogdError(
            f"cannot listen on {listen}: {describe_os_error(exc)}", exit_code=EX_UNAVAILABLE
        ) from None


def bound_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _NotifyingServer(uvicorn.Server):
    """uvicorn, telling systemd (``Type=notify``) when it is ready, that its event loop
    still turns (``WATCHDOG=1`` from the loop's own tick, so a hung loop stops the
    pings), and when it stops. Without ``$NOTIFY_SOCKET`` nothing is sent."""

    def __init__(self, config: uvicorn.Config, notifier: Notifier) -> None:
        super().__init__(config)
        self._notifier = notifier
        self._told_ready = False
        self._told_stopping = False

    async def on_tick(self, counter: int) -> bool:
        if self.started and not self._told_ready:
            self._told_ready = True
            self._notifier.ready("serving the catalogd API")
        if self.should_exit and not self._told_stopping:
            self._told_stopping = True
            self._notifier.stopping()
        self._notifier.watchdog()
        return await super().on_tick(counter)


def _server(
    app: FastAPI,
    sock: socket.socket,
    notifier: Notifier | None = None,
    trusted_proxies: tuple[str, ...] = (),
) -> uvicorn.Server:
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # catalogd's logging configuration stays in charge
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_STOP_S,
        server_header=False,
        # Only a configured reverse proxy may name the client (failed logins are
        # counted per client address; uvicorn would otherwise trust 127.0.0.1).
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
    )
    return _NotifyingServer(config, notifier or Notifier(None))


def serve(app: FastAPI, sock: socket.socket, *, trusted_proxies: tuple[str, ...] = ()) -> None:
    """Serve ``app`` on ``sock`` in this (the main) thread until SIGTERM or SIGINT,
    notifying systemd when ``$NOTIFY_SOCKET`` is set."""
    notifier = Notifier.from_environ()
    server = _server(app, sock, notifier, trusted_proxies)
    log.warning("catalogd API listening on http://%s", bound_address(sock))
    # uvicorn shuts down gracefully on SIGTERM and SIGINT, then re-raises the signal to
    # the handler it found: make that one a no-op, so a requested stop exits with 0.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        notifier.close()
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: FrameType | None) -> None:
    log.info("the API stopped on signal %d", signum)


class BackgroundServer:
    """The API served from a thread beside the daemon."""

    def __init__(
        self, app: FastAPI, sock: socket.socket, *, trusted_proxies: tuple[str, ...] = ()
    ) -> None:
        self._sock = sock
        self._server = _server(app, sock, trusted_proxies=trusted_proxies)
        self._thread = threading.Thread(target=self._run, name="catalogd-api", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException:  # a server that dies must not take the daemon with it
            log.exception("the catalogd API stopped")

    def start(self) -> None:
        log.warning("catalogd API listening on http://%s", bound_address(self._sock))
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, finish the requests in flight (bounded), close the socket."""
        self._server.should_exit = True
        self._thread.join(GRACEFUL_STOP_S + 5.0)
        self._sock.close()


def start_in_background(settings: Settings, store: Store) -> BackgroundServer:
    """Build the API over ``store`` and serve it on ``[api] listen`` from a thread."""
    from api.app import create_app

    app = create_app(settings, store, directory=directory_from_settings(settings))
    server = BackgroundServer(
        app, bind(settings.api.listen), trusted_proxies=settings.api.trusted_proxies
    )
    server.start()
    return server
