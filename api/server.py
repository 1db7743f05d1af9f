"""Running the API: uvicorn on ``[api] listen``, alone (``catalogd serve``) or beside the
daemon (``catalogd run`` with ``[api] enabled = true``).

The listening socket is bound here, before uvicorn starts, so an address in use or a
port the process may not bind is a clear error with an exit status, not a log line from
a server thread. Alone, uvicorn runs in the main thread and handles SIGTERM and SIGINT
itself (it finishes the requests in flight, then returns); beside the daemon it runs in
a thread of its own and is stopped by :meth:`BackgroundServer.stop` when the daemon
stops.

**Several workers** (``[api] workers`` > 1, ``catalogd serve`` only): uvicorn's own
multi-process supervisor (:class:`uvicorn.supervisors.Multiprocess`) runs N worker
processes on the one socket bound here, which they inherit; the kernel hands each new
connection to one of them. uvicorn's supervisor is used rather than forking our own
servers because it already does what a supervisor must (spawned, not forked, workers,
so no thread or connection of the parent leaks into them; a health ping per worker;
replacing a worker that dies or hangs; graceful stop on SIGTERM; SIGHUP replaces the
workers one by one), and :class:`_Supervisor` adds only systemd's notifications. Each
worker builds its own application in :meth:`WorkerConfig.load`: its own store reader,
directory connections and caches. What must hold across workers:

* the failed-login limit is shared (:class:`~api.throttle.SharedLoginThrottle`, a
  SQLite file in a private directory the supervisor creates and removes), so
  ``login_max_failures`` holds per source for the whole server;
* the directory's group cache stays per worker: each worker keeps a user's groups at
  most ``[ldap] cache_ttl_s``, so no worker serves groups older than that; N workers
  ask the directory up to N times per user and TTL instead of once;
* the bind cache (``[ldap] bind_cache_ttl_s``, off by default) is per worker as well:
  a success is reused at most that TTL, a wrong password always reaches the directory
  and the shared failure record;
* ``/metrics`` is answered by one worker and counts that worker's requests (the answer's
  ``X-Catalogd-Worker`` header names its pid).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import SIGNALS, Multiprocess

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
from catalogd.store import open_store
from catalogd.store.base import Store

log = logging.getLogger("catalogd.api")

#: Seconds to wait for requests in flight when stopping.
GRACEFUL_STOP_S = 5
#: Seconds a new worker may take to start serving.
WORKER_START_S = 60.0
#: prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: The response header naming the worker process that answered (several workers only).
WORKER_HEADER = "X-Catalogd-Worker"


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


def _config_options(sock: socket.socket, trusted_proxies: tuple[str, ...]) -> dict[str, Any]:
    host, port = sock.getsockname()[:2]
    return {
        "host": host,
        "port": port,
        "log_config": None,  # catalogd's logging configuration stays in charge
        "lifespan": "off",
        "timeout_graceful_shutdown": GRACEFUL_STOP_S,
        "server_header": False,
        # Only a configured reverse proxy may name the client (failed logins are
        # counted per client address; uvicorn would otherwise trust 127.0.0.1).
        "proxy_headers": bool(trusted_proxies),
        "forwarded_allow_ips": list(trusted_proxies) or None,
    }


def _server(
    app: FastAPI,
    sock: socket.socket,
    notifier: Notifier | None = None,
    trusted_proxies: tuple[str, ...] = (),
) -> uvicorn.Server:
    config = uvicorn.Config(app, **_config_options(sock, trusted_proxies))
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


class WorkerConfig(uvicorn.Config):
    """uvicorn's configuration of the API's worker processes.

    The supervisor hands it (pickled) to every worker it spawns; :meth:`load`, which
    uvicorn calls in the worker, builds that worker's own application: its own store
    reader and directory, and the shared failed-login record."""

    def __init__(
        self,
        settings: Settings,
        store_url: str,
        *,
        sock: socket.socket,
        workers: int,
        throttle_path: Path,
        log_level: int,
        directory_factory: Callable[[Settings], Directory],
    ) -> None:
        self.catalogd_settings = settings
        self.directory_factory = directory_factory
        self.supervisor_pid = os.getpid()
        self.store_url = store_url
        self.throttle_path = throttle_path
        self.catalogd_log_level = log_level
        super().__init__(  # calls configure_logging: the attributes above come first
            "catalogd-api-worker",  # replaced by the worker's own app in load()
            workers=workers,
            **_config_options(sock, settings.api.trusted_proxies),
        )

    def configure_logging(self) -> None:
        """In the worker: catalogd's log format and level, as in the supervisor."""
        super().configure_logging()
        from catalogd import logs

        logs.setup(self.catalogd_log_level)
        logs.apply_settings(self.catalogd_settings)

    def load(self) -> None:
        """In the worker: the application over this worker's own store reader."""
        from api.app import create_app
        from api.throttle import SharedLoginThrottle

        _die_with(self.supervisor_pid)
        settings = self.catalogd_settings
        try:
            directory = self.directory_factory(settings)
            throttle = SharedLoginThrottle(
                self.throttle_path,
                max_failures=settings.api.login_max_failures,
                window_s=settings.api.login_window_s,
                clock=time.time,
            )
            store = open_store(self.store_url)
        except CatalogdError as exc:
            log.error("an API worker could not start: %s", exc.message)
            sys.exit(STARTUP_FAILURE)
        self.app = create_app(settings, store, directory=directory, throttle=throttle)
        self.headers = [*self.headers, (WORKER_HEADER, str(os.getpid()))]
        super().load()


def _die_with(supervisor_pid: int) -> None:
    """Have the kernel stop this worker when its supervisor goes (even by SIGKILL), so no
    orphaned worker keeps serving the socket: ``PR_SET_PDEATHSIG`` on Linux."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: systemd's cgroup still stops workers
        return
    if os.getppid() != supervisor_pid:  # it went before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, telling systemd when every worker serves, that the
    supervisor's loop still turns (it pings each worker's health every half second and
    replaces the ones that do not answer), and when it stops."""

    def __init__(self, config: WorkerConfig, sock: socket.socket, notifier: Notifier) -> None:
        super().__init__(config, sockets=[sock])
        self.notifier = notifier
        self.startup_failed = False

    def init_processes(self) -> None:
        super().init_processes()
        for process in self.processes:
            if not process.wait_until_ready(WORKER_START_S, self.should_exit):
                if not self.should_exit.is_set():
                    self.startup_failed = True
                    self.should_exit.set()
                return
        pids = ", ".join(str(process.pid) for process in self.processes)
        log.warning("catalogd API serving from %d workers (pids %s)", len(self.processes), pids)
        self.notifier.ready(f"serving the catalogd API with {len(self.processes)} workers")

    def keep_subprocess_alive(self) -> None:
        stopping = self.should_exit.is_set()
        super().keep_subprocess_alive()
        if not stopping and self.should_exit.is_set():
            self.startup_failed = True  # uvicorn gave up: a new worker failed to start
        self.notifier.watchdog()

    def handle_int(self) -> None:
        self.notifier.stopping()
        super().handle_int()

    def handle_term(self) -> None:
        self.notifier.stopping()
        super().handle_term()


def serve_workers(
    settings: Settings,
    store_url: str,
    sock: socket.socket,
    workers: int,
    *,
    directory_factory: Callable[[Settings], Directory] = directory_from_settings,
) -> None:
    """Serve the API from ``workers`` processes on ``sock`` until SIGTERM or SIGINT (see
    the module docstring); CatalogdError (exit 69) when the workers cannot start. Each
    worker gets its directory from ``directory_factory`` (called in the worker; it must
    be picklable: a module-level function or a partial of one)."""
    from api.throttle import SharedLoginThrottle
    from api.web.session import load_key

    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or None
    private = Path(tempfile.mkdtemp(prefix="catalogd-api-", dir=runtime))  # mode 0700
    throttle_path = private / "failed-logins.sqlite"
    if settings.api.session_key_file is None:
        # One signing key for the web pages' login cookie in every worker (else a login
        # would hold only on the worker that made it), written before any worker starts.
        key_file = private / "web-session.key"
        load_key(key_file)
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"session_key_file": key_file})}
        )
    notifier = Notifier.from_environ()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    try:
        SharedLoginThrottle.create(throttle_path)
        config = WorkerConfig(
            settings,
            store_url,
            sock=sock,
            workers=workers,
            throttle_path=throttle_path,
            log_level=logging.getLogger().getEffectiveLevel(),
            directory_factory=directory_factory,
        )
        log.warning("catalogd API listening on http://%s", bound_address(sock))
        supervisor = _Supervisor(config, sock, notifier)
        supervisor.run()
        if supervisor.startup_failed:
            raise CatalogdError(
                "the API workers could not start (the log says why)", exit_code=EX_UNAVAILABLE
            )
    finally:
        notifier.close()
        sock.close()
        shutil.rmtree(private, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
