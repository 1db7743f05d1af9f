"""The daemon's metrics and listener, and ``catalogd status``, against a running
``catalogd run``: counters move during the reconcile of a tree and as files arrive."""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from ops_daemon import CATALOGD, DaemonProcess, clean_env, total, value, wait_for, write_nexus
from prometheus_client import CollectorRegistry, generate_latest

from catalogd.cli import main
from catalogd.daemon.http import HealthListener
from catalogd.document import DocumentBuilder, FileDocument
from catalogd.errors import StoreUnavailable
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig
from catalogd.metrics import DaemonMetrics, MeteredStore, failure_reason
from catalogd.store.base import Store
from catalogd.store.memory import MemoryStore

VISIT = ("visitor", "id11", "p1", "20240101", "raw")
PLAIN_FILES = 3000
NEXUS_FILES = 60


# -- pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("timed out: the file took longer than 30 s", "timeout"),
        ("the memory bound (4096 MiB) was exceeded reading this file", "memory"),
        ("not an HDF5 file despite the suffix .h5: a text file", "not_hdf5"),
        ("the reader process exited (status -9) while reading this file", "reader_crashed"),
        ("internal error in indexer nexus: KeyError: 'x'", "internal"),
        ("/data/visitor/x.h5: Permission denied", "unreadable"),
        ("truncated file: eof = 2048", "invalid"),
        (None, "invalid"),
    ],
)
def test_failure_reasons_are_a_small_fixed_set(error: str | None, reason: str) -> None:
    assert failure_reason(error) == reason


def test_a_failure_label_never_carries_the_message() -> None:
    metrics = DaemonMetrics()
    metrics.extraction_failed("/data/visitor/secret-proposal/x.h5: Permission denied")
    page = generate_latest(metrics.registry).decode()
    assert "secret-proposal" not in page
    assert 'catalogd_extraction_failures_total{reason="unreadable"} 1.0' in page


def test_the_metered_store_delegates_every_store_method() -> None:
    """A method added to Store later must be delegated too, or the daemon would use
    the base class's default instead of the real store's."""
    public = {name for name in dir(Store) if not name.startswith("_")}
    for name in public:
        if callable(getattr(Store, name)):
            assert name in MeteredStore.__dict__, f"MeteredStore does not delegate {name}"
            assert inspect.signature(getattr(MeteredStore, name)) == inspect.signature(
                getattr(Store, name)
            ), name


class _DownStore(MemoryStore):
    def put(self, docs: Iterable[FileDocument]) -> None:
        raise StoreUnavailable("the cluster is down")


def test_the_metered_store_times_writes_and_counts_failures() -> None:
    metrics = DaemonMetrics()
    store = MeteredStore(_DownStore(), metrics)
    store.delete(["a", "b"])
    store.flush()
    with pytest.raises(StoreUnavailable):
        store.put([_any_document()])
    reg = metrics.registry
    for operation in ("delete", "flush", "put"):
        count = reg.get_sample_value(
            "catalogd_store_write_duration_seconds_count", {"operation": operation}
        )
        assert count == 1.0, operation
    assert reg.get_sample_value("catalogd_store_write_errors_total", {"operation": "put"}) == 1.0
    errors = reg.get_sample_value("catalogd_store_write_errors_total", {"operation": "delete"})
    assert errors is None


def _any_document() -> FileDocument:
    builder = DocumentBuilder(LayoutConfig(root="/"), NameCache(), lambda: 0.0)
    return builder.build(__file__, os.lstat(__file__))


def test_metric_names_carry_the_prefix_and_their_unit() -> None:
    registry = CollectorRegistry()
    DaemonMetrics(registry)
    names = {metric.name for metric in registry.collect()}
    assert all(name.startswith("catalogd") for name in names)
    for expected in (
        "catalogd_events_received",
        "catalogd_queue_depth",
        "catalogd_files_indexed",
        "catalogd_extraction_failures",
        "catalogd_open_violations",
        "catalogd_store_write_duration_seconds",
        "catalogd_spool_documents",
        "catalogd_last_reconcile_duration_seconds",
        "catalogd_last_reconcile_age_seconds",
    ):
        assert expected in names


# -- a running daemon --------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A visit with plain files, NeXus files and one file that is not HDF5 at all."""
    visit = tmp_path.joinpath("data", *VISIT)
    visit.mkdir(parents=True)
    for i in range(PLAIN_FILES):
        (visit / f"frame_{i:05d}.txt").write_text("x")
    for i in range(NEXUS_FILES):
        write_nexus(visit / f"scan_{i:03d}.nxs", f"scan {i}")
    (visit / "broken.h5").write_text("this is not HDF5")
    return tmp_path


@pytest.fixture
def daemon(tree: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tree)
    yield proc
    proc.kill()


def test_counters_move_during_the_reconcile_and_as_files_arrive(
    tree: Path, daemon: DaemonProcess
) -> None:
    expected = PLAIN_FILES + NEXUS_FILES + 1
    seen: list[float] = []

    def indexed() -> float:
        samples = daemon.metrics()
        seen.append(value(samples, "catalogd_files_indexed_total"))
        return seen[-1]

    wait_for(lambda: indexed() >= expected, f"{expected} files indexed")
    # Scraped from the start of the reconcile: the counter moved while we watched, and
    # never backwards.
    assert seen == sorted(seen)
    assert seen[0] < expected and len(set(seen)) >= 2, seen
    samples = daemon.metrics()
    assert value(samples, "catalogd_events_received_total", source="reconcile") >= expected
    assert value(samples, "catalogd_files_extracted_total") >= NEXUS_FILES + 1
    assert value(samples, "catalogd_extraction_failures_total", reason="not_hdf5") == 1.0
    assert value(samples, "catalogd_store_write_duration_seconds_count", operation="put") >= 1
    wait_for(
        lambda: value(daemon.metrics(), "catalogd_last_reconcile_duration_seconds") >= 0,
        "the reconcile to finish",
    )
    samples = daemon.metrics()
    assert value(samples, "catalogd_reconciles_total", complete="true") >= 1
    assert 0 <= value(samples, "catalogd_last_reconcile_age_seconds") < 60
    assert value(samples, "catalogd_ready") == 1.0
    assert value(samples, "catalogd_spool_documents") == 0.0
    # The tree breaks the policy (its owners and groups are not the beamline's):
    # the open violations are counted by rule.
    wait_for(lambda: total(daemon.metrics(), "catalogd_open_violations") > 0, "violations counted")
    # New files: the event source's counter and the indexed files move.
    before = daemon.metrics()
    kernel_events = total(before, "catalogd_events_received_total") - value(
        before, "catalogd_events_received_total", source="reconcile"
    )
    visit = tree.joinpath("data", *VISIT)
    for i in range(5):
        write_nexus(visit / f"new_{i}.nxs", f"new {i}")
    goal = value(before, "catalogd_files_indexed_total") + 5
    wait_for(lambda: value(daemon.metrics(), "catalogd_files_indexed_total") >= goal, "new files")
    after = daemon.metrics()
    kernel_after = total(after, "catalogd_events_received_total") - value(
        after, "catalogd_events_received_total", source="reconcile"
    )
    assert kernel_after > kernel_events
    # No path of the tree shows on the page.
    status, page = daemon.get("/metrics")
    assert status == 200 and str(tree).encode() not in page


def test_health_and_readiness_endpoints(daemon: DaemonProcess) -> None:
    status, body = daemon.get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    wait_for(lambda: json.loads(daemon.get("/readyz")[1])["status"] == "ready", "ready")
    status, body = daemon.get("/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["watching"] is True and ready["store"] == {"state": "ok"}
    assert daemon.get("/nothing-here")[0] == 404
    assert daemon.terminate() == 0


def test_catalogd_status_reads_a_running_daemon(
    tree: Path, daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = daemon.base_url()
    assert url is not None
    expected = PLAIN_FILES + NEXUS_FILES + 1
    wait_for(
        lambda: value(daemon.metrics(), "catalogd_files_indexed_total") >= expected, "indexing"
    )
    wait_for(lambda: daemon.get("/readyz")[0] == 200, "ready")
    config = tree / "none.toml"
    assert main(["--config", str(config), "status", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "ready" in out and "files indexed" in out and str(expected) in out
    assert "not_hdf5=1" in out
    assert main(["--config", str(config), "status", "--url", url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ready"] is True and data["readyz"]["status"] == "ready"
    assert data["metrics"]["files_indexed"] >= expected
    assert data["metrics"]["extraction_failures"] == {"not_hdf5": 1.0}
    assert data["metrics"]["info"]["version"]
    # Without --url: the address the daemon wrote into [daemon] state_dir.
    with_state = tree / "with-state.toml"
    with_state.write_text(f'[daemon]\nstate_dir = "{daemon.state}"\n')
    assert main(["--config", str(with_state), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["url"] == url
    # Stopped: not reachable, 69.
    assert daemon.terminate() == 0
    assert main(["--config", str(config), "status", "--url", url]) == 69
    assert "cannot reach the daemon" in capsys.readouterr().err


def test_catalogd_status_exits_1_when_the_daemon_is_not_ready(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = DaemonMetrics()
    metrics.set_store_health({"state": "degraded", "spooled": 12, "oldest_age_s": 40.0})
    degraded = {
        "status": "degraded",
        "store": {"state": "degraded", "spooled": 12, "error": "es1:9200 refused"},
    }
    listener = HealthListener(
        "127.0.0.1:0",
        metrics.registry,
        health=lambda: (True, {"status": "ok"}),
        ready=lambda: (False, degraded),
    )
    listener.start()
    try:
        (tmp_path / "none.toml").touch()
        url = f"http://{listener.address}"
        assert main(["--config", str(tmp_path / "none.toml"), "status", "--url", url]) == 1
        out = capsys.readouterr().out
        assert "degraded" in out and "12" in out and "es1:9200 refused" in out
    finally:
        listener.close()


def test_the_listener_can_be_disabled(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "data").mkdir()
    (tmp_path / "none.toml").touch()
    env = clean_env(
        CATALOGD_CONFIG=str(tmp_path / "none.toml"),
        CATALOGD_DAEMON_LISTEN="",
        CATALOGD_DAEMON_STATE_DIR=str(tmp_path / "state"),
    )
    proc = subprocess.Popen(
        [*CATALOGD, "run", "--root", str(tmp_path / "data"), "--store", "memory://"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status_file = tmp_path / "state" / "status.json"
        wait_for(status_file.exists, "status.json")
        assert json.loads(status_file.read_text())["listen"] == ""
    finally:
        proc.terminate()
        proc.wait(30)
        assert proc.stderr is not None
        proc.stderr.close()


def test_reconcile_age_is_nan_before_the_first_reconcile() -> None:
    metrics = DaemonMetrics()
    assert math.isnan(metrics.registry.get_sample_value("catalogd_last_reconcile_age_seconds") or 0)
    metrics.reconciled(duration_s=1.5, complete=True, whole_root=True)
    age = metrics.registry.get_sample_value("catalogd_last_reconcile_age_seconds")
    assert age is not None and 0 <= age < 5
