"""The README's first command, ``./scripts/demo``, as a user runs it: it builds the demo
tree, starts the demo directory (a real slapd) and ``catalogd run`` with the search API,
and each demo user sees exactly their proposals through the API; Ctrl-C stops it all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
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


def test_the_demo_serves_the_api_filtered_by_the_demo_directory(tmp_path: Path) -> None:
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
        assert httpx.get(base + "/api/v1/search").status_code == 401
        # The first reconcile may still be running: wait for every proposal to show.
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
        text = log.read_text()
        assert "curl -u alice:alice-pw" in text  # it says how to query it
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        try:
            status = demo.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.pid, signal.SIGABRT)  # the stacks, into the log
                time.sleep(3.0)
                os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
            pytest.fail(f"the demo did not stop 60 s after Ctrl-C:\n{log.read_text()[-12000:]}")
    assert status == 0, log.read_text()[-3000:]
    # The demo's directory went with it.
    config = (tmp_path / "demo" / "catalogd.toml").read_text()
    ldap_port = int(config.split('url = "ldap://127.0.0.1:', 1)[1].split('"', 1)[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", ldap_port), timeout=2):
        pass
