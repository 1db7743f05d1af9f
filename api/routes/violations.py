"""``GET /api/v1/violations``: the recorded policy violations, for auditors.

Auditors (and admins) see every violation: the report is the facility's, not a
proposal's. Anyone else gets 403 before the store is asked anything, with a body that
depends on nothing they sent. ``format=csv`` answers with the same CSV writer as
``catalogd violations --format csv``.
"""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from api.deps import SINGLE_VALUED, Caller, Context
from api.models import ErrorBody, ViolationItem, ViolationParams, ViolationsResponse
from api.routes.catalogue import COMMON_ERRORS
from catalogd.report import FIELDS, HISTORY_FIELDS, record
from catalogd.report.csvfile import write_csv
from catalogd.violations import ViolationState

router = APIRouter(prefix="/api/v1", tags=["violations"], dependencies=SINGLE_VALUED)

FORBIDDEN = "auditors only"


@router.get(
    "/violations",
    response_model=ViolationsResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        403: {"model": ErrorBody, "description": "The caller is not an auditor."},
        **COMMON_ERRORS,
    },
)
def violations(
    params: Annotated[ViolationParams, Query()], principal: Caller, ctx: Context
) -> ViolationsResponse | Response:
    """Policy violations in a state (open by default), optionally under a directory."""
    if not principal.is_auditor:
        raise HTTPException(403, detail=FORBIDDEN)
    found = ctx.store.violations(state=ViolationState(params.state), path_prefix=params.path_prefix)
    records = [record(v, history=True) for v in found]
    if params.format == "csv":
        out = io.StringIO()
        write_csv(records, FIELDS + HISTORY_FIELDS, out)
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="violations.csv"'},
        )
    return ViolationsResponse(
        total=len(records), items=[ViolationItem.model_validate(r) for r in records]
    )
