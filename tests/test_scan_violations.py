"""``catalogd scan`` polices (issue 13.1): the violations a scan finds are what an
auditor's ``GET /api/v1/violations`` lists, and a scan after mending resolves them.

On the real SQLite store (through the ``catalogd scan`` command) and on a real
Elasticsearch node (through the Scanner). The tree is owned by root, so its proposal
directories and files break the default policy where the test plants it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import AUDREY, Clock, TestClient, directory, settings
from es_node import es, es_node, prefix  # noqa: F401 - fixtures

from api.app import create_app
from catalogd.cli import main
from catalogd.layout import LayoutConfig
from catalogd.policy import rules as R
from catalogd.policy import walker
from catalogd.scan import Scanner
from catalogd.store.base import Store
from catalogd.store.memory import MemoryStore
from catalogd.store.sqlite import SQLiteStore
from catalogd.violations import ViolationState

VISIT = "visitor/biomax/20170251/2017112208"


def plant(root: Path) -> tuple[Path, Path]:
    raw = root / VISIT / "raw"
    raw.mkdir(parents=True)
    (root / VISIT / "process").mkdir()
    public = raw / "public.h5"
    public.write_bytes(b"x")
    os.chmod(public, 0o644)  # readable by others: DP005
    open_dir = raw / "scan_1"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)  # writable by others, no setgid
    return public, open_dir


def open_violations(store: Store) -> set[tuple[str, str]]:
    app = create_app(settings(), store, directory=directory(), clock=Clock())
    with TestClient(app, client=("192.0.2.10", 50000)) as http:
        response = http.get("/api/v1/violations", headers=AUDREY)
        assert response.status_code == 200
        return {(v["path"], v["rule"]) for v in response.json()["items"]}


def resolved(store: Store) -> set[tuple[str, str]]:
    app = create_app(settings(), store, directory=directory(), clock=Clock())
    with TestClient(app, client=("192.0.2.10", 50000)) as http:
        response = http.get("/api/v1/violations", headers=AUDREY, params={"state": "resolved"})
        assert response.status_code == 200
        return {(v["path"], v["rule"]) for v in response.json()["items"]}


def test_catalogd_scan_records_violations_and_resolves_them_when_mended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    public, open_dir = plant(root)
    db = tmp_path / "catalog.db"
    monkeypatch.setenv("CATALOGD_WATCH_ROOT", str(root))
    url = f"sqlite:///{db}"
    assert main(["scan", str(root), "--store", url, "-q"]) == 0
    with SQLiteStore(str(db)) as store:
        found = open_violations(store)
    planted = {
        (str(public), R.OTHER_ACCESS),
        (str(open_dir), R.OTHER_ACCESS),
        (str(open_dir), R.SETGID),
    }
    assert planted <= found

    os.chmod(public, 0o640)
    os.chmod(open_dir, 0o2770)
    assert main(["scan", str(root), "--store", url, "-q"]) == 0
    with SQLiteStore(str(db)) as store:
        after = open_violations(store)
        gone = resolved(store)
    assert not after & planted
    assert planted <= gone
    # what was not mended (the groups, which do not exist here) stays open
    assert after == found - planted


def scan(store: Store, root: Path) -> None:
    Scanner(store, LayoutConfig(root=str(root))).scan(str(root))


@pytest.fixture
def es_root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def test_scan_records_violations_on_elasticsearch(es: Store, es_root: Path) -> None:  # noqa: F811
    public, open_dir = plant(es_root)
    scan(es, es_root)
    found = open_violations(es)
    assert {(str(public), R.OTHER_ACCESS), (str(open_dir), R.SETGID)} <= found
    os.chmod(public, 0o640)
    scan(es, es_root)
    after = open_violations(es)
    assert (str(public), R.OTHER_ACCESS) not in after
    assert (str(open_dir), R.SETGID) in after
    assert (str(public), R.OTHER_ACCESS) in resolved(es)


def _records(store: Store) -> list[tuple[object, ...]]:
    """Every record, without its times (the two stores' passes start at other times)."""
    return sorted(
        (v.path, v.rule, v.severity, v.expected, v.actual, v.message, v.resolved_at is None)
        for v in store.violations(state=ViolationState.ALL)
    )


def test_the_sqlite_scan_records_what_the_memory_store_records(tmp_path: Path) -> None:
    """The SQLite scan's findings travel encoded from the walking processes; they must
    be recorded as the memory store records the findings themselves: first scan, a scan
    after mending, and one that cannot list a directory (whose records stay open)."""
    root = tmp_path / "data"
    public, open_dir = plant(root)
    odd = root / VISIT / "raw" / os.fsdecode(b"caf\xe9 \xff.h5")
    odd.write_bytes(b"y")
    os.chmod(odd, 0o666)
    locked = str(root / VISIT / "raw")

    def failing_open(path: str) -> int:
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return walker.open_dir(path)

    memory = MemoryStore()
    with SQLiteStore(str(tmp_path / "catalog.db")) as sqlite:
        for step in ("first", "mended", "unlistable"):
            if step == "mended":
                os.chmod(public, 0o640)
            for store in (memory, sqlite):
                layout = LayoutConfig(root=str(root))
                opener = failing_open if step == "unlistable" else walker.open_dir
                Scanner(store, layout, workers=2, opener=opener).scan(str(root))
            assert _records(sqlite) == _records(memory)
        assert any(r[0] == str(odd) for r in _records(sqlite))
        assert any(r[0] == str(public) and not r[-1] for r in _records(sqlite))  # resolved
        assert any(r[0] == str(open_dir) and r[-1] for r in _records(sqlite))  # kept open
