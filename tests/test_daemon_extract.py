"""An extraction worker while the daemon stops past its bound.

The daemon aborts a worker that has not finished by ``stop_timeout_s`` and then closes
the store. A worker caught in the middle must not log a store error after that: the
daemon's own last line (why it stopped, e.g. the spool's disk is full) is what the
operator and systemd's journal show last.
"""

from __future__ import annotations

import logging
import os
import queue
from pathlib import Path

import h5py
import pytest

from catalogd.daemon.coalesce import Work
from catalogd.daemon.extract import Batch, Done, ExtractCounters, ExtractWorker
from catalogd.document import DocumentBuilder, FileDocument
from catalogd.errors import StoreError
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig
from catalogd.store import open_store
from catalogd.store.base import Store
from indexers.hdf5 import Hdf5Indexer
from indexers.registry import Registry
from indexers.settings import IndexerSettings


class ClosedMidPut:
    """A real SQLite store that the daemon's shutdown closes while a put is on its way:
    the worker is aborted first, then the store is closed, then the put arrives."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.worker: ExtractWorker | None = None
        self.attempts = 0

    def put(self, docs: list[FileDocument]) -> None:
        self.attempts += 1
        assert self.worker is not None
        self.worker.abort()
        self.inner.close()
        self.inner.put(docs)


def _batch(tmp_path: Path) -> tuple[Batch, str]:
    path = tmp_path / "data" / "visitor" / "i03" / "mx1" / "mx1-1" / "raw" / "a.nxs"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        f.create_group("entry").attrs["NX_class"] = "NXentry"
    builder = DocumentBuilder(LayoutConfig(root=str(tmp_path / "data")), NameCache(), lambda: 1.0)
    doc = builder.build(str(path), os.lstat(path))
    return Batch(((Work(str(path), content=True, closed=True), doc),)), str(path)


def _worker(store: object, done: list[Done]) -> ExtractWorker:
    """A worker to start as the thread it is: its run() blocks SIGINT in the thread that
    runs it, which must not be pytest's own (every later subprocess would inherit it)."""
    settings = IndexerSettings(isolation="inline")
    return ExtractWorker(
        0,
        queue.Queue(),
        done.append,
        store,  # type: ignore[arg-type]
        lambda: Registry([Hdf5Indexer()], settings=settings),
        ExtractCounters(),
    )


def _run(worker: ExtractWorker, batch: Batch) -> None:
    """One batch through the worker's own thread, then its stop (None)."""
    worker.inbox.put(batch)
    worker.inbox.put(None)
    worker.start()
    worker.join(60)
    assert not worker.is_alive()


def test_a_worker_aborted_mid_put_stays_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batch, path = _batch(tmp_path)
    store = ClosedMidPut(open_store(f"sqlite:///{tmp_path}/c.db"))
    done: list[Done] = []
    worker = _worker(store, done)
    store.worker = worker
    with caplog.at_level(logging.DEBUG, logger="catalogd.daemon.extract"):
        _run(worker, batch)
    assert store.attempts == 1  # the put was made, and the closed store refused it
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == []
    assert any("dropped 1 documents while stopping" in r.getMessage() for r in caplog.records)
    assert done == [Done((), (), (path,))]


def test_a_running_worker_reports_a_store_that_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The other side: not stopping, a failed put is an error and the files come back."""
    batch, path = _batch(tmp_path)

    class Failing:
        def put(self, docs: list[FileDocument]) -> None:
            raise StoreError("the disk of the write spool /spool is full")

    done: list[Done] = []
    worker = _worker(Failing(), done)
    with caplog.at_level(logging.INFO, logger="catalogd.daemon.extract"):
        _run(worker, batch)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert messages == ["cannot store 1 documents: the disk of the write spool /spool is full"]
    assert [w.path for w in done[0].again] == [path] and done[0].stored == ()
