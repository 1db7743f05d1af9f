"""Catalogue stores, opened from a store URL.

``sqlite:///ABSOLUTE/PATH.db`` is the embedded store, ``memory://`` the in-memory one
(tests), ``http(s)://HOST:PORT[,http(s)://HOST2:PORT][?index=PREFIX]`` Elasticsearch.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from catalogd.errors import UsageError
from catalogd.optional import require
from catalogd.store.base import SearchQuery, SearchResult, Store
from catalogd.store.memory import MemoryStore

__all__ = ["MemoryStore", "SearchQuery", "SearchResult", "Store", "open_store", "sqlite_path"]


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


def open_store(url: str) -> Store:
    """Open the store a URL names. Raises UsageError for a URL of no known kind."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from catalogd.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url))
    if scheme in ("http", "https"):
        require("elasticsearch", "elasticsearch")
        from catalogd.store.elasticsearch import ElasticsearchStore

        return ElasticsearchStore.from_url(url)
    raise UsageError(
        f"unknown store URL {url!r}: use sqlite:///ABSOLUTE/PATH.db or http(s)://HOST:PORT"
    )
