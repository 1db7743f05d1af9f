"""The daemon on the real file system, through each event source (fanotify as root,
and the inotify fallback), with the embedded SQLite store and the real indexers.

Every wait polls the store (or the daemon's counters) against a deadline.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import pytest

from catalogd.config import Settings
from catalogd.daemon import Daemon
from catalogd.document import FileDocument, document_id
from catalogd.events import Event, Overflow
from catalogd.sources import EventSource, SourceUnavailable
from catalogd.sources.fanotify import FanotifySource
from catalogd.sources.inotify import InotifySource
from catalogd.sources.testing import BURST_WRITER, burst_paths
from catalogd.store import open_store
from catalogd.store.base import Store

TIMEOUT_S = 30.0
QUIET_S = 0.3
VISIT = ("visitor", "id11", "p1", "20240101", "raw")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def write_nexus(path: Path | str, title: str) -> None:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = title


class Running:
    def __init__(self, root: Path, store: Store, daemon: Daemon) -> None:
        self.root = root
        self.store = store
        self.daemon = daemon

    def p(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def doc(self, path: Path | str) -> FileDocument | None:
        return self.store.get(document_id(str(path)))

    def wait_docs(self, paths: list[Path] | list[str], timeout: float = TIMEOUT_S) -> None:
        missing = [str(p) for p in paths]

        def all_there() -> bool:
            nonlocal missing
            missing = [p for p in missing if self.doc(p) is None]
            return not missing

        wait_for(all_there, f"{len(missing)} documents, e.g. {missing[:3]}", timeout)

    def wait_gone(self, paths: list[Path]) -> None:
        wait_for(lambda: all(self.doc(p) is None for p in paths), f"{paths} removed")

    def wait_idle(self) -> None:
        wait_for(lambda: not self.daemon.busy, "the daemon to be idle")

    def sentinel(self, name: str) -> None:
        """A file whose document, once there, says earlier events were handled."""
        path = self.p(name)
        path.write_bytes(b"s")
        self.wait_docs([path])


def make_source(kind: str) -> Callable[[str, queue.Queue[Event]], EventSource]:
    def factory(root: str, events: queue.Queue[Event]) -> EventSource:
        source: EventSource
        if kind == "fanotify":
            source = FanotifySource(root, events)
        else:
            source = InotifySource(root, events)
        source.reason = f"{kind} chosen by the test"
        return source

    return factory


def settings_for(root: Path, state: Path, **daemon: object) -> Settings:
    values: dict[str, object] = {
        "quiet_period_s": QUIET_S,
        "extract_workers": 1,
        "stop_timeout_s": 10.0,
        "reconcile_interval_s": 0.0,
        "poll_interval_s": 1.0,
        "state_dir": str(state),
    }
    values.update(daemon)
    return Settings.model_validate(
        {"watch": {"root": str(root)}, "store": {"url": "memory://"}, "daemon": values}
    )


@pytest.fixture(params=["fanotify", "inotify"])
def source_kind(request: pytest.FixtureRequest) -> str:
    kind = str(request.param)
    if kind == "fanotify":
        try:
            FanotifySource("/", queue.Queue()).stop()
        except SourceUnavailable as exc:
            pytest.skip(f"fanotify unavailable here: {exc.message} (errno {exc.errno})")
    return kind


Start = Callable[..., Running]


@pytest.fixture
def start(source_kind: str, tmp_path: Path) -> Iterator[Start]:
    running: list[Running] = []
    root = tmp_path / "data"
    root.mkdir()
    store = open_store(f"sqlite:///{tmp_path}/catalog.db")

    def starter(event_filter: Callable[[Event], bool] | None = None, **daemon: object) -> Running:
        settings = settings_for(root, tmp_path / "state", **daemon)
        d = Daemon(
            settings,
            store,
            source_factory=make_source(source_kind),
            event_filter=event_filter,
        )
        d.start()
        wait_for(lambda: d.stats.reconciled_at_start, "the reconcile at start")
        run = Running(root, store, d)
        running.append(run)
        return run

    try:
        yield starter
    finally:
        for run in running:
            run.daemon.stop()
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def test_source_in_use_and_why_are_reported(start: Start, source_kind: str) -> None:
    run = start()
    assert run.daemon.stats.source == source_kind
    assert "chosen by the test" in run.daemon.stats.reason


def test_burst_of_files_into_a_new_directory(start: Start) -> None:
    run = start()
    target = str(run.p("burst"))
    paths = burst_paths(target, 2000)
    subprocess.run([sys.executable, "-c", BURST_WRITER, target, "2000"], check=True, timeout=60)
    run.wait_docs(paths, timeout=120)
    run.wait_idle()
    assert run.store.count() == 2000


def test_nexus_files_are_searchable_with_their_metadata(start: Start) -> None:
    run = start()
    visit = run.p(*VISIT)
    visit.mkdir(parents=True)
    paths = [visit / f"scan{i}.nxs" for i in range(5)]
    for i, path in enumerate(paths):
        write_nexus(path, f"lysozyme {i}")
    run.wait_docs(paths)
    doc = run.doc(paths[3])
    assert doc is not None
    assert doc.kind == "nexus" and doc.title == "lysozyme 3"
    assert (doc.beamline, doc.proposal, doc.visit) == ("id11", "p1", "20240101")


SLOW_WRITER = """
import sys, time, h5py
path, steps = sys.argv[1], int(sys.argv[2])
f = h5py.File(path, "w")
entry = f.create_group("entry")
entry.attrs["NX_class"] = "NXentry"
entry["title"] = "partial"
for i in range(steps):
    entry.create_dataset(f"frame{i}", data=[i] * 100)
    f.flush()
    time.sleep(0.4)
del entry["title"]
entry["title"] = "final"
f.close()
print(time.time(), flush=True)
"""


def test_a_slow_writer_is_indexed_once_after_close_with_final_content(start: Start) -> None:
    run = start()
    path = run.p("slow.nxs")
    done = subprocess.run(
        [sys.executable, "-c", SLOW_WRITER, str(path), "6"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    closed_at = float(done.stdout.strip())
    run.wait_docs([path])
    run.wait_idle()
    doc = run.doc(path)
    assert doc is not None and doc.title == "final"
    assert doc.indexed_at >= closed_at
    assert run.daemon.counters.extracted == 1
    assert run.daemon.stats.deferred >= 1  # it was looked at while open, and waited


def test_write_to_a_temporary_name_then_rename(start: Start) -> None:
    run = start()
    tmp, final = run.p(".scan.nxs.part"), run.p("scan.nxs")
    write_nexus(tmp, "renamed")
    os.rename(tmp, final)
    run.wait_docs([final])
    run.sentinel("after-rename")
    run.wait_idle()
    assert run.doc(tmp) is None
    doc = run.doc(final)
    assert doc is not None and doc.title == "renamed"


def test_deletes_of_files_and_directories(start: Start) -> None:
    run = start()
    d = run.p("d", "e")
    d.mkdir(parents=True)
    files = [d / f"f{i}" for i in range(20)]
    lone = run.p("lone.txt")
    for path in [*files, lone]:
        path.write_bytes(b"x")
    run.wait_docs([*files, lone])
    lone.unlink()
    shutil.rmtree(run.p("d"))
    run.wait_gone([*files, lone])


def test_mkdir_p_of_a_deep_tree_with_files_at_once(start: Start) -> None:
    run = start()
    deep = run.p("visitor", "id11", "p2", "20240202", "raw", "a", "b", "c", "d")
    os.makedirs(deep)
    paths = []
    level = deep
    while level != run.root:
        path = level / "f.dat"
        path.write_bytes(b"x")
        paths.append(path)
        level = level.parent
    run.wait_docs(paths)


def test_chmod_only_reruns_the_policy_without_extraction(start: Start) -> None:
    run = start()
    path = run.p("scan.nxs")
    write_nexus(path, "chmod me")
    run.wait_docs([path])
    run.wait_idle()
    extracted = run.daemon.counters.extracted
    checks = run.daemon.pipeline.stats.policy_checks
    os.chmod(path, 0o604)

    def mode_updated() -> bool:
        doc = run.doc(path)
        return doc is not None and doc.mode & 0o777 == 0o604

    wait_for(mode_updated, "the new mode in the catalogue")
    run.wait_idle()
    assert run.daemon.counters.extracted == extracted
    assert run.daemon.pipeline.stats.policy_checks > checks
    assert run.daemon.pipeline.stats.attrib_only >= 1
    doc = run.doc(path)
    assert doc is not None and doc.title == "chmod me"


def lose_events_under(directory: Path) -> Callable[[Event], bool]:
    prefix = str(directory) + "/"

    def keep(event: Event) -> bool:
        paths = [getattr(event, name, "") for name in ("path", "src", "dest")]
        return not any(p == prefix[:-1] or p.startswith(prefix) for p in paths if p)

    return keep


def test_an_overflow_makes_a_rescan_that_finds_everything(start: Start, tmp_path: Path) -> None:
    lost = tmp_path / "data" / "lost"
    run = start(event_filter=lose_events_under(lost))
    lost.mkdir()
    paths = [lost / f"f{i}.dat" for i in range(50)]
    for path in paths:
        path.write_bytes(b"x")
    run.sentinel("before-overflow")
    assert all(run.doc(p) is None for p in paths)  # the events were lost
    run.daemon.events.put(Overflow(str(run.root), "test", "injected"))
    run.wait_docs(paths)
    assert run.daemon.stats.overflows == 1


def test_a_periodic_reconcile_finds_what_events_missed(start: Start, tmp_path: Path) -> None:
    missed = tmp_path / "data" / "missed"
    run = start(event_filter=lose_events_under(missed), reconcile_interval_s=1.0)
    missed.mkdir()
    old = missed / "old.dat"
    old.write_bytes(b"x")
    run.wait_docs([old], timeout=15)  # found by a reconcile: its events were lost
    new = [missed / f"new{i}.dat" for i in range(10)]
    for path in new:
        path.write_bytes(b"y")
    old.unlink()
    run.wait_docs(new, timeout=15)
    run.wait_gone([old])


def test_a_directory_moved_in_is_indexed_whole(start: Start, tmp_path: Path) -> None:
    run = start()
    outside = tmp_path / "outside" / "visit"
    (outside / "raw").mkdir(parents=True)
    paths = [outside / "raw" / f"f{i}.dat" for i in range(30)]
    for path in paths:
        path.write_bytes(b"x")
    dest = run.p("visit")
    os.rename(outside, dest)
    run.wait_docs([dest / "raw" / p.name for p in paths])
    os.rename(dest, run.p("visit2"))
    run.wait_docs([run.p("visit2", "raw", p.name) for p in paths])
    run.wait_gone([dest / "raw" / p.name for p in paths])


def test_restart_catches_up_without_re_extracting(start: Start) -> None:
    run = start()
    keep, change, drop = run.p("keep.nxs"), run.p("change.nxs"), run.p("drop.nxs")
    for path in (keep, change, drop):
        write_nexus(path, path.stem)
    run.wait_docs([keep, change, drop])
    run.wait_idle()
    before = run.doc(keep)
    run.daemon.stop()
    write_nexus(change, "changed")
    drop.unlink()
    added = run.p("added.nxs")
    write_nexus(added, "added")
    again = start()
    again.wait_docs([added])
    again.wait_gone([drop])
    wait_for(lambda: (d := again.doc(change)) is not None and d.title == "changed", "the change")
    again.wait_idle()
    assert again.daemon.counters.extracted == 2  # change and added: keep was not read
    assert again.doc(keep) == before


def test_poll_only_mode(start: Start) -> None:
    run = start(source="poll", poll_interval_s=0.5)
    assert run.daemon.stats.source == "poll"
    path = run.p("polled.dat")
    path.write_bytes(b"x")
    run.wait_docs([path], timeout=15)
    path.unlink()
    run.wait_gone([path])


@pytest.mark.slow
def test_burst_of_50000_files(start: Start) -> None:
    run = start(extract_workers=2)
    target = str(run.p("burst"))
    paths = burst_paths(target, 50_000)
    # Plain files (no HDF5 suffix): the burst measures events, coalescing and the store.
    writer = BURST_WRITER.replace('"f%06d.h5"', '"f%06d.dat"')
    subprocess.run([sys.executable, "-c", writer, target, "50000"], check=True, timeout=120)
    paths = [p.replace(".h5", ".dat") for p in paths]
    run.wait_docs(paths, timeout=240)
    assert run.store.count() == 50_000
