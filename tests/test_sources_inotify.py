"""The inotify layer: overflow, the watch limit, move pairing, on the real kernel.

The watch limit is reached for real in a child process that has its own user namespace
(``/proc/sys/user/max_inotify_watches`` is per namespace there), so the machine's
limit is never touched; it is also injected at the ``add_watch`` boundary. The
overflow is provoked with the real ``fs.inotify.max_queued_events``: the consumer's
queue holds one event, the reader blocks on it, and the kernel queue fills.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalogd.events import Event, EventKind, Moved, Overflow, PathEvent, SourceFailed
from catalogd.sources import _linux as k
from catalogd.sources.inotify import READ_SIZE, InotifySource
from catalogd.sources.testing import Recorder

TIMEOUT_S = 20.0


pytestmark = pytest.mark.usefixtures("no_source_leaks")


def test_overflow_is_reported_after_watches_are_restored(tmp_path: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    events: queue.Queue[Event] = queue.Queue(maxsize=1)
    source = InotifySource(str(tmp_path), events)
    source.start()
    try:
        a, b = tmp_path / "a", tmp_path / "b"
        a.write_bytes(b"")
        b.write_bytes(b"")
        # Alternating, so the kernel cannot merge them into one; more than the kernel
        # queue plus the one read the blocked reader holds.
        for i in range(limit + READ_SIZE // 16 + 100):
            os.chmod(a if i % 2 else b, 0o600 if i % 4 < 2 else 0o640)
        lost = tmp_path / "lost"
        lost.mkdir()  # its IN_CREATE is dropped: the kernel queue is full
        rec = Recorder(events)
        assert rec.wait(lambda r: bool(r.overflows), TIMEOUT_S), "no Overflow"
        assert rec.overflows[0].root == str(tmp_path)
        assert rec.overflows[0].source == "inotify"
        # The directory made during the overflow was watched before the Overflow.
        inside = lost / "x.h5"
        inside.write_bytes(b"x")
        assert rec.wait(lambda r: r.saw(str(inside), EventKind.CLOSED_WRITE), TIMEOUT_S)
    finally:
        source.stop()


def test_enospc_injected_marks_the_subtree_unwatched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pre" / "big" / "deep").mkdir(parents=True)
    (tmp_path / "pre" / "ok").mkdir()

    def add_watch(fd: int, path: str, mask: int) -> int:
        if os.path.basename(path) == "big":
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return k.inotify_add_watch(fd, path, mask)

    events: queue.Queue[Event] = queue.Queue()
    source = InotifySource(str(tmp_path), events, add_watch=add_watch)
    rec = Recorder(events)
    with caplog.at_level(logging.WARNING, logger="catalogd.sources.inotify"):
        source.start()
        try:
            pre_big = str(tmp_path / "pre" / "big")
            assert rec.wait(lambda r: bool(r.unwatched), TIMEOUT_S)
            assert rec.unwatched[0].path == pre_big
            assert "max_user_watches" in rec.unwatched[0].reason
            assert pre_big in source.unwatched
            # A new directory that cannot be watched: still reported, then Unwatched.
            new_big = tmp_path / "new" / "big"
            new_big.mkdir(parents=True)
            (new_big / "f").write_bytes(b"x")
            assert rec.wait(lambda r: any(u.path == str(new_big) for u in r.unwatched), TIMEOUT_S)
            assert rec.saw(str(new_big), EventKind.CREATED)
            # Elsewhere, business as usual.
            fine = tmp_path / "pre" / "ok" / "g"
            fine.write_bytes(b"x")
            assert rec.wait(lambda r: r.saw(str(fine), EventKind.CLOSED_WRITE), TIMEOUT_S)
            assert not any(
                isinstance(e, PathEvent) and e.path.startswith(pre_big + os.sep) for e in rec.all
            )
        finally:
            source.stop()
    assert any("subtree is polled" in r.getMessage() for r in caplog.records)


# Runs in a child process with its own user namespace, where the watch limit is low.
ENOSPC_CHILD = r"""
import ctypes, json, os, queue, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
    print(json.dumps({"skip": "unshare: " + os.strerror(ctypes.get_errno())}))
    sys.exit(0)
open("/proc/self/uid_map", "w").write(f"0 {uid} 1")
open("/proc/self/setgroups", "w").write("deny")
open("/proc/self/gid_map", "w").write(f"0 {gid} 1")
open("/proc/sys/user/max_inotify_watches", "w").write(sys.argv[2])
from catalogd.events import Unwatched, PathEvent, EventKind
from catalogd.sources.inotify import InotifySource
from catalogd.sources.testing import Recorder
root = sys.argv[1]
events = queue.Queue()
source = InotifySource(root, events)
source.start()
rec = Recorder(events)
os.makedirs(os.path.join(root, "new1"))
os.makedirs(os.path.join(root, "new2", "sub"))
marker = os.path.join(root, "marker")
open(marker, "wb").close()
ok = rec.wait(lambda r: r.saw(marker, EventKind.CLOSED_WRITE) and bool(r.unwatched), 20)
source.stop()
print(json.dumps({
    "ok": ok,
    "unwatched": [[u.path, u.reason] for u in rec.unwatched],
    "created": sorted(e.path for e in rec.all if isinstance(e, PathEvent)
                      and e.kind is EventKind.CREATED),
    "watches": source.watch_count,
}))
"""


def test_enospc_from_the_real_watch_limit(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    # Three watches allowed in the child: the root, a, new1; new2 fails.
    result = subprocess.run(
        [sys.executable, "-c", ENOSPC_CHILD, str(tmp_path), "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    assert report["ok"], report
    unwatched = dict(report["unwatched"])
    assert str(tmp_path / "new2") in unwatched
    assert "max_user_watches" in unwatched[str(tmp_path / "new2")]
    assert str(tmp_path / "new2") in report["created"]
    assert str(tmp_path / "new1") in report["created"]


# -- move pairing, fed at the layer boundary -------------------------------------------


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[InotifySource]:
    (tmp_path / "d").mkdir()
    source = InotifySource(str(tmp_path), queue.Queue())
    source._prepare()  # watches, no thread: events are fed by hand
    try:
        yield source
    finally:
        source.stop()


def wd_of(source: InotifySource, path: Path) -> int:
    return source._wds[str(path)]


def test_moves_pair_by_cookie(bare: InotifySource, tmp_path: Path) -> None:
    root = wd_of(bare, tmp_path)
    out: list[Event] = []
    bare._handle(root, k.IN_MOVED_FROM, 7, b"a.tmp", out)
    assert out == []  # held for its pair
    bare._handle(root, k.IN_MOVED_TO, 7, b"a.h5", out)
    assert out == [Moved(str(tmp_path / "a.tmp"), str(tmp_path / "a.h5"), False, "inotify")]


def test_an_unpaired_move_is_flushed_before_the_next_event(
    bare: InotifySource, tmp_path: Path
) -> None:
    root = wd_of(bare, tmp_path)
    out: list[Event] = []
    bare._handle(root, k.IN_MOVED_FROM, 7, b"a", out)
    bare._handle(root, k.IN_CREATE, 0, b"a", out)  # a new file at the old name
    assert [(e.kind, e.path) for e in out if isinstance(e, PathEvent)] == [
        (EventKind.MOVED_FROM, str(tmp_path / "a")),
        (EventKind.CREATED, str(tmp_path / "a")),
    ]
    bare._handle(root, k.IN_MOVED_FROM, 8, b"b", out)
    assert bare._poll_timeout_ms() is not None  # waits briefly for the pair
    out2 = bare._idle()  # none came
    assert out2 == [PathEvent(EventKind.MOVED_FROM, str(tmp_path / "b"), False, "inotify")]
    assert bare._poll_timeout_ms() is None
    bare._handle(root, k.IN_MOVED_TO, 9, b"c", out2)
    assert out2[-1] == PathEvent(EventKind.MOVED_TO, str(tmp_path / "c"), False, "inotify")


def test_a_directory_moving_out_loses_its_watches(bare: InotifySource, tmp_path: Path) -> None:
    root = wd_of(bare, tmp_path)
    out: list[Event] = []
    bare._handle(root, k.IN_MOVED_FROM | k.IN_ISDIR, 5, b"d", out)
    bare._flush_pending(out)
    assert out == [PathEvent(EventKind.MOVED_FROM, str(tmp_path / "d"), True, "inotify")]
    assert str(tmp_path / "d") not in bare._wds


def test_queue_overflow_event_yields_overflow(bare: InotifySource, tmp_path: Path) -> None:
    out: list[Event] = []
    bare._handle(-1, k.IN_Q_OVERFLOW, 0, b"", out)
    assert out[-1] == Overflow(
        str(tmp_path), "inotify", "inotify event queue overflowed (IN_Q_OVERFLOW)"
    )
    assert str(tmp_path / "d") in bare._wds


def test_a_failing_reader_reports_source_failed_and_stops_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(InotifySource):
        def _read(self) -> list[Event]:
            raise RuntimeError("boom")

    events: queue.Queue[Event] = queue.Queue()
    source = Broken(str(tmp_path), events)
    with caplog.at_level(logging.CRITICAL, logger="catalogd.sources.base"):
        source.start()
        try:
            (tmp_path / "f").write_bytes(b"x")
            rec = Recorder(events)
            assert rec.wait(lambda r: any(isinstance(e, SourceFailed) for e in r.all), TIMEOUT_S)
            assert rec.all[-1] == SourceFailed("inotify", "RuntimeError: boom")
        finally:
            source.stop()
    assert not source.running
