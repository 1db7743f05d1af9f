"""What a SearchQuery becomes in Elasticsearch's query language.

The same rules as :mod:`catalogd.store.query` (which the memory store applies in Python),
on the fields of :mod:`catalogd.store.es_schema`; the contract suite checks they agree.
Every filter, the caller's access included, is inside the query, so items, total and
facets all see the same documents.
"""

from __future__ import annotations

from typing import Any

from catalogd.store.base import SearchQuery
from catalogd.store.es_schema import SUFFIX_MAX_BYTES, fts_key, keyword, order_key, path_key

JSONDict = dict[str, Any]

#: Sort field -> the index field holding its order.
SORT_FIELDS = {
    "path": "path_sort",
    "mtime": "mtime",
    "size": "size",
    "start_time": "start_key",
    "indexed_at": "indexed_at",
}
TEXT_SORTS = ("path", "start_time")
#: Most values one facet reports (the memory store has no limit; a catalogue with more
#: proposals than this reports the most frequent).
FACET_MAX_VALUES = 10_000
#: Longest free-text term (in characters of fts_key) looked up exactly; measured: a
#: repetitive term of 200 is within Lucene's default automaton limit, one of 400 is not.
MAX_EXACT_TERM = 160
_EQUALITY_FILTERS = ("user_type", "beamline", "proposal", "visit", "kind")
_MATCH_NONE: JSONDict = {"match_none": {}}


def access_filter(
    groups: frozenset[str] | None, public_before: str | None = None
) -> list[JSONDict]:
    """Documents one of ``groups`` may see (None: no condition), or, with the embargo
    ``public_before`` (an ISO date), whose visit date is known and earlier."""
    if groups is None:
        return []
    should: list[JSONDict] = []
    if groups:
        should.append({"terms": {"access_groups": sorted(keyword(g) for g in groups)}})
    if public_before is not None:  # a document without a visit date has no value: no match
        should.append({"range": {"visit_date": {"lt": public_before, "format": "strict_date"}}})
    if not should:
        return [_MATCH_NONE]
    if len(should) == 1:
        return should
    return [{"bool": {"should": should, "minimum_should_match": 1}}]


#: Not a part of a stored master's dataset (es_links keeps ``master`` set exactly then).
COLLAPSE_FILTER: JSONDict = {"bool": {"must_not": [{"exists": {"field": "master"}}]}}


def prefix_filter(prefix: str) -> JSONDict:
    """Paths that are ``prefix`` or below it, exactly as query.under_prefix decides."""
    prefix = prefix.rstrip("/") or "/"
    try:
        raw = path_key(prefix)
    except UnicodeEncodeError:  # no file system path has this
        return _MATCH_NONE
    if raw == "/":
        return {"prefix": {"path_key": "/"}}
    return {
        "bool": {
            "should": [{"term": {"path_key": raw}}, {"term": {"ancestors": raw}}],
            "minimum_should_match": 1,
        }
    }


def scope_filter(scope: str, recursive: bool) -> JSONDict:
    """Violations an audit of ``scope`` covers: the path itself, and below if recursive."""
    try:
        raw = path_key(scope)
    except UnicodeEncodeError:
        return _MATCH_NONE
    exact: JSONDict = {"term": {"path_key": raw}}
    if not recursive:
        return exact
    return {"bool": {"should": [exact, prefix_filter(scope)], "minimum_should_match": 1}}


def _wildcard_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def _long_term_filters(key: str) -> list[JSONDict]:
    """A term of more than SUFFIX_MAX_BYTES (in fts_key) as substrings of ``search`` lines.

    Lucene builds an automaton for each ``*term*`` pattern, whose cost grows with the
    square of the term's length for a repetitive term; past MAX_EXACT_TERM characters, a
    term is looked up as overlapping pieces of that length, each of which must occur (a
    superset: found as well are lines holding the pieces but not the whole).
    """
    if len(key) <= MAX_EXACT_TERM:
        pieces = [key]
    else:
        starts = [*range(0, len(key) - MAX_EXACT_TERM, MAX_EXACT_TERM // 2)]
        pieces = [key[s : s + MAX_EXACT_TERM] for s in [*starts, len(key) - MAX_EXACT_TERM]]
    return [
        {"wildcard": {"search": {"value": "*" + _wildcard_escape(piece) + "*"}}}
        for piece in dict.fromkeys(pieces)
    ]


def text_filters(terms: tuple[str, ...]) -> list[JSONDict]:
    """Each term a substring of the lower-cased search text (as query.matches says).

    A term (no whitespace: SearchQuery.terms splits on it) of up to SUFFIX_MAX_BYTES is
    a ``prefix`` of a ``search_suffixes`` value (the suffixes of each word, see
    es_schema.search_suffixes), or, in the few documents too large for suffixes, a
    substring of a ``search_overflow`` line; a longer term is looked for in the lines of
    ``search`` (see _long_term_filters).
    """
    clauses: list[JSONDict] = []
    for key in dict.fromkeys(fts_key(term) for term in terms):
        if len(key) > SUFFIX_MAX_BYTES:
            clauses.extend(_long_term_filters(key))
            continue
        pattern = "*" + _wildcard_escape(key) + "*"
        either = [
            {"prefix": {"search_suffixes": key}},
            {"wildcard": {"search_overflow": {"value": pattern}}},
        ]
        clauses.append({"bool": {"should": either, "minimum_should_match": 1}})
    return clauses


def filters(query: SearchQuery) -> list[JSONDict]:
    """Every condition of ``query``."""
    clauses = access_filter(query.groups, query.public_before)
    if query.collapse:
        clauses.append(COLLAPSE_FILTER)
    for name in _EQUALITY_FILTERS:
        value = getattr(query, name)
        if value is not None:
            clauses.append({"term": {name: keyword(value)}})
    if query.path_prefix is not None:
        clauses.append(prefix_filter(query.path_prefix))
    bounds: JSONDict = {}
    if query.start_from is not None:
        bounds["gte"] = order_key(query.start_from)
    if query.start_to is not None:
        bounds["lte"] = order_key(query.start_to)
    if bounds:
        clauses.append({"range": {"start_time": bounds}})
    clauses.extend(text_filters(query.terms))
    return clauses


def bool_query(clauses: list[JSONDict]) -> JSONDict:
    return {"bool": {"filter": clauses}} if clauses else {"match_all": {}}


def sort_clause(sort: str) -> list[JSONDict]:
    order = "desc" if sort.startswith("-") else "asc"
    return [{SORT_FIELDS[sort.lstrip("-")]: {"order": order}}, {"id_key": {"order": order}}]


def search_after(value: object, doc_id: str) -> list[object]:
    """The search_after values of a decoded cursor."""
    return [order_key(value) if isinstance(value, str) else value, order_key(doc_id)]


#: A caller with at most this many groups (and no embargo) sees the files of a few
#: proposals only: their facets are counted from the matching documents' values
#: (``execution_hint: map``) rather than through the index-wide global ordinals.
#: Measured on the API benchmark's 100,000 documents (1-4 groups a user): 3.8 against
#: 5.4 ms of `took` a search; for a caller who sees everything, map took 44 against 14.
FEW_GROUPS = 8


def few_documents(groups: frozenset[str] | None, public_before: str | None) -> bool:
    """Whether the access filter leaves the files of a few proposals only."""
    return groups is not None and len(groups) <= FEW_GROUPS and public_before is None


def facet_aggs(names: tuple[str, ...], *, few: bool = False) -> JSONDict:
    """The facets' terms aggregations; ``few`` (see few_documents) counts from the
    matching documents' values."""
    terms: JSONDict = {"size": FACET_MAX_VALUES}
    if few:
        terms["execution_hint"] = "map"
    return {name: {"terms": {"field": name, **terms}} for name in dict.fromkeys(names)}
