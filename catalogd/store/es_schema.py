"""The Elasticsearch store's index layout: names, templates, mappings, and the encoding
of documents and violations into index sources and back.

The mapping uses only what the server itself provides (no ``analysis-common``, no
``mapper-extras``), so it works on every distribution, the minimal test one included:

* every document keeps its exact value in ``doc``, a JSON text in ASCII (surrogate
  escapes of undecodable names survive), stored in ``_source`` but not indexed; nothing
  from the file's own metadata becomes a mapped field, and the mapping is ``strict``,
  so no odd file can add fields (no mapping explosion);
* filters are ``keyword`` fields; sort and range fields hold :func:`order_key` texts, whose
  order is that of Python's ``str`` (so cursors and ranges agree with the other stores);
* subtree queries use ``ancestors``, the file's parent directories as exact bytes;
* free text uses ``search_suffixes`` (mapping version 3): every suffix, cut to
  SUFFIX_MAX_BYTES, of every whitespace-separated word of the lower-cased search text in
  the exact-byte encoding of :func:`fts_key`, matched by ``prefix`` queries (substring
  semantics, see :func:`search_suffixes`). ``search`` keeps the lines themselves for the
  rare term longer than SUFFIX_MAX_BYTES (a ``wildcard`` query), and ``search_overflow``
  the lines of the rare document with more than SUFFIX_MAX_COUNT suffixes (a ``wildcard``
  query over those documents' values only). None of the three is kept in ``_source``;
* titles and samples are also ``text`` with ``index_prefixes`` (partial words for a
  portal) and ``keyword`` subfields for facets; dates are ``date`` fields.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from typing import Any

from catalogd.document import FileDocument, display_path
from catalogd.errors import StoreError
from catalogd.store import links
from catalogd.violations import Violation

#: Version of the mapping below; a new one needs a new index (``catalogd reindex``),
#: unless ADDED_FIELDS says how an older index takes it in place.
SCHEMA_VERSION = 3
#: Version 3's free-text field. A term is a substring of the search text exactly when it
#: is a prefix of a suffix of one of its words: terms are split on whitespace (str.split,
#: see SearchQuery.terms) and so are the words, and lower() never makes or removes
#: whitespace. A word of n bytes has n suffixes (one per character start), so a document
#: costs about (its bytes) x (the mean suffix length): each suffix is cut to
#: SUFFIX_MAX_BYTES bytes, which still answers every term of up to that many bytes
#: exactly (longer terms are rare, typed only as pasted paths: es_query looks them up in
#: ``search``), and a document with more than SUFFIX_MAX_COUNT distinct suffixes (over
#: about 4,000 characters of words, far beyond a NeXus file's titles and path) keeps none
#: and has its lines in ``search_overflow`` instead. Bounds per document: 4096 values of
#: at most 64 bytes.
SUFFIX_MAX_BYTES = 64
SUFFIX_MAX_COUNT = 4096
DEFAULT_PREFIX = "catalogd"
#: How soon a write becomes searchable without flush(): the near-real-time refresh.
REFRESH_INTERVAL = "1s"
#: Longest line of search text kept in one keyword value (in bytes of UTF-8); longer
#: lines are cut into overlapping chunks, so a term of up to SEARCH_OVERLAP bytes is
#: still found wherever it lies (Lucene's limit for one term is 32766 bytes).
SEARCH_CHUNK = 8000
SEARCH_OVERLAP = 2000
#: Longest title or sample kept as a facet keyword.
KEYWORD_IGNORE_ABOVE = 1024

_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def files_alias(prefix: str) -> str:
    return f"{prefix}-files"


def violations_alias(prefix: str) -> str:
    return f"{prefix}-violations"


def versioned(alias: str, version: int = SCHEMA_VERSION) -> str:
    return f"{alias}-v{version}"


# -- encodings ---------------------------------------------------------------------------
def order_key(text: str) -> str:
    """``text`` as one character per byte of its UTF-8 (surrogates passed through).

    Valid for every Python string (JSON can carry it), injective, and ordered as Python
    orders the strings: UTF-8 keeps code point order, and so does Lucene's byte order of
    the result.
    """
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def fts_key(text: str) -> str:
    """What ``search`` holds for ``text``: lower-cased as Python does, then order_key.

    UTF-8 is self-synchronising, so ``a in b`` exactly when ``fts_key(a) in fts_key(b)``:
    the index agrees with ``term.lower() in text.lower()`` for every string.
    """
    return order_key(text.lower())


def path_key(path: str) -> str:
    """A file system path's exact bytes, one character per byte."""
    return os.fsencode(path).decode("latin-1")


def keyword(value: str) -> str:
    """A text for a keyword field: itself when valid UTF-8, else a marked hex form."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "\x00" + value.encode("utf-8", "surrogatepass").hex()
    return value


def from_keyword(value: str) -> str:
    if value.startswith("\x00"):
        try:
            return bytes.fromhex(value[1:]).decode("utf-8", "surrogatepass")
        except ValueError:
            return value
    return value


def _clean(value: str | None) -> str | None:
    """Display text for an analysed field (no lone surrogates)."""
    if value is None:
        return None
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def ancestors(path: str) -> list[str]:
    """The directories above ``path``, as path_key texts: /a/b/c gives /a and /a/b."""
    raw = os.fsencode(path)
    parts = raw.split(b"/")
    return [b"/".join(parts[:i]).decode("latin-1") for i in range(2, len(parts))]


def _is_continuation(char: str) -> bool:
    return "\x80" <= char <= "\xbf"


def search_suffixes(text: str) -> list[str] | None:
    """The ``search_suffixes`` values of ``text``, or None when there are more than
    SUFFIX_MAX_COUNT of them (see SUFFIX_MAX_BYTES)."""
    found: dict[str, None] = {}
    for word in text.lower().split():
        key = order_key(word)
        if word.isascii():
            starts: range | list[int] = range(len(key))
        else:  # a suffix starts at a character, not inside one's UTF-8 bytes
            starts = [i for i, char in enumerate(key) if not _is_continuation(char)]
        for first in range(0, len(starts), SUFFIX_MAX_COUNT):  # memory stays bounded
            for start in starts[first : first + SUFFIX_MAX_COUNT]:
                found[key[start : start + SUFFIX_MAX_BYTES]] = None
            if len(found) > SUFFIX_MAX_COUNT:
                return None
    return list(found)


def search_values(text: str) -> list[str]:
    values: list[str] = []
    for line in fts_key(text).split("\n"):
        if len(line.encode("utf-8")) <= SEARCH_CHUNK:
            if line:
                values.append(line)
            continue
        step = SEARCH_CHUNK // 2 - SEARCH_OVERLAP  # up to 2 bytes of UTF-8 per character
        for start in range(0, len(line), step):
            values.append(line[start : start + SEARCH_CHUNK // 2])
            if start + SEARCH_CHUNK // 2 >= len(line):
                break
    return values


# -- mappings ----------------------------------------------------------------------------
_KEYWORD = {"type": "keyword"}
_STORED_ONLY = {"type": "keyword", "index": False, "doc_values": False}
_INDEXED_ONLY = {"type": "keyword", "doc_values": False}
#: Derived from ``doc`` and only searched: not stored again in ``_source``.
_SEARCH_ONLY = ["search", "search_suffixes", "search_overflow"]
_TEXT = {
    "type": "text",
    "index_prefixes": {"min_chars": 1, "max_chars": 10},
    "fields": {"raw": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}},
}
_DATE = {"type": "date", "ignore_malformed": True}

FILES_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "_source": {"excludes": _SEARCH_ONLY},
    "properties": {
        "doc": _STORED_ONLY,
        "id": _KEYWORD,
        "id_key": _KEYWORD,
        "path": _KEYWORD,
        "path_key": _KEYWORD,
        "path_sort": _KEYWORD,
        "ancestors": _KEYWORD,
        "name": _KEYWORD,
        "search": _KEYWORD,
        "search_suffixes": _INDEXED_ONLY,
        "search_overflow": _INDEXED_ONLY,
        "level": _KEYWORD,
        "user_type": _KEYWORD,
        "beamline": _KEYWORD,
        "proposal": _KEYWORD,
        "visit": _KEYWORD,
        "visit_date": _DATE,
        "area": _KEYWORD,
        "kind": _KEYWORD,
        "access_groups": _KEYWORD,
        "owner": _KEYWORD,
        "group": _KEYWORD,
        "uid": {"type": "long"},
        "gid": {"type": "long"},
        "size": {"type": "long"},
        "mtime": {"type": "double"},
        "indexed_at": {"type": "double"},
        "modified": {"type": "date", "format": "epoch_millis"},
        "indexed": {"type": "date", "format": "epoch_millis"},
        "mode": {"type": "integer"},
        "mode_octal": _KEYWORD,
        "setgid": {"type": "boolean"},
        "world_readable": {"type": "boolean"},
        "world_writable": {"type": "boolean"},
        "title": _TEXT,
        "sample": _TEXT,
        "start": _DATE,
        "start_time": _KEYWORD,
        "start_key": _KEYWORD,
        "has_error": {"type": "boolean"},
        # Datasets (catalogd.store.es_links): a part's master, a master's named files;
        # both as path_key texts.
        "master": _KEYWORD,
        "data_files": _KEYWORD,
    },
}

#: Mapping version -> the fields it added to the version before, when that was all it
#: changed: an index of the older version takes them in place (put_mapping), and its
#: documents get the fields' values when they are next written.
ADDED_FIELDS: dict[int, dict[str, Any]] = {
    2: {"master": _KEYWORD, "data_files": _KEYWORD},
}


def added_since(version: int) -> dict[str, Any] | None:
    """The properties that bring an index of mapping ``version`` up to SCHEMA_VERSION
    by put_mapping, or None when some step between needs a reindex."""
    properties: dict[str, Any] = {}
    for step in range(version + 1, SCHEMA_VERSION + 1):
        if step not in ADDED_FIELDS:
            return None
        properties.update(ADDED_FIELDS[step])
    return properties


VIOLATIONS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "record": _STORED_ONLY,
        "key": _KEYWORD,
        "path": _KEYWORD,
        "path_key": _KEYWORD,
        "ancestors": _KEYWORD,
        "rule": _KEYWORD,
        "severity": _KEYWORD,
        "open": {"type": "boolean"},
        "user_type": _KEYWORD,
        "beamline": _KEYWORD,
        "proposal": _KEYWORD,
        "visit": _KEYWORD,
        "first_seen": {"type": "double"},
        "last_seen": {"type": "double"},
        "resolved_at": {"type": "double"},
    },
}

#: Default primary shards (``[store] shards``): one gives exact facet counts and totals,
#: and a catalogue of millions of small documents fits one shard well; more spread a
#: larger one over the nodes (facet counts of values beyond the FACET_MAX_VALUES most
#: frequent may then be approximate).
DEFAULT_SHARDS = 1
#: Most primary shards of one index (Elasticsearch's own limit, index.number_of_shards).
MAX_SHARDS = 1024
#: Replicas when ``[store] replicas`` is not set: one wherever there is a second node.
AUTO_EXPAND_REPLICAS = "0-1"


def index_settings(shards: int = DEFAULT_SHARDS, replicas: int | None = None) -> dict[str, Any]:
    """The settings of a new index: ``shards`` primaries with ``replicas`` copies each
    (None: AUTO_EXPAND_REPLICAS)."""
    if not 1 <= shards <= MAX_SHARDS:
        raise StoreError(f"shards must be between 1 and {MAX_SHARDS}, not {shards}")
    if replicas is not None and replicas < 0:
        raise StoreError(f"replicas must be 0 or more, not {replicas}")
    settings: dict[str, Any] = {"number_of_shards": shards, "refresh_interval": REFRESH_INTERVAL}
    if replicas is None:
        settings["auto_expand_replicas"] = AUTO_EXPAND_REPLICAS
    else:
        settings["number_of_replicas"] = replicas
    return settings


INDEX_SETTINGS: dict[str, Any] = index_settings()


def template(
    alias: str, mapping: dict[str, Any], settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The index template for every version of the index behind ``alias`` (new indices
    get ``settings``, default INDEX_SETTINGS)."""
    return {
        "index_patterns": [f"{alias}-v*"],
        "priority": 200,
        "template": {"settings": settings or INDEX_SETTINGS, "mappings": mapping},
        "_meta": {"managed_by": "catalogd", "schema_version": SCHEMA_VERSION},
    }


# -- documents ---------------------------------------------------------------------------
def _doc_json(doc: FileDocument) -> str:
    data = {name: getattr(doc, name) for name in doc.__dataclass_fields__}
    return _JSON.encode(data)


def doc_source(doc: FileDocument) -> dict[str, Any]:
    """The index source of ``doc``; StoreError when it cannot be stored."""
    master = links.master_of(doc)
    try:
        blob = _doc_json(doc)
        path = path_key(doc.path)
        master_key = None if master is None else path_key(master)
        named = [path_key(p) for p in links.data_files(doc)]
    except (TypeError, ValueError, UnicodeError) as exc:
        raise StoreError(f"cannot store the document for {doc.path!r}: {exc}") from exc
    text = doc.search_text()
    lines = search_values(text)
    suffixes = search_suffixes(text)
    start = doc.start_time
    perms = stat.S_IMODE(doc.mode)
    source: dict[str, Any] = {
        "doc": blob,
        "id": keyword(doc.id),
        "id_key": order_key(doc.id),
        "path": display_path(doc.path),
        "path_key": path,
        "path_sort": order_key(display_path(doc.path)),
        "ancestors": ancestors(doc.path),
        "name": display_path(doc.name),
        "search": lines,
        "search_suffixes": suffixes or [],
        "search_overflow": lines if suffixes is None else [],
        "access_groups": [keyword(g) for g in doc.access_groups],
        "uid": doc.uid,
        "gid": doc.gid,
        "size": doc.size,
        "mtime": doc.mtime,
        "indexed_at": doc.indexed_at,
        "modified": int(doc.mtime * 1000),
        "indexed": int(doc.indexed_at * 1000),
        "mode": doc.mode,
        "mode_octal": f"{perms:04o}",
        "setgid": bool(doc.mode & stat.S_ISGID),
        "world_readable": bool(doc.mode & stat.S_IROTH),
        "world_writable": bool(doc.mode & stat.S_IWOTH),
        "title": _clean(doc.title),
        "sample": _clean(doc.sample),
        "start": start or None,
        "start_time": None if start is None else order_key(start),
        "start_key": order_key(start or ""),
        "has_error": doc.error is not None,
        "master": master_key,
        "data_files": named,
    }
    for name in ("level", "user_type", "beamline", "proposal", "visit", "area", "kind",
                 "owner", "group"):  # fmt: skip
        value = getattr(doc, name)
        source[name] = None if value is None else keyword(value)
    source["visit_date"] = doc.visit_date
    return source


def source_doc(source: Mapping[str, Any]) -> FileDocument:
    """The document an index source holds."""
    try:
        data = json.loads(source["doc"])
        data["access_groups"] = tuple(data["access_groups"])
        data["entries"] = tuple(data["entries"])
        return FileDocument(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"the index holds a document catalogd cannot read: {exc}") from exc


# -- violations --------------------------------------------------------------------------
def violation_source(v: Violation, key: str) -> dict[str, Any]:
    try:
        path = path_key(v.path)
        blob = _JSON.encode({name: getattr(v, name) for name in v.__dataclass_fields__})
    except (TypeError, ValueError, UnicodeError) as exc:
        raise StoreError(f"cannot store the violation for {v.path!r}: {exc}") from exc
    source: dict[str, Any] = {
        "record": blob,
        "key": key,
        "path": display_path(v.path),
        "path_key": path,
        "ancestors": ancestors(v.path),
        "rule": keyword(v.rule),
        "severity": keyword(v.severity),
        "open": v.is_open,
        "first_seen": v.first_seen,
        "last_seen": v.last_seen,
        "resolved_at": v.resolved_at,
    }
    for name in ("user_type", "beamline", "proposal", "visit"):
        value = getattr(v, name)
        source[name] = None if value is None else keyword(value)
    return source


def source_violation(source: Mapping[str, Any]) -> Violation:
    try:
        return Violation(**json.loads(source["record"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"the index holds a violation catalogd cannot read: {exc}") from exc
