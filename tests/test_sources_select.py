"""Choosing the event source: fanotify when privileged on a local file system, else
inotify, always saying why."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalogd.events import Event
from catalogd.sources import (
    EventSource,
    Mount,
    SourceError,
    SourceUnavailable,
    find_mount,
    open_source,
)
from catalogd.sources.fanotify import FanotifySource
from catalogd.sources.testing import kernel_watch_fds

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 252:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:50 / /data rw,relatime - nfs4 nas:/export/data rw,vers=4.2
41 40 0:51 / /data/local\\040disk rw,relatime - xfs /dev/sdb1 rw
42 27 0:52 / /data2 rw - ext4 /dev/sdc1 rw
43 27 0:53 / /data2 rw - fuse.sshfs host:/x rw
"""


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    threads = set(threading.enumerate())
    fds = set(kernel_watch_fds())
    yield
    leaked = [t.name for t in threading.enumerate() if t not in threads]
    assert not leaked, f"threads left running: {leaked}"
    assert set(kernel_watch_fds()) <= fds, "inotify/fanotify descriptors left open"


def test_find_mount_takes_the_longest_prefix_and_the_last_mount() -> None:
    assert find_mount("/data/visitor/x", MOUNTINFO) == Mount("/data", "nfs4", "nas:/export/data")
    assert find_mount("/data/local disk/raw", MOUNTINFO) == Mount(
        "/data/local disk", "xfs", "/dev/sdb1"
    )
    assert find_mount("/database", MOUNTINFO) == Mount("/", "ext4", "/dev/vda")
    assert find_mount("/data2/a", MOUNTINFO) == Mount("/data2", "fuse.sshfs", "host:/x")
    assert find_mount("/x", "garbage\n") is None


def opened(root: Path, **kwargs: object) -> EventSource:
    events: queue.Queue[Event] = queue.Queue()
    return open_source(str(root), events, **kwargs)  # type: ignore[arg-type]


def test_a_shared_file_system_gets_inotify_and_a_warning(tmp_path: Path) -> None:
    mountinfo = f"1 0 0:1 / {tmp_path} rw - nfs4 nas:/data rw\n"
    source = opened(tmp_path, mountinfo=mountinfo)
    try:
        assert source.name == "inotify"
        assert "nfs4" in source.reason and "not local" in source.reason
        assert "other nodes are NOT seen" in source.reason
    finally:
        source.stop()
    with pytest.raises(SourceUnavailable, match="not local"):
        opened(tmp_path, mountinfo=mountinfo, prefer="fanotify", strict=True)


def test_inotify_when_asked(tmp_path: Path) -> None:
    source = opened(tmp_path, prefer="inotify")
    source.stop()
    assert source.name == "inotify"
    assert source.reason == "inotify: inotify was asked for"


def test_fanotify_when_privileged_on_a_local_file_system(tmp_path: Path) -> None:
    try:
        FanotifySource(str(tmp_path), queue.Queue()).stop()
    except SourceUnavailable as exc:
        pytest.skip(f"fanotify unavailable here: {exc.message}")
    source = opened(tmp_path)
    source.stop()
    assert source.name == "fanotify"
    assert source.reason.startswith("fanotify: whole-file-system mark on ")
    assert source.root == os.path.realpath(tmp_path)


def test_the_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a directory"):
        opened(tmp_path / "missing")


# Runs as root with CAP_SYS_ADMIN dropped (as a service without it would be).
CHILD = """
import ctypes, json, queue, sys
libc = ctypes.CDLL(None, use_errno=True)
header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; twice (64 bits)
assert libc.capget(header, data) == 0
CAP_SYS_ADMIN = 21
data[0] &= ~(1 << CAP_SYS_ADMIN)
data[1] &= ~(1 << CAP_SYS_ADMIN)
assert libc.capset(header, data) == 0, ctypes.get_errno()
from catalogd.sources import open_source, SourceUnavailable
source = open_source(sys.argv[1], queue.Queue())
source.stop()
try:
    open_source(sys.argv[1], queue.Queue(), strict=True).stop()
    strict = None
except SourceUnavailable as exc:
    strict = [exc.message, exc.errno]
print(json.dumps({"name": source.name, "reason": source.reason, "strict": strict}))
"""


def test_without_cap_sys_admin_falls_back_to_inotify_with_the_errno(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == "inotify"
    assert "fanotify unavailable" in report["reason"]
    assert "EPERM" in report["reason"] and "CAP_SYS_ADMIN" in report["reason"]
    message, errno_value = report["strict"]
    assert errno_value == 1 and "EPERM" in message
