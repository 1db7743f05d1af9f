"""The web pages: search, one file, the auditors' violations dashboard, login and logout.

Every page answers for the principal the session cookie names (or the request's own
``Authorization`` header: Basic, or an OpenID Connect bearer token where configured),
through the same code as the API: the search builds its store query with
:func:`api.routes.catalogue.search_query`, a file is looked up with
:func:`api.routes.catalogue.visible_document` (404 for what the caller may not see, as
the API), and the dashboard reads :func:`api.routes.violations.violations` (403 for
anyone but auditors, as the API; its CSV is the API's writer). No page asks the store in
a looser way.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import secrets
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import Credentials, Unauthenticated
from api.context import ApiContext
from api.models import FileItem, SearchParams, ViolationParams
from api.oidc import KeysUnavailable
from api.principal import DirectoryUnavailable, Principal
from api.routes import catalogue
from api.routes import violations as violation_routes
from api.throttle import Throttled
from api.web.chart import svg_paths, timeline
from api.web.session import (
    COOKIE_PATH,
    CSRF_COOKIE,
    SESSION_COOKIE,
    SessionSigner,
)
from catalogd.document import FileDocument, display_path, document_id
from catalogd.errors import StoreError, UsageError
from catalogd.report import FIELDS, HISTORY_FIELDS
from catalogd.report.csvfile import write_csv
from catalogd.store.base import FACET_FIELDS

log = logging.getLogger("catalogd.api")
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/ui", include_in_schema=False)

FACET_LABELS = {
    "beamline": "Beamline",
    "proposal": "Proposal",
    "visit": "Visit",
    "user_type": "User type",
    "kind": "Kind",
}
SORTS = {
    "path": "Path",
    "-start_time": "Newest measurement",
    "start_time": "Oldest measurement",
    "-mtime": "Recently modified",
    "-size": "Largest",
    "size": "Smallest",
    "-indexed_at": "Recently catalogued",
}
SEARCH_KEYS: tuple[str, ...] = ("q", "beamline", "proposal", "visit", "user_type", "kind")
SEARCH_KEYS += ("start_from", "start_to", "sort", "cursor", "collapse", "path_prefix")
#: Data files of a master listed (and checked one by one) on its page.
MAX_DATA_FILES = 100
#: Violations listed in the dashboard's table (the CSV has them all).
MAX_TABLE_ROWS = 500
MAX_FORM_BYTES = 8192
UNAVAILABLE = "The catalogue or the directory is unavailable; try again later."
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _ctx(request: Request) -> ApiContext:
    ctx = request.app.state.catalogd
    assert isinstance(ctx, ApiContext)
    return ctx


def _signer(request: Request) -> SessionSigner:
    signer = request.app.state.catalogd_web
    assert isinstance(signer, SessionSigner)
    return signer


def _source(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class LoginRequired(Exception):
    """No session and no credentials: the page sends the browser to the login form."""


def _principal(request: Request) -> Principal:
    """The caller: from the Authorization header when there is one (checked exactly as
    the API checks it), else from a valid session cookie (its user's groups resolved
    again now)."""
    ctx = _ctx(request)
    if request.headers.get("authorization"):
        credentials = Credentials(request.headers["authorization"], None, _source(request))
        return ctx.authenticator.authenticate(credentials)
    session = _signer(request).read(request.cookies.get(SESSION_COOKIE), ctx.clock())
    if session is None:
        raise LoginRequired
    return ctx.authenticator.principal(session.user, via="web")


def _render(
    request: Request,
    template: str,
    principal: Principal | None,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    cookie = request.cookies.get(SESSION_COOKIE)
    csrf = _signer(request).csrf_for(cookie) if cookie and principal is not None else ""
    response = templates.TemplateResponse(
        request,
        template,
        {"principal": principal, "csrf": csrf, **values},
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def _error(request: Request, status: int, message: str, principal: Principal | None) -> Response:
    return _render(request, "error.html", principal, status, status=status, message=message)


def _guarded(request: Request, page: Any) -> Response:
    """Runs ``page(principal)``, turning the failures into the pages' answers: the login
    form, 401/429 and a generic 503 (the reason only in the log), HTTP errors as pages."""
    principal: Principal | None = None
    ctx = _ctx(request)
    try:
        principal = _principal(request)
        result: Response = page(principal)
        return result
    except LoginRequired:
        target = "/ui/login?" + urllib.parse.urlencode({"next": _next_of(request)})
        return RedirectResponse(target, status_code=303)
    except Unauthenticated as exc:
        response = _error(request, 401, exc.message, None)
        response.headers["WWW-Authenticate"] = ctx.authenticator.challenge
        return response
    except Throttled as exc:
        ctx.metrics.throttled.inc()
        response = _error(request, 429, exc.message, None)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except HTTPException as exc:
        return _error(request, exc.status_code, str(exc.detail), principal)
    except (StoreError, DirectoryUnavailable, KeysUnavailable) as exc:
        dependency = "store" if isinstance(exc, StoreError) else "directory"
        ctx.metrics.unavailable.labels(dependency).inc()
        log.error("%s %s: %s unavailable: %s", request.method, request.url.path, dependency, exc)
        return _error(request, 503, UNAVAILABLE, principal)


def _next_of(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return request.url.path + query


def _safe_next(value: str | None) -> str:
    """Where to go after login: a page of this site's /ui only (no open redirect)."""
    if value and value.startswith("/ui/") and "//" not in value and "\\" not in value:
        return value
    return "/ui/search"


# -- search -----------------------------------------------------------------------------
def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _link(filters: dict[str, str], **changes: str | None) -> str:
    """This search with ``changes`` (None removes a key); a new filter starts at page 1."""
    merged = {k: v for k, v in filters.items() if k != "cursor"}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return "/ui/search?" + urllib.parse.urlencode(merged)


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request) -> Response:
    raw = {k: v for k, v in request.query_params.items() if k in SEARCH_KEYS and v != ""}
    collapse = raw.get("collapse", "true") != "false"

    def page(principal: Principal) -> Response:
        ctx = _ctx(request)
        try:
            params = SearchParams.model_validate({**raw, "collapse": collapse})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            return _render(request, "search.html", principal, 400, error=problems, **_empty(raw))
        try:
            query = catalogue.search_query(params, principal, ctx, facets=FACET_FIELDS)
            result = ctx.store.search(query)
        except (UsageError, ValueError) as exc:  # a cursor that is not one, as the API
            return _render(request, "search.html", principal, 400, error=str(exc), **_empty(raw))
        rows = [_row(doc) for doc in result.items]
        facets = {
            name: sorted(
                ((display_path(v), n) for v, n in result.facets.get(name, {}).items()),
                key=lambda item: (-item[1], item[0]),
            )
            for name in FACET_LABELS
        }
        return _render(
            request,
            "search.html",
            principal,
            filters=raw,
            total=result.total,
            rows=rows,
            facets=facets,
            next_link=_link(raw, cursor=result.next_cursor) if result.next_cursor else None,
            **_common(raw),
        )

    return _guarded(request, page)


def _common(raw: dict[str, str]) -> dict[str, Any]:
    return {
        "facet_labels": FACET_LABELS,
        "sorts": SORTS,
        "link": lambda **changes: _link(raw, **changes),
        "collapse": raw.get("collapse", "true") != "false",
    }


def _empty(raw: dict[str, str]) -> dict[str, Any]:
    return {"filters": raw, "total": 0, "rows": [], "facets": {}, "next_link": None, **_common(raw)}


def _row(doc: FileDocument) -> dict[str, Any]:
    metadata = doc.metadata if isinstance(doc.metadata, dict) else {}
    count = None
    if metadata.get("role") == "master":
        count = metadata.get("data_file_count")
        if not isinstance(count, int) and isinstance(metadata.get("data_files"), list):
            count = len(metadata["data_files"])
    return {
        "id": doc.id,
        "path": display_path(doc.path),
        "title": doc.title,
        "sample": doc.sample,
        "start_time": doc.start_time,
        "size": human_size(doc.size),
        "kind": doc.kind,
        "data_files": count if isinstance(count, int) else None,
    }


# -- one file ---------------------------------------------------------------------------
@router.get("/files/{doc_id}", response_class=HTMLResponse)
def file_page(request: Request, doc_id: str) -> Response:
    def page(principal: Principal) -> Response:
        ctx = _ctx(request)
        doc = catalogue.visible_document(doc_id, principal, ctx)
        if doc is None:
            raise HTTPException(404, detail=catalogue.NOT_FOUND)
        item = FileItem.of(doc)
        metadata = doc.metadata if isinstance(doc.metadata, dict) else {}
        data_files: list[dict[str, str]] = []
        named = metadata.get("data_files") if item.role == "master" else None
        hidden = 0
        if isinstance(named, list):
            for path in named[:MAX_DATA_FILES]:
                if not isinstance(path, str):
                    continue
                part = catalogue.visible_document(document_id(path), principal, ctx)
                if part is None:
                    hidden += 1
                else:
                    data_files.append({"id": part.id, "path": display_path(part.path)})
        master = None
        if isinstance(metadata.get("master"), str):
            found = catalogue.visible_document(document_id(metadata["master"]), principal, ctx)
            if found is not None:
                master = {"id": found.id, "path": display_path(found.path)}
        structure = metadata.get("structure")
        return _render(
            request,
            "file.html",
            principal,
            item=item,
            fields=item.model_dump(exclude={"entries"}),
            size=human_size(item.size),
            structure=structure if isinstance(structure, dict) else None,
            data_files=data_files,
            not_listed=hidden + max(0, len(named) - MAX_DATA_FILES)
            if isinstance(named, list)
            else 0,
            data_file_count=metadata.get("data_file_count"),
            master=master,
        )

    return _guarded(request, page)


# -- the violations dashboard -----------------------------------------------------------
VIOLATION_FILTERS = ("state", "rule", "beamline", "proposal", "path_prefix")


def _violations(
    request: Request, principal: Principal
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """Every violation (through the API's route: 403 for non-auditors) and those the
    dashboard's filters keep."""
    filters = {k: v for k, v in request.query_params.items() if k in VIOLATION_FILTERS and v != ""}
    state = filters.get("state", "open")
    prefix = filters.get("path_prefix")
    try:
        params = ViolationParams.model_validate({"state": "all", "path_prefix": prefix})
    except ValidationError:
        raise HTTPException(400, detail="path_prefix must be an absolute path") from None
    answer = violation_routes.violations(params, principal, _ctx(request))
    assert not isinstance(answer, Response)
    everything = [item.model_dump() for item in answer.items]
    kept = [
        v
        for v in everything
        if (state == "all" or (state == "open") == (v["resolved_at"] is None))
        and all(v[k] == filters[k] for k in ("rule", "beamline", "proposal") if k in filters)
    ]
    return everything, kept, filters


@router.get("/violations", response_class=HTMLResponse)
def violations_page(request: Request) -> Response:
    def page(principal: Principal) -> Response:
        everything, kept, filters = _violations(request, principal)
        open_ = [v for v in everything if v["resolved_at"] is None]
        counts = {
            name: Counter(str(v[name] or "(none)") for v in open_).most_common()
            for name in ("rule", "beamline", "proposal")
        }
        now = dt.datetime.fromtimestamp(_ctx(request).clock(), tz=dt.UTC)
        series = timeline(((v["first_seen"], v["resolved_at"]) for v in everything), now)
        query = urllib.parse.urlencode(filters)
        return _render(
            request,
            "violations.html",
            principal,
            counts=counts,
            open_count=len(open_),
            resolved_count=len(everything) - len(open_),
            chart=svg_paths(series),
            series=series,
            rows=kept[:MAX_TABLE_ROWS],
            total=len(kept),
            max_rows=MAX_TABLE_ROWS,
            filters=filters,
            choices={
                name: sorted({str(v[name]) for v in everything if v[name]})
                for name in ("rule", "beamline", "proposal")
            },
            csv_link="/ui/violations.csv" + (f"?{query}" if query else ""),
        )

    return _guarded(request, page)


@router.get("/violations.csv")
def violations_csv(request: Request) -> Response:
    def page(principal: Principal) -> Response:
        _, kept, _ = _violations(request, principal)
        out = io.StringIO()
        write_csv(kept, FIELDS + HISTORY_FIELDS, out)
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="violations.csv"',
                "Cache-Control": "no-store",
            },
        )

    return _guarded(request, page)


# -- login and logout -------------------------------------------------------------------
def _cookie_flags(request: Request) -> dict[str, Any]:
    return {"httponly": True, "secure": request.url.scheme == "https", "path": COOKIE_PATH}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urllib.parse.urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=8)
    return {k: v[0] for k, v in fields.items() if v}


def _login_form(
    request: Request, status: int = 200, *, error: str | None = None, next_: str = ""
) -> Response:
    token = secrets.token_urlsafe(24)
    response = _render(
        request,
        "login.html",
        None,
        status,
        login_csrf=token,
        error=error,
        next=_safe_next(next_ or request.query_params.get("next")),
    )
    response.set_cookie(CSRF_COOKIE, token, samesite="strict", **_cookie_flags(request))
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return _login_form(request)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await _form(request)
    signer = _signer(request)
    next_ = _safe_next(form.get("next"))
    if not _same_origin(request) or not signer.csrf_matches(
        form.get("csrf"), request.cookies.get(CSRF_COOKIE)
    ):
        return _login_form(request, 403, error="The form expired; please try again.", next_=next_)
    user, password = form.get("username", ""), form.get("password", "")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    ctx = _ctx(request)
    try:
        await run_in_threadpool(
            ctx.authenticator.authenticate,
            Credentials(f"Basic {basic}", None, _source(request)),
        )
    except Unauthenticated:
        return _login_form(request, 401, error="Wrong user name or password.", next_=next_)
    except Throttled as exc:
        ctx.metrics.throttled.inc()
        response = _login_form(request, 429, error=exc.message, next_=next_)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except DirectoryUnavailable as exc:
        log.error("web login: directory unavailable: %s", exc)
        return _login_form(request, 503, error=UNAVAILABLE, next_=next_)
    response = RedirectResponse(next_, status_code=303)
    cookie = signer.make(user, ctx.clock())
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(signer.max_age_s),
        samesite="lax",
        **_cookie_flags(request),
    )
    response.delete_cookie(CSRF_COOKIE, path=COOKIE_PATH)
    log.info("web login of %r from %s", user, _source(request))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    signer = _signer(request)
    if (
        cookie is None
        or not _same_origin(request)
        or not signer.csrf_matches(form.get("csrf"), signer.csrf_for(cookie))
    ):
        return _error(request, 403, "The form expired; please try again.", None)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax")
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse("/ui/search", status_code=303)
