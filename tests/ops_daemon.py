"""``catalogd run`` as a process, with its listener and status file: shared by the
operations tests (sd_notify, metrics, ``catalogd status``, logs).

The primitives here (:data:`CATALOGD`, :func:`wait_for`, :func:`write_nexus`) are also
those of every other test that drives catalogd as a process (tests/reliability.py,
tests/test_daemon_cli.py, tests/test_es_spool.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import pytest
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT_S = 60.0
CATALOGD = [sys.executable, "-c", "import sys; from catalogd.cli import main; sys.exit(main())"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails the test on timeout."""
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def write_nexus(path: Path, title: str) -> None:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = title


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CATALOGD_", "NOTIFY_", "WATCHDOG_"))
    }
    env.update(extra)
    return env


class CatalogdProcess:
    """What every test's ``catalogd run`` process offers once its subclass started
    ``proc``, logging into ``log``, with its status file in ``state``."""

    proc: subprocess.Popen[bytes]
    log: Path
    state: Path

    def launch(self, args: list[str], env: dict[str, str], *, reconciled: bool = True) -> None:
        """Start ``args`` logging into ``log`` and wait until it wrote its status (and,
        with ``reconciled``, finished the reconcile at start); killed if it does not."""
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.status().get("pid") == self.proc.pid, "the daemon's status")
            if reconciled:
                wait_for(lambda: self.status().get("reconciled_at_start") is True, "the reconcile")
        except BaseException:
            self.kill()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        """status.json ({} until written); fails the test if the daemon has exited."""
        if self.proc.poll() is not None:
            pytest.fail(f"catalogd run exited with {self.proc.returncode}:\n{self.output()}")
        return self.last_status()

    def last_status(self) -> dict[str, Any]:
        """status.json as the daemon left it ({} when absent or unreadable)."""
        try:
            data: dict[str, Any] = json.loads((self.state / "status.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def store_health(self) -> dict[str, Any]:
        """The store's health in status.json ({} until reported)."""
        health = self.status().get("store")
        return health if isinstance(health, dict) else {}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


class DaemonProcess(CatalogdProcess):
    """``catalogd -v run`` on ``tmp/data`` with the SQLite store ``tmp/catalog.db``,
    its listener on a free loopback port (found in ``tmp/state/status.json``)."""

    def __init__(
        self,
        tmp: Path,
        *,
        env: dict[str, str] | None = None,
        config: Path | None = None,
        wait: bool = True,
    ) -> None:
        self.tmp = tmp
        self.root = tmp / "data"
        self.root.mkdir(exist_ok=True)
        self.state = tmp / "state"
        self.url = f"sqlite:///{tmp}/catalog.db"
        self.log = tmp / f"daemon-{time.monotonic_ns()}.log"
        base = {
            "CATALOGD_DAEMON_QUIET_PERIOD_S": "0.2",
            "CATALOGD_DAEMON_EXTRACT_WORKERS": "1",
            "CATALOGD_DAEMON_STATE_DIR": str(self.state),
            "CATALOGD_DAEMON_STOP_TIMEOUT_S": "10",
            "CATALOGD_DAEMON_LISTEN": "127.0.0.1:0",
        }
        args = [*CATALOGD, "-v"]
        if config is None:
            empty = tmp / "none.toml"
            empty.touch()
            base["CATALOGD_CONFIG"] = str(empty)
        else:
            args += ["--config", str(config)]
        args += ["run", "--root", str(self.root), "--store", self.url]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                args, env=clean_env(**base, **(env or {})), stdout=subprocess.DEVNULL, stderr=log
            )
        self._base_url: str | None = None
        if wait:
            try:
                wait_for(lambda: self.base_url() is not None, "the daemon's listener")
            except BaseException:
                self.kill()
                raise

    def base_url(self) -> str | None:
        """``http://127.0.0.1:PORT`` once the daemon wrote it into status.json."""
        if self._base_url is None:
            status = self.status()
            if status.get("pid") == self.proc.pid and status.get("listen"):
                self._base_url = f"http://{status['listen']}"
        return self._base_url

    def get(self, path: str) -> tuple[int, bytes]:
        url = self.base_url()
        assert url is not None
        try:
            with urllib.request.urlopen(url + path, timeout=10) as reply:
                return int(reply.status), bytes(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        status, body = self.get("/metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """The sum of a metric over all its labels."""
    return sum(v for (n, _), v in samples.items() if n == name)
