"""Query semantics shared by the stores: matching, sort keys, cursors, facets.

The memory store answers queries with these functions directly; the SQLite and
Elasticsearch stores translate the same rules into their own query languages, and the
contract suite checks they agree.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from catalogd.document import FileDocument, display_path
from catalogd.errors import UsageError
from catalogd.store.base import SearchQuery
from catalogd.store.links import master_of

SortValue = str | int | float


def sort_value(doc: FileDocument, sort_field: str) -> SortValue:
    """The value a document sorts by; never None, so keyset pagination stays simple."""
    if sort_field == "path":
        return display_path(doc.path)
    if sort_field == "start_time":
        return doc.start_time or ""
    value: SortValue = getattr(doc, sort_field)
    return value


def encode_cursor(value: SortValue, doc_id: str) -> str:
    raw = json.dumps([value, doc_id], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


#: The type of each sort field's values, so a cursor made for one sort is refused by another.
_SORT_TYPES: dict[str, tuple[type, ...]] = {
    "path": (str,),
    "start_time": (str,),
    "mtime": (int, float),
    "indexed_at": (int, float),
    "size": (int,),
}


def decode_cursor(cursor: str, sort: str | None = None) -> tuple[SortValue, str]:
    """The (sort value, id) a cursor continues after; a UsageError if it is not one
    (or, given the query's ``sort``, not one made for that sort)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, doc_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise UsageError("invalid cursor") from exc
    if not isinstance(doc_id, str) or not isinstance(value, str | int | float):
        raise UsageError("invalid cursor")
    if isinstance(value, bool) or (
        sort is not None and not isinstance(value, _SORT_TYPES[sort.lstrip("-")])
    ):
        raise UsageError("invalid cursor: it was made for another sort order")
    return value, doc_id


def under_prefix(path: str, prefix: str) -> bool:
    """True when ``path`` is ``prefix`` itself or lies below it."""
    prefix = prefix.rstrip("/") or "/"
    if prefix == "/":
        return path.startswith("/")
    return path == prefix or path.startswith(prefix + "/")


def visible(
    doc: FileDocument, groups: frozenset[str] | None, public_before: str | None = None
) -> bool:
    """Whether ``groups`` may see ``doc``: they meet its access groups, or (embargo) its
    visit date is known and earlier than ``public_before`` (an ISO date)."""
    if groups is None or not groups.isdisjoint(doc.access_groups):
        return True
    return (
        public_before is not None
        and doc.visit_date is not None
        and (doc.visit_date < public_before)
    )


def matches(doc: FileDocument, query: SearchQuery) -> bool:
    """Whether ``doc`` satisfies every filter of ``query``, access included. ``doc`` is
    resolved (its dataset membership as :func:`catalogd.store.links.resolve` says)."""
    if not visible(doc, query.groups, query.public_before):
        return False
    if query.collapse and master_of(doc) is not None:
        return False
    for name in ("user_type", "beamline", "proposal", "visit", "kind"):
        wanted = getattr(query, name)
        if wanted is not None and getattr(doc, name) != wanted:
            return False
    if query.path_prefix is not None and not under_prefix(doc.path, query.path_prefix):
        return False
    if query.start_from is not None or query.start_to is not None:
        start = doc.start_time
        if start is None:
            return False
        if query.start_from is not None and start < query.start_from:
            return False
        if query.start_to is not None and start > query.start_to:
            return False
    if query.terms:
        text = doc.search_text().lower()
        if not all(term.lower() in text for term in query.terms):
            return False
    return True


def after_cursor(doc: FileDocument, query: SearchQuery, cursor: tuple[SortValue, str]) -> bool:
    """Whether ``doc`` comes after the cursor position in the query's order."""
    field = query.sort.lstrip("-")
    key = (sort_value(doc, field), doc.id)
    if query.sort.startswith("-"):
        return key < cursor
    return key > cursor


def facet_counts(docs: Iterable[FileDocument], names: Iterable[str]) -> dict[str, dict[str, int]]:
    counters: dict[str, Counter[str]] = {name: Counter() for name in names}
    for doc in docs:
        for name, counter in counters.items():
            value: Any = getattr(doc, name)
            if value is not None:
                counter[str(value)] += 1
    return {name: dict(sorted(counter.items())) for name, counter in counters.items()}
