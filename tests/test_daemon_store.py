"""The store method the daemon relies on, ``fingerprints``, on every backend.

(Kept beside the daemon's tests while the SQLite store is being finished; it belongs
in tests/test_store_contract.py once that is committed.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalogd.document import document_from_stat, document_id
from catalogd.layout import LayoutConfig, classify
from catalogd.store import open_store
from catalogd.store.base import Fingerprint, Store


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/c.db"
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()


def test_fingerprints_are_what_was_stored(store: Store, tmp_path: Path) -> None:
    layout = LayoutConfig(root=str(tmp_path))
    paths = [tmp_path / "a" / "x.dat", tmp_path / "a" / "y.dat", tmp_path / "ab.dat"]
    docs = []
    for path in paths:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"12345")
        st = os.lstat(path)
        docs.append(
            document_from_stat(
                str(path),
                st,
                classify(str(path), layout),
                layout,
                owner=None,
                group=None,
                indexed_at=1.0,
            )
        )
    store.put(docs)
    store.flush()
    every = list(store.fingerprints())
    assert every == [Fingerprint.of_document(d) for d in sorted(docs, key=lambda d: d.path)]
    under = list(store.fingerprints(path_prefix=str(tmp_path / "a")))
    assert [fp.path for fp in under] == [str(paths[0]), str(paths[1])]
    fp = under[0]
    assert fp.id == document_id(str(paths[0]))
    assert fp == Fingerprint.of_stat(fp.id, fp.path, os.lstat(paths[0]))
    assert fp.same_content(Fingerprint.of_stat(fp.id, fp.path, os.lstat(paths[0])))
