"""What the reliability tests measured, kept for ``scripts/reliability-table``.

Each fault test, bad-input test and fuzz test asks for the :func:`reliability` fixture
and records its measured outcome: the load it held, the fault it survived, how many
files were expected, indexed, extracted twice and lost, and how long recovery took.
The record is written as one JSON file per test into ``$RELIABILITY_DIR`` (when set,
as CI does before rendering ``docs/reliability.md``) or else into pytest's cache
(``.pytest_cache/d/reliability``), with the run's date, commit and machine, and
whether the test passed (so a failed run can never render as "nothing lost").

The variable is not ``CATALOGD_``-prefixed on purpose: those are the daemon's settings
and every test starts with them scrubbed.

This module also drives ``catalogd run`` as operators run it (:class:`DaemonProcess`):
a real process with its own status file, killed or stopped with real signals; and
gives a test a small disk of its own to fill (:func:`tmpfs`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ops_daemon import CATALOGD, CatalogdProcess
from ops_daemon import wait_for as wait_for  # the reliability tests import it from here

#: Where records go when set (else pytest's cache).
RESULTS_ENV = "RELIABILITY_DIR"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    """One test's measured outcome (one row of the table)."""

    group: str  # "fault", "bad input" or "fuzz"
    name: str
    load: str = ""
    fault: str = ""
    expected: int | None = None
    indexed: int | None = None
    duplicated: int | None = None
    lost: int | None = None
    recover_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Collects one test's outcome; written when the test ends."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.outcome: Outcome | None = None

    def record(self, outcome: Outcome) -> Outcome:
        self.outcome = outcome
        return outcome


def run_info() -> dict[str, Any]:
    """Which run produced the figures: date, commit (and whether the tree was clean), machine."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30
            )
        except OSError:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, {cpu}",
        "python": platform.python_version(),
    }


def results_dir(config: pytest.Config) -> Path:
    explicit = os.environ.get(RESULTS_ENV)
    if explicit:
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
        return path
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    return Path(cache.mkdir("reliability")) if cache is not None else Path(".reliability")


_RUN: dict[str, Any] = {}


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    """A :class:`Recorder` for the test; its outcome is saved when the test ends."""
    recorder = Recorder(request.node.nodeid)
    failed_before = request.session.testsfailed
    started = time.monotonic()
    yield recorder
    if recorder.outcome is None:
        return
    if not _RUN:
        _RUN.update(run_info())
    # The call phase's report is counted before fixtures are torn down.
    passed = request.session.testsfailed == failed_before
    data = {
        "test": recorder.nodeid,
        "passed": passed,
        "duration_s": round(time.monotonic() - started, 2),
        "run": _RUN,
        **asdict(recorder.outcome),
    }
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", recorder.nodeid) + ".json"
    (results_dir(request.config) / name).write_text(json.dumps(data, indent=1) + "\n")


# -- driving catalogd run ------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every living descendant of ``pid``."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class DaemonProcess(CatalogdProcess):
    """``catalogd run`` on ``tmp/data`` (or ``root``) with the SQLite store
    ``tmp/catalog.db`` (or the store ``url``); its status file in ``tmp/state``."""

    def __init__(
        self,
        tmp: Path,
        *,
        root: Path | None = None,
        url: str | None = None,
        env: dict[str, str] | None = None,
        obey_modes: bool = False,
    ) -> None:
        self.tmp = tmp
        self.root = root or tmp / "data"
        self.state = tmp / "state"
        self.db = tmp / "catalog.db"
        self.url = url or f"sqlite:///{self.db}"
        self.log = tmp / f"daemon-{time.monotonic_ns()}.log"
        (tmp / "none.toml").write_text("")
        full = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
        full.update(
            CATALOGD_CONFIG=str(tmp / "none.toml"),
            CATALOGD_DAEMON_QUIET_PERIOD_S="0.3",
            CATALOGD_DAEMON_EXTRACT_WORKERS="1",
            CATALOGD_DAEMON_STATE_DIR=str(self.state),
            CATALOGD_DAEMON_STOP_TIMEOUT_S="10",
        )
        full.update(env or {})
        self.stop_timeout_s = float(full["CATALOGD_DAEMON_STOP_TIMEOUT_S"])
        status = self.state / "status.json"
        if status.exists():
            status.unlink()
        args = [*CATALOGD, "-v", "run", "--root", str(self.root), "--store", self.url]
        if obey_modes:  # root without the capabilities to read past file modes
            args = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *args]
        self.launch(args, full)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def idle(self) -> bool:
        status = self.status()
        return status.get("pending") == 0 and status.get("in_flight") == 0


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``: ``256k``, ``1m``) mounted on the new
    directory ``mount``, lazily unmounted afterwards."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def sqlite_integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` of a database, opened read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    return "; ".join(str(r[0]) for r in rows)


def spooled(path: Path) -> int:
    """The writes waiting in a spool file (0 when there is none, or it cannot be read)."""
    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT count(*) FROM ops").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def count_example(recorder: Recorder, target: str, inputs: str) -> None:
    """Count one example of a hypothesis test of ``target`` (the recorder is shared by
    the test's examples)."""
    examples = (recorder.outcome.expected or 0) + 1 if recorder.outcome else 1
    recorder.record(
        Outcome(
            group="fuzz",
            name=target,
            load=f"{examples:,} generated inputs: {inputs}",
            expected=examples,
            indexed=examples,
        )
    )
