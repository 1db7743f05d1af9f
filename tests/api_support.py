"""What the API tests share: a catalogue built from a real tree, a small directory, and
settings and clients for the application.

The catalogue is a real :class:`~catalogd.store.sqlite.SQLiteStore` filled with the
documents of files written to disk and classified by the real layout, so access groups
come from the path exactly as in production. :class:`FakeDirectory` stands in for LDAP
in the tests of the application's own logic (the LDAP tests use the real slapd).

A test module that uses the fixtures :func:`catalogue` and :func:`users` imports them
and names them in ``__all__``.
"""

from __future__ import annotations

import base64
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from api.app import create_app
from api.principal import DirectoryUnavailable
from catalogd.config import ApiSettings, Settings
from catalogd.document import KIND_HDF5, KIND_NEXUS, DocumentBuilder, FileDocument
from catalogd.identity import NameCache
from catalogd.store.sqlite import SQLiteStore
from catalogd.violations import Violation

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client; httpx still works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient as TestClient

#: 2026-06-15 12:00 UTC: "now" for the tests' clock.
NOW = 1781524800.0
JSONDict = dict[str, Any]


# -- the directory --------------------------------------------------------------------------
@dataclass
class FakeDirectory:
    """Users with passwords and effective groups; ``down`` makes every call fail."""

    users: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    down: bool = False
    authentications: list[str] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authenticate(self, user: str, password: str) -> bool:
        with self._lock:
            self.authentications.append(user)
        if self.down:
            raise DirectoryUnavailable("ldap://dc.example.org:389 refused the connection")
        known = self.users.get(user)
        return bool(password) and known is not None and known[0] == password

    def ping(self) -> None:
        if self.down:
            raise DirectoryUnavailable("ldap://dc.example.org:389 refused the connection")

    def groups_of(self, user: str) -> frozenset[str]:
        with self._lock:
            self.lookups.append(user)
        if self.down:
            raise DirectoryUnavailable("ldap://dc.example.org:389 refused the connection")
        known = self.users.get(user)
        return known[1] if known is not None else frozenset()


def directory() -> FakeDirectory:
    """alice (proposal 20170251), bob (20180042), staff (the biomax beamline group,
    nested in both biomax proposals), audrey (auditor), carol (no groups)."""
    return FakeDirectory(
        users={
            "alice": ("alice-pw", frozenset({"20170251-group"})),
            "bob": ("bob-pw", frozenset({"20180042-group"})),
            "staff": ("staff-pw", frozenset({"biomax", "20170251-group", "20180042-group"})),
            "audrey": ("audrey-pw", frozenset({"data-auditors"})),
            "carol": ("carol-pw", frozenset()),
            "root-like": ("admin-pw", frozenset({"catalogd-admins"})),
        }
    )


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


ALICE = basic("alice", "alice-pw")
BOB = basic("bob", "bob-pw")
STAFF = basic("staff", "staff-pw")
AUDREY = basic("audrey", "audrey-pw")
CAROL = basic("carol", "carol-pw")


# -- the catalogue --------------------------------------------------------------------------
def nexus_entry(title: str, start: str, sample: str) -> JSONDict:
    return {
        "name": "entry",
        "title": title,
        "start_time": start,
        "definition": "NXmx",
        "sample": {"name": sample},
    }


@dataclass(frozen=True)
class Catalogue:
    root: Path
    store: SQLiteStore
    docs: dict[str, FileDocument]

    def doc(self, name: str) -> FileDocument:
        return self.docs[name]


#: name -> (path below the root, kind, entries, metadata)
TREE: dict[str, tuple[str, str, tuple[JSONDict, ...], JSONDict]] = {
    "lysozyme": (
        "visitor/biomax/20170251/2017112208/raw/lysozyme_0001.nxs",
        KIND_NEXUS,
        (nexus_entry("Lysozyme rotation scan", "2017-11-22T08:15:00+00:00", "lysozyme"),),
        {},
    ),
    "notes": ("visitor/biomax/20170251/2017112208/process/notes.txt", "other", (), {}),
    "master": (
        "visitor/biomax/20170251/2017112208/raw/insulin_master.h5",
        KIND_NEXUS,
        (nexus_entry("Insulin", "2017-11-23T10:00:00+00:00", "insulin"),),
        {"role": "master"},  # data_files filled in below, with real paths
    ),
    "data": ("visitor/biomax/20170251/2017112208/raw/insulin_data_000001.h5", KIND_HDF5, (), {}),
    "thaumatin": (
        "visitor/biomax/20180042/2018030112/raw/secret_thaumatin.nxs",
        KIND_NEXUS,
        (nexus_entry("Thaumatin secret", "2018-03-01T12:00:00+00:00", "thaumatin"),),
        {},
    ),
    "pharma": (
        "proprietary/biomax/20190777/2019050601/raw/pharma_compound.nxs",
        KIND_NEXUS,
        (nexus_entry("Pharma compound", "2019-05-06T09:00:00+00:00", "compound-x"),),
        {},
    ),
    "stray": ("visitor/biomax/stray.txt", "other", (), {}),
    "old": (
        "visitor/biomax/20100001/2010010108/raw/old_scan.nxs",
        KIND_NEXUS,
        (nexus_entry("Old lysozyme scan", "2010-01-01T08:00:00+00:00", "lysozyme"),),
        {},
    ),
}
#: A file whose name is not UTF-8, in alice's visit.
LATIN1_NAME = b"caf\xe9.h5"
LATIN1_DIR = "visitor/biomax/20170251/2017112208/raw"


def build_catalogue(tmp_path: Path) -> Catalogue:
    """Write the tree, build each file's document with the real layout, store them."""
    root = tmp_path / "data"
    settings = Settings()
    layout = settings.layout_for(str(root), str(root))
    builder = DocumentBuilder(layout, NameCache(), lambda: NOW - 3600)
    docs: dict[str, FileDocument] = {}
    for name, (relative, kind, entries, metadata) in TREE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (len(name) + 10))
        doc = builder.build(str(path), os.lstat(path))
        docs[name] = doc.with_changes(kind=kind, entries=entries, metadata=dict(metadata))
    master = docs["master"]
    docs["master"] = master.with_changes(
        metadata={"role": "master", "data_files": [docs["data"].path]}
    )
    raw = os.fsencode(root / LATIN1_DIR) + b"/" + LATIN1_NAME
    with open(raw, "wb") as fh:
        fh.write(b"cafe")
    docs["latin1"] = builder.build(os.fsdecode(raw), os.lstat(raw))
    store = SQLiteStore(str(tmp_path / "catalog.db"))
    store.put(docs.values())
    store.record_audit(
        [
            Violation(
                path=docs["thaumatin"].path,
                rule="DP003",
                severity="error",
                expected="group 20180042-group",
                actual="group users",
                message="wrong group",
                user_type="visitor",
                beamline="biomax",
                proposal="20180042",
                visit="2018030112",
            )
        ],
        scope=str(root),
        seen_at=NOW - 60,
    )
    store.flush()
    return Catalogue(root=root, store=store, docs=docs)


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[Catalogue]:
    """The catalogue of :func:`build_catalogue`, its store closed after the test."""
    built = build_catalogue(tmp_path)
    try:
        yield built
    finally:
        built.store.close()


@pytest.fixture
def users() -> FakeDirectory:
    """The small directory of :func:`directory`."""
    return directory()


# -- the application ------------------------------------------------------------------------
def settings(**api: Any) -> Settings:
    """Default settings with these ``[api]`` keys (admins: catalogd-admins)."""
    values: dict[str, Any] = {"admin_groups": ("catalogd-admins",), **api}
    return Settings(api=ApiSettings(**values))


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def app_for(
    catalogue: Catalogue,
    *,
    directory: FakeDirectory | None = None,
    clock: Clock | None = None,
    **api: Any,
) -> FastAPI:
    return create_app(settings(**api), catalogue.store, directory=directory, clock=clock or Clock())


def client(app: FastAPI, source: str = "192.0.2.10") -> TestClient:
    return TestClient(app, client=(source, 50000))


def ids(response_json: JSONDict) -> set[str]:
    return {item["id"] for item in response_json["items"]}


def iter_pages(http: TestClient, headers: dict[str, str], **params: Any) -> Iterator[JSONDict]:
    """Every page of a search, following next_cursor."""
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get("/api/v1/search", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page: JSONDict = response.json()
        yield page
        cursor = page["next_cursor"]
        if cursor is None:
            return
