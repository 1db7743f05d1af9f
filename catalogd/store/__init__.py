"""Catalogue stores, opened from a store URL.

``sqlite:///ABSOLUTE/PATH.db`` is the embedded store, ``memory://`` the in-memory one
(tests), ``http(s)://HOST:PORT[,http(s)://HOST2:PORT][?index=PREFIX]`` Elasticsearch
(or OpenSearch, with ``engine=opensearch``: :mod:`catalogd.store.engine`).
:func:`open_spooled_store` gives the long-running commands an Elasticsearch store whose
writes are kept in a local spool while the cluster cannot be reached
(:mod:`catalogd.store.spool`).
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

from catalogd.errors import UsageError
from catalogd.optional import require
from catalogd.store.base import SearchQuery, SearchResult, Store
from catalogd.store.memory import MemoryStore

__all__ = [
    "MemoryStore",
    "SearchQuery",
    "SearchResult",
    "Store",
    "open_spooled_store",
    "open_store",
    "sqlite_path",
]

#: Where writes wait while Elasticsearch is down, when neither [store] spool_dir nor
#: [daemon] state_dir says.
DEFAULT_SPOOL_DIR = "/var/lib/catalogd/spool"
#: Retries of one bulk request, and the longest wait for an answer, before its writes
#: go to the spool instead (a write that timed out but was applied is replayed
#: harmlessly: writes are idempotent).
SPOOLED_BULK_RETRIES = 2
SPOOLED_REQUEST_TIMEOUT_S = 10.0


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///ABSOLUTE/PATH`` URL.

    ``sqlite:///var/lib/c.db`` and ``sqlite:////var/lib/c.db`` both name
    ``/var/lib/c.db``: the path is always absolute.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise UsageError(
            f"invalid SQLite store URL {url!r}: expected sqlite:///ABSOLUTE/PATH.db "
            "(three slashes, then an absolute path)"
        )
    path = "/" + parts.path.lstrip("/")
    if path == "/" or path.endswith("/"):
        raise UsageError(f"invalid SQLite store URL {url!r}: it names a directory, not a file")
    return path


def open_store(url: str, *, shards: int = 1, replicas: int | None = None) -> Store:
    """Open the store a URL names. Raises UsageError for a URL of no known kind.
    ``shards`` and ``replicas`` (``[store]``) shape an Elasticsearch index it creates."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from catalogd.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url))
    if scheme in ("http", "https"):
        require("elasticsearch", "elasticsearch")
        from catalogd.store.elasticsearch import ElasticsearchStore

        return ElasticsearchStore.from_url(url, shards=shards, replicas=replicas)
    raise UsageError(
        f"unknown store URL {url!r}: use sqlite:///ABSOLUTE/PATH.db or http(s)://HOST:PORT"
    )


def spool_directory(spool_dir: str | None, state_dir: str | None) -> str:
    """``[store] spool_dir``, else ``[daemon] state_dir``/spool, else the default."""
    if spool_dir:
        return spool_dir
    if state_dir:
        return os.path.join(state_dir, "spool")
    return DEFAULT_SPOOL_DIR


def open_spooled_store(
    url: str,
    *,
    spool_dir: str,
    name: str,
    local_reads: bool = False,
    required: bool = True,
    shards: int = 1,
    replicas: int | None = None,
) -> Store:
    """Like :func:`open_store`, but an Elasticsearch store keeps its writes in the spool
    ``spool_dir``/``name``.spool.sqlite while the cluster cannot be reached (and opens
    even then). ``local_reads``: see :class:`~catalogd.store.spool.SpoolingStore`.
    Without ``required``, a spool that cannot be created or that another process holds
    is warned about and the store is used without one (an outage is then an error, as
    for any command); a spool that is corrupt or holds writes for another catalogue is
    always an error: it may hold writes."""
    if urlsplit(url).scheme not in ("http", "https"):
        return open_store(url, shards=shards, replicas=replicas)
    require("elasticsearch", "elasticsearch")
    from catalogd.store.elasticsearch import ElasticsearchStore, parse_url, store_engine
    from catalogd.store.spool import (
        Spool,
        SpoolingStore,
        SpoolInUse,
        SpoolUnwritable,
        spool_path,
    )

    hosts, prefix, shown = parse_url(url)
    engine = store_engine(url)
    try:
        spool = Spool(spool_path(spool_dir, name), target=f"{shown}?index={prefix}")
    except (SpoolUnwritable, SpoolInUse) as exc:
        if required:
            raise
        logging.getLogger(__name__).warning(
            "%s: writes are not spooled if Elasticsearch goes away (set store.spool_dir)",
            exc.message,
        )
        return open_store(url, shards=shards, replicas=replicas)

    def opener() -> Store:
        return ElasticsearchStore(
            hosts,
            prefix=prefix,
            shown_url=shown,
            engine=engine,
            bulk_retries=SPOOLED_BULK_RETRIES,
            request_timeout_s=SPOOLED_REQUEST_TIMEOUT_S,
            shards=shards,
            replicas=replicas,
        )

    try:
        return SpoolingStore(opener, spool, url=shown, local_reads=local_reads)
    except BaseException:
        spool.close()
        raise
