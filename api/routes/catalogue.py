"""``GET /api/v1/search`` and ``GET /api/v1/files/{id}``: the catalogue, as the caller
may see it.

Both pass the caller's groups (never None: that is the operator's unfiltered view) and
the embargo cutoff into the store, which applies them inside its query, so hits, totals,
facets and single documents all leave out what the caller may not see. A document the
caller may not see is answered exactly like one that does not exist: the same 404 and
body as any unknown path, and an id that is not a document id's shape is never looked
up at all.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response

from api.context import ApiContext
from api.deps import SINGLE_VALUED, Caller, Context
from api.models import ErrorBody, FileItem, SearchParams, SearchResponse, json_response
from api.principal import Principal
from catalogd.document import FileDocument, display_path
from catalogd.errors import UsageError
from catalogd.store.base import DEFAULT_FACETS, SearchQuery

router = APIRouter(prefix="/api/v1", tags=["catalogue"], dependencies=SINGLE_VALUED)

#: What a document id looks like (catalogd.document.document_id: 16 bytes, hex).
DOC_ID = re.compile(r"[0-9a-f]{32}")
#: The body of every 404, the same as the router's for an unknown path.
NOT_FOUND = "Not Found"
#: Sorts after anything that can follow a date in an ISO 8601 time.
END_OF_DAY = "\U0010ffff"

COMMON_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No or wrong credentials."},
    429: {"model": ErrorBody, "description": "Too many failed logins from this address."},
    503: {"model": ErrorBody, "description": "The catalogue or the directory is unavailable."},
}


@router.get(
    "/search",
    response_model=SearchResponse,
    responses={400: {"model": ErrorBody, "description": "Invalid cursor."}, **COMMON_ERRORS},
)
def search(params: Annotated[SearchParams, Query()], principal: Caller, ctx: Context) -> Response:
    """Files the caller may see that match every filter, one page in the chosen order."""
    try:
        result = ctx.store.search(search_query(params, principal, ctx))
    except (UsageError, ValueError) as exc:  # a cursor that is not one, for this sort
        raise HTTPException(400, detail=str(exc)) from None
    return json_response(
        SearchResponse(
            total=result.total,
            items=[FileItem.of(doc) for doc in result.items],
            next_cursor=result.next_cursor,
            facets={
                name: {display_path(value): count for value, count in counts.items()}
                for name, counts in result.facets.items()
            },
        )
    )


def search_query(
    params: SearchParams,
    principal: Principal,
    ctx: ApiContext,
    *,
    facets: tuple[str, ...] = DEFAULT_FACETS,
) -> SearchQuery:
    """The store query for ``params`` as ``principal`` may ask it: their groups and the
    embargo always applied (the API and the web pages both build it here). ValueError
    for a cursor that is not one."""
    return SearchQuery(
        text=params.q,
        beamline=params.beamline,
        proposal=params.proposal,
        visit=params.visit,
        user_type=params.user_type,
        kind=params.kind,
        path_prefix=params.path_prefix,
        start_from=params.start_from,
        start_to=_through_the_day(params.start_to),
        groups=principal.groups,
        public_before=ctx.public_before(),
        collapse=params.collapse,
        sort=params.sort,
        size=params.size,
        cursor=params.cursor,
        facets=facets,
    )


def _through_the_day(start_to: str | None) -> str | None:
    """A bare date as an upper bound includes that whole day: start times are compared
    as text, and every ISO time on that date sorts below the date followed by the
    highest code point."""
    if start_to is not None and len(start_to) == len("YYYY-MM-DD"):
        return start_to + END_OF_DAY
    return start_to


@router.get(
    "/files/{doc_id}",
    response_model=FileItem,
    responses={
        404: {"model": ErrorBody, "description": "No such file (for you)."},
        **COMMON_ERRORS,
    },
)
def get_file(
    doc_id: Annotated[str, Path(description="The document id (32 hex digits).")],
    principal: Caller,
    ctx: Context,
) -> Response:
    """One file, if it exists and the caller may see it; 404 in every other case."""
    doc = visible_document(doc_id, principal, ctx)
    if doc is None:
        raise HTTPException(404, detail=NOT_FOUND)
    return json_response(FileItem.of(doc))


def visible_document(doc_id: str, principal: Principal, ctx: ApiContext) -> FileDocument | None:
    """The document ``doc_id`` if it exists and ``principal`` may see it, else None (an
    id that is not one is never looked up). The API and the web pages both ask here."""
    if not DOC_ID.fullmatch(doc_id):
        return None
    return ctx.store.get(doc_id, groups=principal.groups, public_before=ctx.public_before())
