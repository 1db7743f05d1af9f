"""``catalogd run`` as operators run it: a process, signals, kill -9 and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ops_daemon import CATALOGD, CatalogdProcess, wait_for, write_nexus

from catalogd.document import document_id
from catalogd.store import open_store
from catalogd.store.base import Store


class Proc(CatalogdProcess):
    def __init__(self, tmp: Path, *extra: str, config: Path | None = None) -> None:
        self.tmp = tmp
        self.root = tmp / "data"
        self.state = tmp / "state"
        self.url = f"sqlite:///{tmp}/catalog.db"
        self.log = tmp / f"daemon-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
        env.update(
            CATALOGD_DAEMON_QUIET_PERIOD_S="0.3",
            CATALOGD_DAEMON_EXTRACT_WORKERS="1",
            CATALOGD_DAEMON_STATE_DIR=str(self.state),
            CATALOGD_DAEMON_STOP_TIMEOUT_S="10",
        )
        if config is None:
            env["CATALOGD_CONFIG"] = str(tmp / "none.toml")
            (tmp / "none.toml").write_text("")
        args = [*CATALOGD, "-v"]
        if config is not None:
            args += ["--config", str(config)]
        args += ["run", "--root", str(self.root), "--store", self.url, *extra]
        self.launch(args, env)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


def reader(tmp: Path) -> Store:
    return open_store(f"sqlite:///{tmp}/catalog.db")


def test_sigterm_drains_and_stops_cleanly(tree: Path) -> None:
    proc = Proc(tree)
    try:
        assert "watching" in proc.output()
        files = [tree / "data" / f"f{i}.nxs" for i in range(10)]
        for i, path in enumerate(files):
            write_nexus(path, f"t{i}")
        started = time.monotonic()
        assert proc.terminate() == 0
        assert time.monotonic() - started < 15.0
        status = proc.last_status()
        assert status["stopped_cleanly"] is True and status["watching"] is False
    finally:
        proc.kill()
    # Whatever was not finished is caught up at the next start.
    again = Proc(tree)
    try:
        with reader(tree) as store:
            wait_for(lambda: all(store.get(document_id(str(p))) for p in files), "every file")
    finally:
        assert again.terminate() == 0


def test_kill_9_and_restart_catches_up_without_duplicates_or_re_reading(tree: Path) -> None:
    root = tree / "data"
    first = Proc(tree)
    a = [root / f"a{i}.nxs" for i in range(20)]
    b = [root / f"b{i}.nxs" for i in range(20)]
    try:
        for path in a:
            write_nexus(path, path.stem)
        with reader(tree) as store:
            wait_for(lambda: all(store.get(document_id(str(p))) for p in a), "the first files")
        for path in b:
            write_nexus(path, path.stem)
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
    # While it is down: a change, a delete, new files.
    changed, dropped = a[0], a[1]
    write_nexus(changed, "changed")
    dropped.unlink()
    c = [root / f"c{i}.nxs" for i in range(5)]
    for path in c:
        write_nexus(path, path.stem)
    with reader(tree) as store:
        before = {doc.path: doc for doc in store.iter_documents()}
    expected = sorted(str(p) for p in root.iterdir())
    second = Proc(tree)
    try:
        with reader(tree) as store:

            def caught_up() -> bool:
                docs = {d.path: d for d in store.iter_documents()}
                new = docs.get(str(changed))
                return sorted(docs) == expected and new is not None and new.title == "changed"

            wait_for(caught_up, "the catalogue to match the disk")
            assert store.count() == len(expected)  # one document per file
    finally:
        assert second.terminate() == 0
    status = second.last_status()
    unchanged = [p for p in expected if p in before and p != str(changed)]
    # Files stored before the kill were not read again; the rest were read once.
    assert status["extracted"] == len(expected) - len(unchanged)
    with reader(tree) as store:
        for name in unchanged:
            doc = store.get(document_id(name))
            assert doc is not None and doc.indexed_at == before[name].indexed_at


def test_sighup_reloads_the_configuration(tree: Path) -> None:
    config = tree / "catalogd.toml"
    config.write_text("[daemon]\nwriter_timeout_s = 60.0\n")
    proc = Proc(tree, config=config)
    try:
        config.write_text("[daemon]\nwriter_timeout_s = 30.0\npoll_only = true\n")
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in proc.output(), "the reload")
        assert "daemon.poll_only changed: takes effect at the next start" in proc.output()
        config.write_text("[daemon]\nwriter_timeout_s = 'not a number'\n")
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded" in proc.output(), "the refusal")
        path = tree / "data" / "after.nxs"
        write_nexus(path, "still running")
        with reader(tree) as store:
            wait_for(lambda: store.get(document_id(str(path))) is not None, "a file indexed")
    finally:
        assert proc.terminate() == 0


def test_run_refuses_a_missing_root(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CATALOGD, "run", "--root", str(tmp_path / "nope"), "--store", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CATALOGD_CONFIG": ""},
    )
    assert result.returncode == 2
    assert "not a directory" in result.stderr
