"""The same behaviour through every event source, on the real file system.

Each test runs once with fanotify (as root; skipped, with the errno, where it cannot be
set up) and once with the recursive inotify layer. Tests wait on the queue with a
deadline (``Recorder.wait``); where a test must show that something did *not* happen,
it waits for a later sentinel event instead of sleeping.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalogd.events import Event, EventKind, Moved, PathEvent
from catalogd.sources import EventSource, SourceError, SourceUnavailable
from catalogd.sources.fanotify import FanotifySource
from catalogd.sources.inotify import InotifySource
from catalogd.sources.testing import (
    BURST_WRITER,
    Recorder,
    all_complete,
    burst_paths,
)

TIMEOUT_S = 20.0
BURST_TIMEOUT_S = 60.0
BURST_FILES = 50_000

C = EventKind.CREATED
W = EventKind.CLOSED_WRITE


pytestmark = pytest.mark.usefixtures("no_source_leaks")


def make_source(kind: str, root: Path, events: queue.Queue[Event]) -> EventSource:
    if kind == "fanotify":
        try:
            return FanotifySource(str(root), events)
        except SourceUnavailable as exc:
            pytest.skip(f"fanotify unavailable here: {exc.message} (errno {exc.errno})")
    return InotifySource(str(root), events)


class Watched:
    def __init__(self, root: Path, source: EventSource, recorder: Recorder) -> None:
        self.root = root
        self.source = source
        self.rec = recorder
        self._sentinels = 0

    def p(self, *parts: str) -> str:
        return os.path.join(str(self.root), *parts)

    def wait(self, condition: object, what: str, timeout: float = TIMEOUT_S) -> None:
        assert callable(condition)
        if not self.rec.wait(condition, timeout):
            tail = "\n".join(map(repr, self.rec.all[-20:]))
            pytest.fail(f"{self.source.name}: timed out waiting for {what}; last events:\n{tail}")

    def sentinel(self) -> int:
        """Write a new file and wait for its close: everything that happened before is
        now in the recorder. Returns the index of the sentinel's first event."""
        self._sentinels += 1
        path = self.p(f".sentinel-{self._sentinels}")
        Path(path).write_bytes(b"s")
        self.wait(lambda r: r.saw(path, W), f"sentinel {path}")
        return len(self.rec.all)

    def path_events(self, path: str, start: int = 0) -> list[PathEvent]:
        return [e for e in self.rec.all[start:] if isinstance(e, PathEvent) and e.path == path]


@pytest.fixture(params=["fanotify", "inotify"])
def watched(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watched]:
    root = tmp_path / "root"
    root.mkdir()
    events: queue.Queue[Event] = queue.Queue()
    source = make_source(request.param, root, events)
    source.start()
    try:
        yield Watched(Path(source.root), source, Recorder(events))
    finally:
        source.stop()
        shutil.rmtree(root)  # not left for pytest's own clean-up (the burst is big)


def seen_complete(rec: Recorder, path: str) -> bool:
    """The file was reported closed after writing, or found by listing a new directory
    (inotify: its close may have come before the watch)."""
    return rec.saw(path, W) or path in rec.synthetic


# -- bursts ---------------------------------------------------------------------------
MAX_QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")
SHIPPED_SYSCTL = (
    Path(__file__).resolve().parent.parent / "systemd/sysctl.d/60-catalogd-inotify.conf"
)


@pytest.fixture
def shipped_inotify_queue() -> Iterator[None]:
    """The kernel's inotify queue as systemd/sysctl.d/60-catalogd-inotify.conf sets it
    on a storage node, for the instances made during the test (the size is read when an
    instance is made), then back as it was. The kernel's default (16,384 events) is
    overflowed by a 50,000-file burst whenever the reader is slowed by a loaded machine;
    an overflow is then handled by a rescan (tests/test_reliability_faults.py), but this
    test is about seeing every event."""
    shipped = next(
        int(line.split("=")[1].split()[0])
        for line in SHIPPED_SYSCTL.read_text().splitlines()
        if line.startswith("fs.inotify.max_queued_events")
    )
    before = int(MAX_QUEUED_EVENTS.read_text())
    raised = False
    if before < shipped and os.access(MAX_QUEUED_EVENTS, os.W_OK):
        MAX_QUEUED_EVENTS.write_text(str(shipped))
        raised = True
    try:
        yield
    finally:
        if raised:
            MAX_QUEUED_EVENTS.write_text(str(before))


@pytest.mark.slow
@pytest.mark.usefixtures("shipped_inotify_queue")  # set up before ``watched``
def test_burst_of_50000_files_into_a_new_directory(watched: Watched) -> None:
    target = watched.p("burst")
    paths = burst_paths(target, BURST_FILES)
    writer = subprocess.run(
        [sys.executable, "-c", BURST_WRITER, target, str(BURST_FILES)], timeout=BURST_TIMEOUT_S
    )
    assert writer.returncode == 0
    watched.wait(all_complete(paths), "every file's close-after-write", BURST_TIMEOUT_S)
    assert not watched.rec.overflows
    assert watched.rec.saw(target, C)
    listed = sum(1 for p in paths if p in watched.rec.synthetic)
    if watched.source.name == "fanotify":
        assert listed == 0
        assert all(watched.rec.saw(p, W) for p in paths)
    # inotify: files created before the new directory's watch are found by listing it;
    # everything after the watch has its real close-after-write.
    closed = sum(1 for p in paths if watched.rec.saw(p, W))
    assert closed + listed >= BURST_FILES


def test_burst_into_a_directory_already_watched_sees_every_close(watched: Watched) -> None:
    target = watched.p("d")
    os.mkdir(target)
    watched.wait(lambda r: r.saw(target, C), "the directory's creation")
    watched.sentinel()  # inotify: the directory's watch is in place now
    paths = [os.path.join(target, f"f{i}") for i in range(2000)]
    for path in paths:
        with open(path, "wb") as f:
            f.write(b"data")
    watched.wait(lambda r: all(r.saw(p, W) for p in paths), "every close-after-write")
    assert not any(p in watched.rec.synthetic for p in paths)
    assert all(watched.rec.saw(p, C) for p in paths)
    assert all(watched.rec.saw(p, EventKind.MODIFIED) for p in paths)


def test_mkdir_p_of_a_deep_tree_with_files_created_at_once(watched: Watched) -> None:
    # In a child process, so nothing waits between mkdir and the writes.
    script = """
import os, sys
top = sys.argv[1]
deep = os.path.join(top, *["level%d" % i for i in range(25)])
os.makedirs(deep)
d = top
for i in range(25):
    d = os.path.join(d, "level%d" % i)
    for j in range(4):
        with open(os.path.join(d, "f%d.h5" % j), "wb") as f:
            f.write(b"x" * 100)
for w in range(200):
    wide = os.path.join(top, "wide", "dir%03d" % w, "raw")
    os.makedirs(wide)
    for j in range(20):
        with open(os.path.join(wide, "f%02d.h5" % j), "wb") as f:
            f.write(b"x")
"""
    top = watched.p("visit")
    subprocess.run([sys.executable, "-c", script, top], check=True, timeout=60)
    deep_files = []
    d = top
    for i in range(25):
        d = os.path.join(d, f"level{i}")
        deep_files += [os.path.join(d, f"f{j}.h5") for j in range(4)]
    wide_files = [
        os.path.join(top, "wide", f"dir{w:03d}", "raw", f"f{j:02d}.h5")
        for w in range(200)
        for j in range(20)
    ]
    files = deep_files + wide_files
    assert len(files) == 4100
    watched.wait(all_complete(files), "every file in the new tree")
    dirs = {os.path.dirname(p) for p in files}
    assert all(watched.rec.saw(d, C) for d in dirs)
    if watched.source.name == "fanotify":
        assert all(watched.rec.saw(p, W) for p in files)
    # A file written again after the burst is seen wherever it is.
    last = files[-1]
    start = len(watched.rec.all)
    with open(last, "ab") as f:
        f.write(b"more")
    watched.wait(
        lambda r: any(
            isinstance(e, PathEvent) and e.path == last and e.kind == W for e in r.since(start)
        ),
        "the append",
    )


# -- the classic shapes ---------------------------------------------------------------


def test_write_to_a_temporary_then_rename(watched: Watched) -> None:
    tmp = watched.p(".scan_0001.h5.part")
    final = watched.p("scan_0001.h5")
    with open(tmp, "wb") as f:
        f.write(b"\x89HDF\r\n")
    os.rename(tmp, final)
    watched.wait(lambda r: any(m.dest == final for m in r.moves), "the rename")
    assert watched.rec.saw(tmp, W)
    (move,) = [m for m in watched.rec.moves if m.dest == final]
    assert move == Moved(tmp, final, False, watched.source.name)
    assert not watched.path_events(final)  # the file itself is only the move's dest


def test_rename_onto_an_existing_file(watched: Watched) -> None:
    final = watched.p("a.h5")
    tmp = watched.p("a.h5.tmp")
    Path(final).write_bytes(b"old")
    Path(tmp).write_bytes(b"new")
    watched.wait(lambda r: r.saw(tmp, W), "the temporary's close")
    os.replace(tmp, final)
    watched.wait(lambda r: any(m.dest == final for m in r.moves), "the replace")


def test_deletes(watched: Watched) -> None:
    d = watched.p("gone")
    os.mkdir(d)
    files = [os.path.join(d, f"f{i}") for i in range(10)]
    for path in files:
        Path(path).write_bytes(b"x")
    watched.wait(lambda r: all(seen_complete(r, p) for p in files), "the files")
    os.unlink(files[0])
    watched.wait(lambda r: r.saw(files[0], EventKind.DELETED), "the unlink")
    shutil.rmtree(d)
    watched.wait(lambda r: r.saw(d, EventKind.DELETED), "the directory's deletion")
    # A directory's DELETED means everything below it is gone. The files' own events
    # come too (inotify always; fanotify unless the directory was gone, and not in its
    # handle cache, by the time the events were read); wait for the stragglers.
    watched.sentinel()
    if watched.source.name == "inotify":
        assert all(watched.rec.saw(p, EventKind.DELETED) for p in files)
    (gone,) = [e for e in watched.path_events(d) if e.kind == EventKind.DELETED]
    assert gone.is_dir
    # A directory made again at the same path is watched again.
    os.mkdir(d)
    again = os.path.join(d, "again")
    Path(again).write_bytes(b"x")
    watched.wait(lambda r: seen_complete(r, again), "a file in the recreated directory")


def test_chmod_is_attrib_and_not_modified(watched: Watched) -> None:
    path = watched.p("data.h5")
    Path(path).write_bytes(b"content")
    watched.wait(lambda r: r.saw(path, W), "the write")
    start = watched.sentinel()
    os.chmod(path, 0o600)
    os.chown(path, 1234, 5678)
    watched.wait(lambda r: len([e for e in watched.path_events(path, start)]) >= 1, "attrib")
    end = watched.sentinel()
    kinds = {e.kind for e in watched.path_events(path, start)}
    assert kinds == {EventKind.ATTRIB}, watched.rec.all[start:end]
    # The same for a directory.
    d = watched.p("dir")
    os.mkdir(d)
    watched.wait(lambda r: r.saw(d, C), "mkdir")
    start = watched.sentinel()
    os.chmod(d, 0o2770)
    watched.wait(lambda r: r.saw(d, EventKind.ATTRIB), "the directory's attrib")
    watched.sentinel()
    assert {(e.kind, e.is_dir) for e in watched.path_events(d, start)} == {(EventKind.ATTRIB, True)}


def test_renamed_directory_keeps_being_watched(watched: Watched) -> None:
    old = watched.p("a")
    new = watched.p("b")
    os.makedirs(os.path.join(old, "sub"))
    watched.wait(lambda r: r.saw(os.path.join(old, "sub"), C), "mkdir")
    watched.sentinel()
    os.rename(old, new)
    watched.wait(lambda r: any(m.src == old and m.dest == new for m in r.moves), "the move")
    assert [m.is_dir for m in watched.rec.moves if m.dest == new] == [True]
    start = len(watched.rec.all)
    inside = os.path.join(new, "sub", "f.h5")
    Path(inside).write_bytes(b"x")
    watched.wait(lambda r: r.saw(inside, W), "a write under the new name")
    assert not any(
        isinstance(e, PathEvent) and e.path.startswith(old + os.sep)
        for e in watched.rec.since(start)
    )


def test_directory_moved_out_and_back_in(watched: Watched, tmp_path: Path) -> None:
    inside = watched.p("visit")
    outside = str(tmp_path / "elsewhere")
    os.makedirs(os.path.join(inside, "raw"))
    Path(inside, "raw", "a.h5").write_bytes(b"x")
    watched.wait(lambda r: seen_complete(r, os.path.join(inside, "raw", "a.h5")), "setup")
    os.rename(inside, outside)
    watched.wait(lambda r: r.saw(inside, EventKind.MOVED_FROM), "moved out")
    start = watched.sentinel()
    Path(outside, "raw", "b.h5").write_bytes(b"x")  # not under the root any more
    back = watched.p("back")
    os.rename(outside, back)
    watched.wait(lambda r: r.saw(back, EventKind.MOVED_TO), "moved in")
    new_file = os.path.join(back, "raw", "c.h5")
    Path(new_file).write_bytes(b"x")
    watched.wait(lambda r: r.saw(new_file, W), "a write in the directory moved in")
    for event in watched.rec.all[start:]:
        if isinstance(event, PathEvent):
            assert event.path == back or event.path.startswith(watched.p()), event
    if watched.source.name == "inotify":  # what it found by listing the arrival
        assert os.path.join(back, "raw", "b.h5") in watched.rec.synthetic


def test_events_outside_the_root_are_not_reported(watched: Watched, tmp_path: Path) -> None:
    start = watched.sentinel()
    Path(tmp_path, "sibling.h5").write_bytes(b"x")
    Path(tmp_path, "rootless").mkdir()
    watched.sentinel()
    for event in watched.rec.since(start):
        assert isinstance(event, PathEvent) and ".sentinel-" in event.path, event


def test_names_that_are_not_utf8(watched: Watched) -> None:
    raw = os.path.join(os.fsencode(watched.p()), b"scan-\xff\xfe.h5")
    with open(raw, "wb") as f:
        f.write(b"x")
    path = os.fsdecode(raw)
    watched.wait(lambda r: r.saw(path, W), "the undecodable name")
    assert os.fsencode(path) == raw


def test_symlinks_are_reported_and_not_followed(watched: Watched, tmp_path: Path) -> None:
    target = tmp_path / "target-dir"
    target.mkdir()
    link = watched.p("link")
    os.symlink(target, link)
    watched.wait(lambda r: r.saw(link, C), "the symlink")
    assert not any(e.is_dir for e in watched.path_events(link))
    start = watched.sentinel()
    (target / "x").write_bytes(b"x")
    watched.sentinel()
    assert not any(str(target) in str(e) for e in watched.rec.since(start))


# -- life cycle -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fanotify", "inotify"])
def test_life_cycle(kind: str, tmp_path: Path) -> None:
    events: queue.Queue[Event] = queue.Queue()
    never_started = make_source(kind, tmp_path, events)
    never_started.stop()
    never_started.stop()
    with pytest.raises(SourceError):
        never_started.start()
    source = make_source(kind, tmp_path, events)
    assert source.name == kind
    with source:
        assert source.running
        with pytest.raises(SourceError):
            source.start()
    assert not source.running
    source.stop()  # idempotent


class BlockingQueue(queue.Queue[Event]):
    """A one-event queue that says when a put had to wait for room."""

    def __init__(self) -> None:
        super().__init__(maxsize=1)
        self.put_blocked = threading.Event()

    def put(self, item: Event, block: bool = True, timeout: float | None = None) -> None:
        if self.full():
            self.put_blocked.set()
        super().put(item, block, timeout)


@pytest.mark.parametrize("kind", ["fanotify", "inotify"])
def test_stop_while_the_consumer_queue_is_full(kind: str, tmp_path: Path) -> None:
    events = BlockingQueue()
    source = make_source(kind, tmp_path, events)
    source.start()
    try:
        for i in range(20):
            (tmp_path / f"f{i}").write_bytes(b"x")
        assert events.put_blocked.wait(TIMEOUT_S), "the reader never waited for room"
    finally:
        source.stop(timeout=2.0)
    assert not source.running
