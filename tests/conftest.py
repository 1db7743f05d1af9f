"""Fixtures every test gets: a clean environment and no leaked threads."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability import reliability  # noqa: F401 - the reliability tests' recorder
from slapd_node import slapd  # noqa: F401 - the session's real slapd

#: How long a thread a test started may take to finish after the test.
THREAD_GRACE_S = 2.0


@pytest.fixture(autouse=True)
def _scrub_catalogd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CATALOGD_* variable of the caller's shell leaks into a test's settings."""
    for name in list(os.environ):
        if name.startswith("CATALOGD_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a non-daemon thread running (a store or watcher not closed)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    leaked = []
    for thread in threading.enumerate():
        if thread in before or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread.name)
    if leaked:
        pytest.fail(f"the test left non-daemon threads running: {sorted(leaked)}")


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory others may enter (pytest's own tmp_path is private to root), for
    tests that drop privileges to see what an unprivileged user gets."""
    path = Path(tempfile.mkdtemp(prefix="catalogd-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as the unprivileged user nobody (uid/gid 65534, no groups)."""
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "HOME": "/"},
    )


@pytest.fixture
def no_source_leaks() -> Iterator[None]:
    """Fail a test that leaves any thread (daemon threads included) or an inotify or
    fanotify descriptor behind: the event sources must stop completely."""
    from catalogd.sources.testing import kernel_watch_fds

    threads = set(threading.enumerate())
    fds = set(kernel_watch_fds())
    yield
    leaked = [t.name for t in threading.enumerate() if t not in threads]
    assert not leaked, f"threads left running: {leaked}"
    assert set(kernel_watch_fds()) <= fds, "inotify/fanotify descriptors left open"
