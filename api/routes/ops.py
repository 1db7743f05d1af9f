"""``/healthz``, ``/readyz`` and ``/metrics``: for load balancers, systemd and Prometheus.

None of them needs credentials, so none tells anything about the catalogue's contents:
health is the process answering; readiness is whether the store (and the directory,
when one is configured and can be pinged: a directory with a ``ping()`` method) can
be asked, with no error text; metrics are counts by route
template and status.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import Context
from api.models import Health, Readiness
from catalogd.errors import CatalogdError

router = APIRouter(tags=["operations"])
log = logging.getLogger("catalogd.api")


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The API process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(ctx: Context, response: Response) -> Readiness:
    """Whether the store and the directory can be asked now."""
    checks: dict[str, str] = {}
    try:
        ctx.store.count()
        checks["store"] = "ok"
    except CatalogdError as exc:
        log.warning("readiness: the store is unavailable: %s", exc)
        checks["store"] = "unavailable"
    if ctx.directory is None:
        checks["directory"] = "not configured"
    else:
        ping = getattr(ctx.directory, "ping", None)
        try:
            if callable(ping):
                ping()
                checks["directory"] = "ok"
            else:
                checks["directory"] = "not checked"
        except CatalogdError as exc:
            log.warning("readiness: the directory is unavailable: %s", exc)
            checks["directory"] = "unavailable"
    ready = "unavailable" not in checks.values()
    if not ready:
        response.status_code = 503
    return Readiness.model_validate(
        {"status": "ready" if ready else "unavailable", "checks": checks}
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(ctx: Context) -> Response:
    """Prometheus text format: requests, durations, failed logins, unavailability."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
