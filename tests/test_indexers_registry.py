"""The registry, the worker process that bounds each file, SWMR writers and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nexus_shapes as shapes
import numpy as np
import pytest
from click.testing import CliRunner
from misbehaving_indexers import BrokenIndexer, CrashingIndexer, GreedyIndexer, SleepingIndexer

from catalogd.cli import CliContext
from catalogd.cli.extract import command as extract_command
from catalogd.errors import ConfigError
from indexers.base import find_hdf5_signature, probe_file
from indexers.hdf5 import Hdf5Indexer
from indexers.nexus import NexusIndexer
from indexers.registry import Registry
from indexers.settings import IndexerSettings


def builtins() -> list[object]:
    return [NexusIndexer(), Hdf5Indexer()]


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    path = tmp_path / "scan.nxs"
    shapes.write_gda_scan(path, entries=2)
    return path


# -- the registry -----------------------------------------------------------------------------


def test_entry_points_find_the_builtins() -> None:
    with Registry.from_entry_points() as registry:
        assert registry.names == ("nexus", "hdf5")  # by priority
    only = IndexerSettings(enabled=("hdf5",))
    with Registry.from_entry_points(settings=only) as registry:
        assert registry.names == ("hdf5",)
    with pytest.raises(ConfigError, match="not installed: tiff"):
        Registry.from_entry_points(settings=IndexerSettings(enabled=("tiff",)))


def test_explicit_list_and_protocol_check() -> None:
    registry = Registry([Hdf5Indexer(), SleepingIndexer()])
    assert registry.names == ("sleeper", "hdf5")
    with pytest.raises(ConfigError, match="not an indexer"):
        Registry([object()])  # type: ignore[list-item]


def test_internal_errors_become_results(tmp_path: Path) -> None:
    path = shapes.write_bytes(tmp_path / "x.broken", b"data")
    settings = IndexerSettings(isolation="inline")
    with Registry([BrokenIndexer()], settings=settings) as registry:
        result = registry.extract(path)
    assert not result.ok
    assert result.error == "internal error in indexer broken: ZeroDivisionError: oops"


def test_signature_found_by_content_at_userblock_offsets(tmp_path: Path) -> None:
    for userblock in (512, 1024, 4096):
        path = tmp_path / f"ub{userblock}.dat"  # a suffix that says nothing
        shapes.write_with_userblock(path, userblock=userblock)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert find_hdf5_signature(fd, os.fstat(fd).st_size) == userblock
        finally:
            os.close(fd)
        assert probe_file(str(path)).hdf5_offset == userblock
    not_at_power_of_two = shapes.write_bytes(
        tmp_path / "odd.h5", b"\x00" * 700 + b"\x89HDF\r\n\x1a\n" + b"\x00" * 100
    )
    assert probe_file(not_at_power_of_two).hdf5_offset is None


# -- the worker process --------------------------------------------------------------------


def test_process_isolation_extracts_like_inline(scan: Path) -> None:
    with Registry(builtins()) as registry:  # type: ignore[arg-type]
        isolated = registry.extract(str(scan))
    with Registry(builtins(), settings=IndexerSettings(isolation="inline")) as registry:  # type: ignore[arg-type]
        inline = registry.extract(str(scan))
    assert isolated.ok and isolated.entries == inline.entries
    assert isolated.metadata == inline.metadata


def test_time_bound_kills_a_stuck_reader(tmp_path: Path, scan: Path) -> None:
    stuck = shapes.write_bytes(tmp_path / "x.sleep", b"zzz")
    settings = IndexerSettings(timeout_s=0.5)
    with Registry([SleepingIndexer(), *builtins()], settings=settings) as registry:  # type: ignore[list-item]
        registry.extract(str(scan))  # the worker is up before the clock starts
        started = time.monotonic()
        result = registry.extract(stuck)
        elapsed = time.monotonic() - started
        assert not result.ok and result.error is not None
        assert result.error.startswith("timed out")
        assert elapsed < 0.5 + 2.0 + 2.0
        after = registry.extract(str(scan))  # a new worker takes over
        assert after.ok and after.entries[0]["title"] == "i22 scan 12345 part 1"


def test_time_bound_on_a_slow_file(tmp_path: Path) -> None:
    path = tmp_path / "attrs.h5"
    shapes.write_many_attributes(path, count=100_000)
    settings = IndexerSettings(isolation="inline", timeout_s=0.01, max_attributes=1_000_000)
    with Registry(builtins(), settings=settings) as registry:  # type: ignore[arg-type]
        result = registry.extract(str(path))
    assert not result.ok
    assert result.error == "timed out: gave up after the time bound of 0.01 s"


def test_a_crashing_reader_is_replaced(tmp_path: Path, scan: Path) -> None:
    crash = shapes.write_bytes(tmp_path / "x.crash", b"boom")
    with Registry([CrashingIndexer(), *builtins()]) as registry:  # type: ignore[list-item]
        result = registry.extract(crash)
        assert not result.ok
        assert result.error == "the reader process died (SIGKILL) while reading this file"
        assert registry.extract(str(scan)).ok


def test_memory_bound(tmp_path: Path) -> None:
    greedy = shapes.write_bytes(tmp_path / "x.greedy", b"more")
    settings = IndexerSettings(max_memory_mb=1024)
    with Registry([GreedyIndexer()], settings=settings) as registry:
        result = registry.extract(greedy)
    assert not result.ok
    assert result.error == "the memory bound (1024 MiB) was exceeded reading this file"


# -- files still being written ---------------------------------------------------------------


def test_swmr_file_open_by_its_writer(tmp_path: Path) -> None:
    path = tmp_path / "live.nxs"
    writer = h5py.File(path, "w", libver="latest")
    try:
        entry = shapes.nx_group(writer, "entry", "NXentry")
        shapes.put_string(entry, "title", "acquiring", "vlen-str")
        shapes.put_string(entry, "start_time", "2024-03-01T10:00:00Z", "vlen-str")
        data = shapes.nx_group(entry, "data", "NXdata")
        frames = data.create_dataset("data", shape=(0, 8, 8), maxshape=(None, 8, 8), dtype="u2")
        writer.swmr_mode = True
        frames.resize((3, 8, 8))
        frames[:] = 1
        frames.flush()
        with Registry(builtins()) as registry:  # type: ignore[arg-type]
            first = registry.extract(str(path))
            assert first.ok, first.error
            assert first.entries[0]["title"] == "acquiring"
            assert first.metadata["structure"]["swmr"] is True
            assert first.entries[0]["data"][0]["shape"] == [3, 8, 8]
            frames.resize((5, 8, 8))
            frames[3:] = np.full((2, 8, 8), 2)
            frames.flush()
            second = registry.extract(str(path))
            assert second.entries[0]["data"][0]["shape"] == [5, 8, 8]
            # The writer is never blocked: it goes on writing while we read.
            frames.resize((6, 8, 8))
            frames.flush()
    finally:
        writer.close()


def test_file_open_by_a_plain_writer(tmp_path: Path) -> None:
    path = tmp_path / "open.nxs"
    writer = h5py.File(path, "w")
    try:
        entry = shapes.nx_group(writer, "entry", "NXentry")
        shapes.put_string(entry, "title", "not closed yet", "vlen-str")
        writer.flush()
        with Registry(builtins()) as registry:  # type: ignore[arg-type]
            result = registry.extract(str(path))
        assert result.ok and result.entries[0]["title"] == "not closed yet"
    finally:
        writer.close()


def test_latest_format_writer_without_swmr_is_retried_then_reported(tmp_path: Path) -> None:
    path = tmp_path / "busy.nxs"
    writer = h5py.File(path, "w", libver="latest")
    try:
        shapes.nx_group(writer, "entry", "NXentry")
        writer.flush()
        settings = IndexerSettings(retries=2, retry_delay_s=0.05)
        with Registry(builtins(), settings=settings) as registry:  # type: ignore[arg-type]
            result = registry.extract(str(path))
        assert not result.ok and result.error is not None
        assert "open for writing by another program" in result.error
        assert "after 3 attempts" in result.error
    finally:
        writer.close()


# -- the CLI -----------------------------------------------------------------------------------


def run_cli(args: list[str]) -> tuple[int, list[dict[str, object]], str]:
    runner = CliRunner()
    outcome = runner.invoke(extract_command, args, obj=CliContext(), catch_exceptions=False)
    lines = [json.loads(line) for line in outcome.stdout.splitlines() if line.strip()]
    return outcome.exit_code, lines, outcome.stderr


def test_cli_all_read(tmp_path: Path, scan: Path) -> None:
    other = shapes.write_bytes(tmp_path / "notes.txt", b"hello")
    code, lines, _ = run_cli([str(scan), other])
    assert code == 0
    assert [line["path"] for line in lines] == [str(scan), other]
    first = lines[0]
    assert set(first) >= {"path", "ok", "error", "kind", "entries", "structure", "links"}
    assert first["ok"] is True and first["error"] is None and first["kind"] == "nexus"
    entries = first["entries"]
    assert isinstance(entries, list) and entries[0]["title"] == "i22 scan 12345 part 1"
    for key in (
        "name",
        "title",
        "start_time",
        "end_time",
        "definition",
        "experiment_identifier",
        "program_name",
        "sample",
        "instrument",
        "users",
    ):
        assert key in entries[0]
    assert lines[1] == {
        "path": other,
        "ok": True,
        "error": None,
        "kind": "other",
        "entries": [],
        "indexer": None,
    }


def test_cli_some_unreadable(tmp_path: Path, scan: Path) -> None:
    bad = shapes.write_bytes(tmp_path / "bad.h5", b"")
    code, lines, _ = run_cli([str(scan), bad, str(tmp_path / "missing.nxs")])
    assert code == 1
    assert [line["ok"] for line in lines] == [True, False, False]
    assert lines[2]["error"] == "no such file"


def test_cli_usage() -> None:
    code, lines, stderr = run_cli([])
    assert code == 2 and lines == []
    assert "Missing argument" in stderr


def test_cli_process(tmp_path: Path, scan: Path) -> None:
    """The real ``catalogd`` entry point in its own process, with the command added."""
    bad = shapes.write_hdf4_like(tmp_path / "old.h5")
    code = (
        "import sys\n"
        "from catalogd.cli import cli, main\n"
        "from catalogd.cli import extract\n"
        "if 'extract' not in cli.commands:\n"
        "    cli.add_command(extract.command)\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "extract", str(scan), bad],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["ok"] for line in lines] == [True, False]
    assert "HDF4" in lines[1]["error"]
    assert "Traceback" not in done.stderr
