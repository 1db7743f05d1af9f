"""The worker pool: files spread over several processes, in order, each within its bounds;
and the reader's single pass (each object opened once, nothing left open)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import nexus_shapes as shapes
import pytest
from click.testing import CliRunner
from misbehaving_indexers import CrashingIndexer, SleepingIndexer

import indexers.reader as reader_module
from catalogd.cli import CliContext
from catalogd.cli.extract import command as extract_command
from indexers.base import ExtractResult
from indexers.hdf5 import Hdf5Indexer
from indexers.nexus import NexusIndexer
from indexers.registry import Registry, extract_inline
from indexers.settings import IndexerSettings
from indexers.worker import GRACE_S, ProcessExtractor, _can_fork, default_workers


def builtins() -> list[Any]:
    return [NexusIndexer(), Hdf5Indexer()]


def same(a: ExtractResult, b: ExtractResult) -> bool:
    return (a.path, a.ok, a.error, a.kind, a.entries, a.metadata, a.indexer) == (
        b.path,
        b.ok,
        b.error,
        b.kind,
        b.entries,
        b.metadata,
        b.indexer,
    )


@pytest.fixture
def mixed(tmp_path: Path) -> list[str]:
    """Scans, a detector master and its data files, and files that cannot be read."""
    paths = []
    for number in range(6):
        path = tmp_path / f"scan{number}.nxs"
        shapes.write_gda_scan(path, entries=1 + number % 3, scan_number=number)
        paths.append(str(path))
    written = shapes.write_nxmx(tmp_path, files=2)
    paths[2:2] = [written["master"], *written["data_files"]]
    paths.insert(5, shapes.write_bytes(tmp_path / "empty.h5", b""))
    paths.insert(7, shapes.write_hdf4_like(tmp_path / "old.h5"))
    paths.insert(1, str(tmp_path / "missing.nxs"))
    paths.append(shapes.write_bytes(tmp_path / "notes.txt", b"hello"))
    return paths


def test_default_worker_count() -> None:
    assert default_workers() == max(1, min(4, len(os.sched_getaffinity(0))))
    assert ProcessExtractor(builtins(), IndexerSettings()).size == default_workers()
    assert ProcessExtractor(builtins(), IndexerSettings(workers=3)).size == 3
    with pytest.raises(ValueError):
        IndexerSettings(workers=0)


def test_many_files_in_order_as_inline(mixed: list[str]) -> None:
    inline = [
        extract_inline(builtins(), path, IndexerSettings(isolation="inline")) for path in mixed
    ]
    with Registry(builtins(), settings=IndexerSettings(workers=2)) as registry:
        results = list(registry.extract_many(mixed))
        assert registry._process is not None and registry._process.started == 2
    assert [r.path for r in results] == mixed
    assert all(same(a, b) for a, b in zip(results, inline, strict=True))
    assert [r.ok for r in results].count(False) == 3


def test_inline_extract_many(mixed: list[str]) -> None:
    settings = IndexerSettings(isolation="inline")
    with Registry(builtins(), settings=settings) as registry:
        results = list(registry.extract_many(iter(mixed)))
    assert [r.path for r in results] == mixed


def test_a_stuck_file_in_a_batch_times_out_alone(tmp_path: Path) -> None:
    scans = []
    for number in range(6):
        path = tmp_path / f"scan{number}.nxs"
        shapes.write_gda_scan(path, entries=1, scan_number=number)
        scans.append(str(path))
    stuck = shapes.write_bytes(tmp_path / "x.sleep", b"zzz")
    paths = [*scans[:3], stuck, *scans[3:]]
    settings = IndexerSettings(timeout_s=0.5, workers=1)
    with Registry([SleepingIndexer(), *builtins()], settings=settings) as registry:
        registry.extract(scans[0])  # the worker is up before the clock starts
        started = time.monotonic()
        results = list(registry.extract_many(paths))
        elapsed = time.monotonic() - started
        assert registry._process is not None and registry._process.started == 2
    assert [r.path for r in results] == paths
    assert [r.ok for r in results] == [True, True, True, False, True, True, True]
    error = results[3].error
    assert error is not None and error.startswith("timed out")
    assert elapsed < 0.5 + GRACE_S + 10  # one bound, then a new worker for the rest


def test_a_crash_in_a_batch_fails_that_file_only(tmp_path: Path) -> None:
    scans = []
    for number in range(4):
        path = tmp_path / f"scan{number}.nxs"
        shapes.write_gda_scan(path, entries=1, scan_number=number)
        scans.append(str(path))
    crash = shapes.write_bytes(tmp_path / "x.crash", b"boom")
    paths = [scans[0], crash, *scans[1:]]
    with Registry([CrashingIndexer(), *builtins()], settings=IndexerSettings(workers=1)) as reg:
        results = list(reg.extract_many(paths))
    assert [r.ok for r in results] == [True, False, True, True, True]
    assert results[1].error == "the reader process died (SIGKILL) while reading this file"


def test_lines_made_by_the_workers_are_the_results_lines(tmp_path: Path) -> None:
    """extract_lines: the workers' lines, and the lines of files the pool failed (a
    crash), are each file's ExtractResult.to_json_line(), in order."""
    written = shapes.write_nxmx(tmp_path, files=2)
    scan = tmp_path / "scan.nxs"
    shapes.write_gda_scan(scan, entries=2, scan_number=7)
    crash = shapes.write_bytes(tmp_path / "x.crash", b"boom")
    paths = [written["master"], crash, *written["data_files"], str(scan), str(tmp_path / "no")]
    indexers = [CrashingIndexer(), *builtins()]
    settings = IndexerSettings(workers=2)
    with Registry(indexers, settings=settings) as registry:
        lines = list(registry.extract_lines(paths))
        results = list(registry.extract_many(paths))
    assert [(line.path, line.ok) for line in lines] == [(r.path, r.ok) for r in results]
    assert [line.ok for line in lines] == [True, False, True, True, True, False]
    for line, result in zip(lines, results, strict=True):
        assert json.loads(line.line) == json.loads(result.to_json_line())
    assert json.loads(lines[1].line)["error"].startswith("the reader process died")
    inline = IndexerSettings(isolation="inline")
    with Registry(builtins(), settings=inline) as registry:
        alone = [line.line for line in registry.extract_lines([paths[0], str(scan)])]
    assert alone == [lines[0].line, lines[4].line]


def test_stopping_early_leaves_the_registry_usable(mixed: list[str]) -> None:
    with Registry(builtins(), settings=IndexerSettings(workers=2)) as registry:
        results = registry.extract_many(mixed)
        first = next(results)
        results.close()  # workers with files in flight are stopped, not reused
        assert first.path == mixed[0]
        again = registry.extract(mixed[0])
        assert again.ok and same(again, first)


def test_concurrent_callers_share_the_pool(mixed: list[str]) -> None:
    outcomes: dict[int, list[ExtractResult]] = {}
    with Registry(builtins(), settings=IndexerSettings(workers=2)) as registry:

        def call(number: int) -> None:
            outcomes[number] = list(registry.extract_many(mixed[number::3]))

        threads = [threading.Thread(target=call, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert registry._process is not None and registry._process.started <= 2
    for number in range(3):
        assert [r.path for r in outcomes[number]] == mixed[number::3]


def test_workers_are_started_afresh_beside_threads(mixed: list[str]) -> None:
    """A process with other threads is never forked: its workers are new interpreters."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        settings = IndexerSettings(workers=1)
        assert not _can_fork(settings)
        with Registry(builtins(), settings=settings) as registry:
            results = list(registry.extract_many(mixed[:4]))
    finally:
        stop.set()
        thread.join()
    inline = IndexerSettings(isolation="inline")
    assert all(
        same(r, extract_inline(builtins(), p, inline))
        for r, p in zip(results, mixed[:4], strict=True)
    )


def test_cli_many_files_in_order(mixed: list[str]) -> None:
    outcome = CliRunner().invoke(extract_command, mixed, obj=CliContext(), catch_exceptions=False)
    lines = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert outcome.exit_code == 1
    assert [line["path"] for line in lines] == mixed
    assert [line["ok"] for line in lines].count(False) == 3


# -- the reader's single pass ------------------------------------------------------------------


def test_each_object_opened_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scan.nxs"
    shapes.write_gda_scan(path, entries=3)
    with h5py.File(path, "r") as f:
        objects: list[str] = []
        f.visit(objects.append)
        soft: list[str] = []
        f.visititems_links(
            lambda name, link: soft.append(name) if isinstance(link, h5py.SoftLink) else None
        )
    opened: list[str] = []
    real_open = reader_module.Reader._open

    def spy(reader: Any, group: Any, raw: bytes) -> Any:
        node = real_open(reader, group, raw)
        if node is not None:
            opened.append(h5py.h5i.get_name(node.oid).decode())
        return node

    monkeypatch.setattr(reader_module.Reader, "_open", spy)
    result = extract_inline(builtins(), str(path), IndexerSettings(isolation="inline"))
    assert result.ok and len(result.entries) == 3
    assert not [name for name, count in Counter(opened).items() if count > 1]
    assert len(opened) <= len(objects) + len(soft)


def test_nothing_left_open(tmp_path: Path) -> None:
    written = shapes.write_nxmx(tmp_path, files=3, missing=(3,))
    settings = IndexerSettings(isolation="inline")
    for path in [written["master"], *written["data_files"][:2]]:
        assert extract_inline(builtins(), path, settings).ok
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == 0


def test_closing_stops_a_call_in_progress(tmp_path: Path) -> None:
    """Closing the registry (the daemon stopping) kills the workers at once: the call
    reading gives the files it has not read ``ok: false``, and the registry can start
    again."""
    scan = tmp_path / "scan.nxs"
    shapes.write_gda_scan(scan, entries=1)
    stuck = shapes.write_bytes(tmp_path / "x.sleep", b"zzz")
    paths = [str(scan), stuck, str(scan), str(scan)]
    settings = IndexerSettings(workers=1)
    registry = Registry([SleepingIndexer(), *builtins()], settings=settings)
    outcome: list[ExtractResult] = []
    first = threading.Event()

    def read() -> None:
        for result in registry.extract_many(paths):
            outcome.append(result)
            first.set()

    reading = threading.Thread(target=read)
    reading.start()
    assert first.wait(60)  # the stuck file is being read now
    time.sleep(0.2)
    started = time.monotonic()
    registry.close()
    reading.join(20)
    assert not reading.is_alive() and time.monotonic() - started < 10
    assert [r.path for r in outcome] == paths
    assert outcome[0].ok
    assert [r.error for r in outcome[1:]] == ["the reader processes were stopped"] * 3
    with registry:
        assert registry.extract(str(scan)).ok


def test_a_call_inside_another_on_the_same_thread(mixed: list[str]) -> None:
    """Reading a file while iterating over another call's results (same thread, every
    worker taken) does not wait for the outer call forever."""
    with Registry(builtins(), settings=IndexerSettings(workers=1)) as registry:
        seen = []
        for result in registry.extract_many(mixed[:3]):
            inner = registry.extract(result.path)
            seen.append(same(inner, result))
    assert seen == [True, True, True]
