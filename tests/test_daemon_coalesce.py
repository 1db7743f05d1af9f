"""The coalescer (pure, with a fake clock), readiness signals and reconcile decisions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from catalogd.daemon import readiness
from catalogd.daemon.coalesce import Coalescer, Work
from catalogd.daemon.reconcile import confirm_gone, reconcile
from catalogd.document import document_id
from catalogd.events import EventKind, Moved, PathEvent
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig
from catalogd.policy import Policy, make_policy
from catalogd.policy.walker import open_dir
from catalogd.store.base import Fingerprint

Q = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ev(kind: EventKind, path: str, *, is_dir: bool = False, synthetic: bool = False) -> PathEvent:
    return PathEvent(kind, path, is_dir, "test", synthetic)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def co(clock: Clock) -> Coalescer:
    return Coalescer(quiet_period_s=Q, clock=clock)


def test_writes_wait_for_the_quiet_period(co: Coalescer, clock: Clock) -> None:
    co.add(ev(EventKind.CREATED, "/r/a"))
    clock.now += 1.5
    co.add(ev(EventKind.MODIFIED, "/r/a"))
    clock.now += 1.5
    assert co.due() == []  # the modify restarted the quiet period
    assert co.next_deadline() == pytest.approx(clock.now + 0.5)
    clock.now += 0.5
    [work] = co.due()
    assert work.path == "/r/a" and work.content and not work.closed
    assert work.first_seen == 1000.0
    assert len(co) == 0 and co.next_deadline() is None


def test_close_after_write_cuts_the_quiet_period_short(co: Coalescer, clock: Clock) -> None:
    for _ in range(3):
        co.add(ev(EventKind.MODIFIED, "/r/a"))
    co.add(ev(EventKind.CLOSED_WRITE, "/r/a"))
    [work] = co.due()
    assert work.closed and work.content


def test_a_write_after_the_close_reopens_the_quiet_period(co: Coalescer, clock: Clock) -> None:
    co.add(ev(EventKind.CLOSED_WRITE, "/r/a"))
    co.add(ev(EventKind.MODIFIED, "/r/a"))
    assert co.due() == []
    clock.now += Q
    [work] = co.due()
    assert not work.closed


def test_attribute_changes_are_flagged_and_coalesced(co: Coalescer, clock: Clock) -> None:
    co.add(ev(EventKind.ATTRIB, "/r/a"))
    clock.now += 1.0
    co.add(ev(EventKind.ATTRIB, "/r/a"))
    assert co.due() == []
    clock.now += 1.0
    [work] = co.due()  # the first attribute change's deadline holds
    assert work.attrib and not work.content


def test_attribute_change_after_a_close_does_not_delay_it(co: Coalescer, clock: Clock) -> None:
    co.add(ev(EventKind.CLOSED_WRITE, "/r/a"))
    co.add(ev(EventKind.ATTRIB, "/r/a"))
    [work] = co.due()
    assert work.closed and work.content and work.attrib


def test_deletes_are_due_at_once_and_directories_take_their_subtree(co: Coalescer) -> None:
    co.add(ev(EventKind.CREATED, "/r/a"))
    co.add(ev(EventKind.DELETED, "/r/a"))
    co.add(ev(EventKind.DELETED, "/r/d", is_dir=True))
    works = {w.path: w for w in co.due()}
    assert works["/r/a"].gone and works["/r/a"].content
    assert works["/r/d"].gone and works["/r/d"].subtree


def test_moves_delete_the_source_and_complete_the_destination(co: Coalescer) -> None:
    co.add(ev(EventKind.CREATED, "/r/.a.tmp"))
    co.add(Moved("/r/.a.tmp", "/r/a", False, "test"))
    co.add(Moved("/r/d1", "/r/d2", True, "test"))
    co.add(ev(EventKind.MOVED_TO, "/r/in", is_dir=True))
    works = {w.path: w for w in co.due()}
    assert works["/r/.a.tmp"].gone
    assert works["/r/a"].closed and works["/r/a"].content
    assert works["/r/d1"].gone and works["/r/d1"].subtree
    assert works["/r/d2"].subtree and works["/r/in"].subtree


def test_synthetic_creates_wait_for_the_quiet_period(co: Coalescer, clock: Clock) -> None:
    co.add(ev(EventKind.CREATED, "/r/new/a", synthetic=True))
    assert co.due() == []
    clock.now += Q
    assert [w.path for w in co.due()] == ["/r/new/a"]


def test_defer_merges_with_newer_work_and_counts_attempts(co: Coalescer, clock: Clock) -> None:
    co.add(ev(EventKind.CLOSED_WRITE, "/r/a"))
    [work] = co.due()
    co.add(ev(EventKind.ATTRIB, "/r/a"))
    co.defer(work, 0.5)
    clock.now += 0.5
    assert co.due() == []  # the attribute change's quiet period is later
    clock.now += Q
    [again] = co.due()
    assert again.attempts == 1 and again.attrib and again.content


def test_due_respects_the_limit_and_order(co: Coalescer, clock: Clock) -> None:
    for i in range(10):
        co.add_work(Work(f"/r/{i}", content=True), delay=10 - i)
    clock.now += 100
    first = co.due(3)
    assert [w.path for w in first] == ["/r/9", "/r/8", "/r/7"]
    assert len(co.due()) == 7


def test_take_all(co: Coalescer) -> None:
    co.add(ev(EventKind.CREATED, "/r/a"))
    co.add(ev(EventKind.CLOSED_WRITE, "/r/b"))
    assert sorted(w.path for w in co.take_all()) == ["/r/a", "/r/b"]
    assert len(co) == 0


# -- readiness ------------------------------------------------------------------------


def test_parse_locks() -> None:
    text = (
        "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF\n"
        "2: POSIX  ADVISORY  READ 99 fe:00:42 0 EOF\n"
        "2: -> FLOCK  ADVISORY  WRITE 1235 fe:00:77 0 EOF\n"
        "3: OFDLCK ADVISORY  WRITE -1 08:11:9 0 EOF\n"
    )
    assert readiness.parse_locks(text) == {(0xFE, 0, 5678), (8, 0x11, 9)}


def test_superblock_flag_of_a_file_open_for_writing(tmp_path: Path) -> None:
    path = str(tmp_path / "latest.h5")
    with h5py.File(path, "w", libver="latest") as f:
        f["x"] = [1, 2, 3]
        f.flush()
        assert readiness.hdf5_path_write_flag(path) is True
        assert readiness.write_locked(os.stat(path), readiness.read_locks())
    assert readiness.hdf5_path_write_flag(path) is False
    assert not readiness.write_locked(os.stat(path), readiness.read_locks())
    old = str(tmp_path / "old.h5")
    with h5py.File(old, "w") as f:
        f["x"] = 1
    assert readiness.hdf5_path_write_flag(old) is None  # superblock v0: no flag
    text = tmp_path / "t.txt"
    text.write_text("not hdf5")
    assert readiness.hdf5_path_write_flag(str(text)) is None


def test_superblock_after_a_user_block(tmp_path: Path) -> None:
    path = str(tmp_path / "ub.h5")
    with h5py.File(path, "w", libver="latest", userblock_size=1024) as f:
        f["x"] = 1
        f.flush()
        assert readiness.hdf5_path_write_flag(path) is True
    assert readiness.hdf5_path_write_flag(path) is False


WRITER_HOLDING = """
import sys, h5py
f = h5py.File(sys.argv[1], "w")
f["x"] = 1
f.flush()
print("open", flush=True)
sys.stdin.readline()
f.close()
"""


def test_a_writer_in_another_process_is_seen_without_taking_its_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "held.h5")
    with subprocess.Popen(
        [sys.executable, "-c", WRITER_HOLDING, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as writer:
        try:
            assert writer.stdout is not None and writer.stdin is not None
            assert writer.stdout.readline().strip() == "open"
            st = os.stat(path)
            verdict = readiness.check(
                path,
                st,
                closed=True,
                now=time.time(),
                quiet_period_s=0.0,
                locks=readiness.read_locks(),
                is_hdf5=True,
            )
            assert not verdict.ready and "lock" in verdict.reason
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.wait(30) == 0  # our look did not make the writer fail
        finally:
            if writer.poll() is None:
                writer.kill()
    verdict = readiness.check(
        path,
        os.stat(path),
        closed=True,
        now=time.time(),
        quiet_period_s=0.0,
        locks=readiness.read_locks(),
        is_hdf5=True,
    )
    assert verdict.ready


def test_recent_mtime_without_a_close_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "f.dat"
    path.write_bytes(b"x")
    st = os.stat(path)
    locks: frozenset[readiness.LockKey] = frozenset()

    def ready(closed: bool, age: float) -> bool:
        verdict = readiness.check(
            str(path),
            st,
            closed=closed,
            now=st.st_mtime + age,
            quiet_period_s=5.0,
            locks=locks,
            is_hdf5=False,
        )
        return verdict.ready

    assert not ready(False, 1)
    assert ready(True, 1)
    assert ready(False, 6)


# -- reconcile decisions --------------------------------------------------------------
def _policy(root: Path) -> Policy:
    return make_policy(None, LayoutConfig(root=str(root)), NameCache())


def test_reconcile_compares_fingerprints_both_ways(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    same, attrib, changed, new = (root / n for n in ("same", "attrib", "changed", "d/new"))
    for p in (same, attrib, changed, new):
        p.write_bytes(b"1")

    def fp(p: Path) -> Fingerprint:
        return Fingerprint.of_stat(document_id(str(p)), str(p), os.lstat(p))

    known = [fp(same), fp(attrib), fp(changed)]
    gone = Fingerprint(document_id(str(root / "gone")), str(root / "gone"), 1, 1.0, 1.0, 1)
    known.append(gone)
    os.chmod(attrib, 0o600)
    changed.write_bytes(b"22")
    emitted: list[Work] = []
    result = reconcile(str(root), known, emit=emitted.extend, policy=_policy(root))
    by_path = {w.path: w for w in emitted}
    assert result.complete and result.files == 4 and result.directories == 2
    assert str(same) not in by_path
    assert by_path[str(attrib)].attrib and not by_path[str(attrib)].content
    assert by_path[str(changed)].content and by_path[str(new)].content
    assert by_path[str(root / "d")].is_dir
    assert result.gone == [gone]
    assert confirm_gone(result.gone) == [gone]
    (root / "gone").write_bytes(b"back")
    assert confirm_gone(result.gone) == []


def test_reconcile_never_deletes_below_a_directory_it_could_not_list(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "locked").mkdir(parents=True)
    inside = str(root / "locked" / "f")
    known = [Fingerprint(document_id(inside), inside, 1, 1.0, 1.0, 1)]

    def opener(path: str) -> int:
        if path.endswith("locked"):
            raise PermissionError(13, "Permission denied", path)
        return open_dir(path)

    result = reconcile(
        str(root), known, emit=lambda works: None, policy=_policy(root), opener=opener
    )
    assert result.complete and result.unlisted == [str(root / "locked")]
    assert result.gone == []
