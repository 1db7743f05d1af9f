"""sd_notify: READY=1 once watching, STATUS= lines, WATCHDOG=1 from the main loop (so a
hung loop stops them), STOPPING=1 on SIGTERM; over path and abstract sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_daemon import CATALOGD, DaemonProcess, free_port, wait_for

from catalogd.config import Settings
from catalogd.daemon import Daemon
from catalogd.daemon.notify import Notifier, socket_address, watchdog_interval
from catalogd.events import Event
from catalogd.store import open_store


class Listener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(address))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, until: float) -> None:
        """Collect messages until the monotonic time ``until``."""
        while time.monotonic() < until:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))

    def wait(self, key: str, timeout: float = 60.0) -> dict[str, str]:
        """The first message (already received or to come) that sets ``key``."""
        deadline = time.monotonic() + timeout
        while True:
            for _, fields in self.messages:
                if key in fields:
                    return fields
            if time.monotonic() > deadline:
                pytest.fail(f"no {key}= within {timeout} s; got {self.messages}")
            self.receive(time.monotonic() + 0.1)

    def times(self, key: str) -> list[float]:
        return [at for at, fields in self.messages if key in fields]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    sock = Listener(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


# -- pure parts --------------------------------------------------------------------------


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/name") == b"\0abstract/name"


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_without_a_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000"})
    assert not notifier.enabled and notifier.watchdog_s is None
    assert notifier.send(READY="1") is False


def test_abstract_namespace_socket_receives_messages() -> None:
    name = f"@catalogd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = Listener(name)
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000"})
        assert notifier.watchdog_s == 1.0
        notifier.ready("watching /data")
        notifier.watchdog()
        notifier.watchdog()  # not due yet: not sent again
        notifier.stopping()
        notifier.close()
        sock.receive(time.monotonic() + 0.5)
        sent = [fields for _, fields in sock.messages]
        assert sent == [
            {"READY": "1", "STATUS": "watching /data"},
            {"WATCHDOG": "1"},
            {"STOPPING": "1", "STATUS": "stopping"},
        ]
    finally:
        sock.close()


def test_a_socket_that_is_gone_does_not_stop_the_caller(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    assert notifier.send(READY="1") is False
    notifier.status("still fine")
    notifier.close()


# -- the daemon as systemd runs it -------------------------------------------------------


def test_daemon_notifies_ready_watchdog_and_stopping(tmp_path: Path, listener: Listener) -> None:
    (tmp_path / "data").mkdir()
    for i in range(20):
        (tmp_path / "data" / f"f{i}.txt").write_text("x")
    proc = DaemonProcess(
        tmp_path,
        env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"},
        wait=False,
    )
    try:
        ready = listener.wait("READY", timeout=60)
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith(f"watching {tmp_path / 'data'} with ")
        # Pings every WATCHDOG_USEC / 2 = 0.1 s from the main loop.
        listener.receive(time.monotonic() + 1.5)
        pings = listener.times("WATCHDOG")
        assert len(pings) >= 5, listener.messages
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 1.0
        wait_for(lambda: proc.metrics() is not None, "metrics")  # the listener answers too
        assert proc.terminate() == 0
        stopping = listener.wait("STOPPING")
        assert stopping["STATUS"].startswith("stopping")
        ready_at = listener.times("READY")[0]
        assert listener.times("STOPPING")[0] > ready_at
        statuses = [f["STATUS"] for _, f in listener.messages if "STATUS" in f]
        assert any("documents written" in s for s in statuses), statuses
    finally:
        proc.kill()


def test_a_hung_loop_stops_the_watchdog_pings(tmp_path: Path, listener: Listener) -> None:
    """The pings come from the main loop itself: while it hangs (here: inside the event
    filter), none is sent and /healthz would say 'stalled'; they resume after."""
    root = tmp_path / "data"
    root.mkdir()
    hang = threading.Event()
    release = threading.Event()

    def event_filter(event: Event) -> bool:
        if "hang-here" in str(getattr(event, "path", "")):
            hang.set()
            release.wait(30)
        return True

    settings = Settings.model_validate(
        {"watch": {"root": str(root)}, "daemon": {"quiet_period_s": 0.1, "extract_workers": 1}}
    )
    notifier = Notifier(listener.address, watchdog_s=0.05)
    with open_store("memory://") as store:
        daemon = Daemon(settings, store, notifier=notifier, event_filter=event_filter)
        daemon.healthz_stale_s = 0.5
        daemon.start()
        try:
            listener.wait("READY", timeout=30)
            listener.receive(time.monotonic() + 0.5)
            assert len(listener.times("WATCHDOG")) >= 3
            assert daemon.healthz()[0] is True
            (root / "hang-here").write_text("x")
            wait_for(hang.is_set, "the loop to reach the hanging filter", timeout=30)
            time.sleep(0.2)  # a ping already on its way is let through
            listener.messages.clear()
            listener.receive(time.monotonic() + 1.0)
            assert listener.times("WATCHDOG") == []
            ok, body = daemon.healthz()
            assert not ok and body["status"] == "stalled"
            release.set()
            listener.receive(time.monotonic() + 0.5)
            assert len(listener.times("WATCHDOG")) >= 2
            assert daemon.healthz()[0] is True
        finally:
            release.set()
            daemon.stop()


def test_serve_notifies_ready_watchdog_and_stopping(tmp_path: Path, listener: Listener) -> None:
    """``catalogd serve`` under ``Type=notify``: READY=1 once it listens, WATCHDOG=1 from
    uvicorn's event loop, STOPPING=1 on SIGTERM, then exit 0."""
    config = tmp_path / "catalogd.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/catalog.db"\n'
        '[ldap]\nurl = "ldap://127.0.0.1:9"\nuser_base = "ou=people,dc=example,dc=org"\n'
        'group_base = "ou=groups,dc=example,dc=org"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    env.update(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="200000")
    port = free_port()
    proc = subprocess.Popen(
        # one worker: uvicorn's event loop pings (several: tests/test_api_serve.py)
        [
            *CATALOGD,
            "--config",
            str(config),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert listener.wait("READY", timeout=60)["READY"] == "1"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # READY=1 came once the socket accepts connections
        listener.receive(time.monotonic() + 1.5)
        assert len(listener.times("WATCHDOG")) >= 5, listener.messages
        proc.send_signal(signal.SIGTERM)
        assert listener.wait("STOPPING")["STOPPING"] == "1"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
