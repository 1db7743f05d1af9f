"""What a SearchQuery becomes in SQL, for the SQLite store.

The same rules as :mod:`catalogd.store.query`, which the memory store applies in Python;
the contract suite checks that both agree. User values are always bound as parameters;
the SQL text is built only from fixed names (columns, facet and sort fields).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable

from catalogd.document import display_path
from catalogd.errors import UsageError
from catalogd.store.base import FACET_FIELDS, SearchQuery
from catalogd.store.sqlite_schema import DOC_SELECT, dec_text, enc_text, fts_text

TEXT_SORTS = ("path", "start_time")
_SORT_COLUMNS = {
    "path": "d.path_text",
    "mtime": "d.mtime",
    "size": "d.size",
    "start_time": "d.start_key",
    "indexed_at": "d.indexed_at",
}
_EQUALITY_FILTERS = ("user_type", "beamline", "proposal", "visit", "kind")
Clause = tuple[str, list[object]]


def access_clause(groups: frozenset[str] | None, *, per_document: bool = True) -> Clause:
    """Documents one of ``groups`` may see (None: all of them).

    ``per_document`` checks each candidate (EXISTS): best when the groups see much of the
    catalogue and other conditions narrow it. Otherwise the set of documents the groups
    see is built first from the group index (IN): best for the usual portal user, who
    sees a few proposals. Measured on 100,000 documents: 7 ms against 80 ms for a user
    of one proposal; 3 ms against 110 ms for a beamline's staff looking for a name.
    """
    if groups is None:
        return "1", []
    member, params = group_members(groups)
    if per_document:
        return (
            f"EXISTS (SELECT 1 FROM doc_groups g WHERE g.file_id = d.file_id AND {member})",
            params,
        )
    return f"d.file_id IN (SELECT g.file_id FROM doc_groups g WHERE {member})", params


def group_members(groups: frozenset[str]) -> Clause:
    """``g.grp`` is one of ``groups``."""
    encoded = [enc_text(g) for g in sorted(groups)]
    texts = [g for g in encoded if isinstance(g, str)]
    blobs = [g for g in encoded if isinstance(g, bytes)]
    member = "g.grp IN (SELECT value FROM json_each(?))"
    if blobs:
        member = f"({member} OR g.grp IN ({', '.join('?' * len(blobs))}))"
    return member, [json.dumps(texts, ensure_ascii=False), *blobs]


def access_rows(conn: sqlite3.Connection, groups: frozenset[str]) -> int:
    """How many documents ``groups`` see, counted on the group index (an upper bound)."""
    member, params = group_members(groups)
    row = conn.execute(f"SELECT count(*) FROM doc_groups g WHERE {member}", params).fetchone()
    return int(row[0])


def prefix_clause(prefix: str, *, blob: str = "d.path", text: str | None = "d.path_text") -> Clause:
    """Paths that are ``prefix`` or below it, exactly as query.under_prefix decides.

    Exact on the path's bytes; narrowed first by the same range on the indexed display
    text, which holds every such path: display_path(P + b"/" + R) is display_path(P) +
    "/" + display_path(R), since b"/" never continues a UTF-8 sequence.
    """
    prefix = prefix.rstrip("/") or "/"
    try:
        raw = os.fsencode(prefix)
    except UnicodeEncodeError:  # no file system path has this
        return "0", []
    # b"0" follows b"/": [P, P + "0") holds P and everything below it, and P-x, P.x too.
    clauses: list[str] = []
    params: list[object] = []
    if text is not None:
        shown = display_path(prefix)
        clauses.append(f"{text} >= ? AND {text} < ?")
        params += ["/", "0"] if raw == b"/" else [shown, shown + "0"]
    if raw == b"/":
        clauses.append(f"{blob} >= ? AND {blob} < ?")
        params += [raw, b"0"]
    else:
        clauses.append(f"{blob} >= ? AND {blob} < ? AND ({blob} = ? OR {blob} >= ?)")
        params += [raw, raw + b"0", raw, raw + b"/"]
    return " AND ".join(clauses), params


def scope_clause(scope: str, recursive: bool) -> Clause:
    """Violations an audit of ``scope`` covers: the path itself, and below if recursive."""
    try:
        raw = os.fsencode(scope)
    except UnicodeEncodeError:
        return "0", []
    if not recursive:
        return "path = ?", [raw]
    below, params = prefix_clause(scope, blob="path", text=None)
    return f"(path = ? OR ({below}))", [raw, *params]


def where_clause(query: SearchQuery, *, per_document: bool = True) -> Clause:
    """Every condition of ``query``; see access_clause for ``per_document``."""
    clauses, params = [], []
    if query.groups is not None:
        access, access_params = access_clause(query.groups, per_document=per_document)
        clauses.append(access)
        params += access_params
    for name in _EQUALITY_FILTERS:
        value = getattr(query, name)
        if value is not None:
            clauses.append(f"d.{name} = ?")
            params.append(enc_text(value))
    if query.path_prefix is not None:
        prefix, prefix_params = prefix_clause(query.path_prefix)
        clauses.append(prefix)
        params += prefix_params
    if query.start_from is not None:
        clauses.append("d.start_time >= ?")  # NULL (no start) never compares true
        params.append(enc_text(query.start_from))
    if query.start_to is not None:
        clauses.append("d.start_time <= ?")
        params.append(enc_text(query.start_to))
    phrases = []
    for term in query.terms:
        needle = fts_text(term)
        if len(needle) >= 3 and "\x00" not in needle:  # the trigram index can answer
            phrases.append('"' + needle.replace('"', '""') + '"')
        else:
            clauses.append("instr((SELECT f.text FROM docs_fts f WHERE f.rowid = d.file_id), ?)")
            params.append(needle)
    if phrases:
        clauses.append("d.file_id IN (SELECT rowid FROM docs_fts WHERE docs_fts MATCH ?)")
        params.append(" AND ".join(phrases))
    return " AND ".join(clauses) or "1", params


def counts(
    conn: sqlite3.Connection, where: str, params: list[object], facets: Iterable[str]
) -> tuple[int, dict[str, dict[str, int]]]:
    """The total of visible matches and the facet counts over them, in one statement."""
    names = list(dict.fromkeys(facets))
    if not set(names) <= set(FACET_FIELDS):  # they become SQL text: only known names
        raise UsageError(f"unknown facets {sorted(set(names) - set(FACET_FIELDS))}")
    selects = ["SELECT NULL, NULL, count(*) FROM hits"] + [
        f"SELECT '{name}', {name}, count(*) FROM hits WHERE {name} IS NOT NULL GROUP BY {name}"
        for name in names
    ]
    columns = ", ".join(names) or "1"
    rows = conn.execute(
        f"WITH hits AS MATERIALIZED (SELECT {columns} FROM docs d WHERE {where}) "
        + " UNION ALL ".join(selects),
        params,
    ).fetchall()
    total = 0
    counts: dict[str, dict[str, int]] = {name: {} for name in names}
    for name, value, n in rows:
        if name is None:
            total = int(n)
        else:
            counts[name][str(dec_text(value))] = int(n)
    return total, {name: dict(sorted(c.items())) for name, c in counts.items()}


def page_query(
    query: SearchQuery, where: str, params: list[object], after: tuple[object, str] | None
) -> Clause:
    column = _SORT_COLUMNS[query.sort.lstrip("-")]
    direction, beyond = ("DESC", "<") if query.sort.startswith("-") else ("ASC", ">")
    params = list(params)
    if after is not None:
        value = enc_text(after[0]) if isinstance(after[0], str) else after[0]
        where += f" AND ({column}, d.id) {beyond} (?, ?)"
        params += [value, enc_text(after[1])]
    params.append(query.size + 1)
    text = (
        f"SELECT {DOC_SELECT} FROM docs d WHERE {where} "
        f"ORDER BY {column} {direction}, d.id {direction} LIMIT ?"
    )
    return text, params
