"""Datasets: which stored master file a stored data file belongs to. Rules every store shares.

A master file's extraction names the files it links to (external links and virtual
dataset sources, as real paths seen from the master's own directory tree) in
``metadata.data_files``; a file that names data files is a master, nobody's part.
Which master a file belongs to is decided by the store, from the masters it holds, never
by the file's own extraction: a data file re-extracted alone keeps its master, a data
file stored before its master gets it when the master arrives, and a master deleted (or
no longer naming the file) releases it. The memory and SQLite
stores decide it when a document is read (a join on the masters' names); Elasticsearch,
which has no joins, stamps the data documents when either side is written
(:mod:`catalogd.store.es_links`). Both give the same answer, :func:`resolve`.

A master claims a file only when both have the same access groups and visit date, so
whoever may see the file may see its master: collapsing a dataset never hides a file
from someone who could not see the master instead, and the embargo treats both alike.
Paths outside the data root are never stored, so they are never claimed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from catalogd.document import FileDocument

ROLE_MASTER = "master"
ROLE_DATA = "data"


def data_files(doc: FileDocument) -> tuple[str, ...]:
    """The paths a master names as its data files (empty for any other document)."""
    if doc.metadata.get("role") != ROLE_MASTER:
        return ()
    names = doc.metadata.get("data_files")
    if not isinstance(names, list):
        return ()
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str) and n != doc.path))


def claims(master: FileDocument, doc: FileDocument) -> bool:
    """Whether ``master`` claims ``doc`` as one of its data files."""
    return (
        master.id != doc.id
        and master.access_groups == doc.access_groups
        and master.visit_date == doc.visit_date
        and doc.path in data_files(master)
        and not data_files(doc)  # a master is nobody's part
    )


def path_order(path: str) -> bytes:
    """The order masters are chosen in (by the path's bytes, as SQLite compares them)."""
    return os.fsencode(path)


def resolve(doc: FileDocument, masters: Iterable[FileDocument]) -> FileDocument:
    """``doc`` as part of the first of ``masters`` (by path) that claims it, or as no
    dataset's part when none does."""
    chosen = [m.path for m in masters if claims(m, doc)]
    return with_master(doc, min(chosen, key=path_order) if chosen else None)


def master_of(doc: FileDocument) -> str | None:
    """The master path a resolved document carries."""
    value = doc.metadata.get("master")
    return value if doc.metadata.get("role") == ROLE_DATA and isinstance(value, str) else None


def with_master(doc: FileDocument, master: str | None) -> FileDocument:
    """``doc`` marked as ``master``'s data file, or unmarked (None); itself if unchanged."""
    if master_of(doc) == master and (master is not None or "master" not in doc.metadata):
        return doc
    metadata: dict[str, Any] = dict(doc.metadata)
    if master is None:
        metadata.pop("master", None)
        if metadata.get("role") == ROLE_DATA:
            del metadata["role"]
    else:
        metadata["role"] = ROLE_DATA
        metadata["master"] = master
    return doc.with_changes(metadata=metadata)
