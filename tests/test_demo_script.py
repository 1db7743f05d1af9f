"""The README's first command, ``./scripts/demo``, as a user runs it: it builds the demo
tree, starts the demo directory (a real slapd) and ``catalogd run`` with the search API,
and each demo user sees exactly their proposals through the API; Ctrl-C stops it all, and
so does killing the daemon outright (no slapd is left holding its port)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ops_daemon import free_port

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180.0


def proposals(base: str, user: str) -> dict[str, int]:
    answer = httpx.get(
        base + "/api/v1/search", params={"size": 0}, auth=(user, f"{user}-pw"), timeout=30
    )
    assert answer.status_code == 200, answer.text
    facet: dict[str, int] = answer.json()["facets"]["proposal"]
    return facet


@contextlib.contextmanager
def running_demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``scripts/demo`` in its own process group, as a terminal runs it, until its API is
    ready: the process, the API's base URL and the log; killed at the end if still up."""
    base = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    env.update(DEMO_DIR=str(tmp_path / "demo"), DEMO_API_LISTEN=base.removeprefix("http://"))
    # Should it hang, SIGABRT makes every Python of the demo write its threads' stacks.
    env["PYTHONFAULTHANDLER"] = "1"
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [str(REPO / "scripts" / "demo")],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if demo.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo's API did not get ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield demo, base, log
    finally:
        if demo.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


def directory_port(tmp_path: Path) -> int:
    """The demo directory's slapd port, from the configuration the demo wrote."""
    config = (tmp_path / "demo" / "catalogd.toml").read_text()
    return int(config.split('url = "ldap://127.0.0.1:', 1)[1].split('"', 1)[0])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def closes_soon(port: int, timeout_s: float = 30.0) -> bool:
    """Whether nothing listens on ``port`` within ``timeout_s``: the directory is a process
    of its own and may still be stopping its slapd when the daemon has ended."""
    deadline = time.monotonic() + timeout_s
    while listening(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_the_demo_serves_the_api_filtered_by_the_demo_directory(tmp_path: Path) -> None:
    with running_demo(tmp_path) as (demo, base, log):
        try:
            assert httpx.get(base + "/api/v1/search").status_code == 401
            # The first reconcile may still be running: wait for every proposal to show.
            deadline = time.monotonic() + START_TIMEOUT_S
            while len(proposals(base, "carol")) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert set(proposals(base, "alice")) == {"20170251"}
            assert set(proposals(base, "nina")) == {"20170077"}
            assert set(proposals(base, "carol")) == {"20170251", "20180101"}  # staff, nested
            assert set(proposals(base, "erin")) == {"20189001"}  # proprietary: erin only
            violations = httpx.get(
                base + "/api/v1/violations", params={"format": "csv"}, auth=("dave", "dave-pw")
            )
            assert violations.status_code == 200
            assert violations.text.startswith("path,rule,severity")
            assert len(violations.text.splitlines()) > 1  # the demo tree plants violations
            assert "curl -u alice:alice-pw" in log.read_text()  # it says how to query it
        finally:
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
            try:
                status = demo.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(demo.pid, signal.SIGABRT)  # the stacks, into the log
                    time.sleep(3.0)
                pytest.fail(f"the demo did not stop 60 s after Ctrl-C:\n{log.read_text()[-12000:]}")
    assert status == 0, log.read_text()[-3000:]
    # The demo's directory went with it.
    assert closes_soon(directory_port(tmp_path)), log.read_text()[-3000:]


def test_killing_the_demo_outright_stops_its_directory_too(tmp_path: Path) -> None:
    """``kill -9`` of the demo (the daemon, which took the script's place) runs no trap:
    the directory sees its parent gone and stops its slapd within a few seconds."""
    with running_demo(tmp_path) as (demo, _, log):
        port = directory_port(tmp_path)
        assert listening(port)
        demo.kill()
        assert demo.wait(30) == -signal.SIGKILL
        assert closes_soon(port), log.read_text()[-3000:]
