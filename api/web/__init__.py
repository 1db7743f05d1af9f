"""The web pages for people: search, a file's metadata, the auditors' violations
dashboard, login and logout (:mod:`api.web.pages`), server-rendered with Jinja2 under
``/ui`` by the same application as the API, with its authentication and its access
filter. Templates and the style sheet are served by the application itself (no CDN)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.web.pages import HERE, router
from api.web.session import SessionSigner, load_key
from catalogd.config import ApiSettings

log = logging.getLogger("catalogd.api")


def install(app: FastAPI, settings: ApiSettings) -> None:
    """Serve the pages under ``/ui`` (and send ``/`` there)."""
    app.state.catalogd_web = SessionSigner(
        load_key(settings.session_key_file), max_age_s=settings.session_max_age_s
    )
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/ui/search", status_code=303)
