"""The FastAPI application: :func:`create_app` wires settings, store and directory.

Routes live in :mod:`api.routes`; who the caller is comes from :mod:`api.auth` through
the :func:`api.deps.current_principal` dependency. Errors become HTTP answers here, and
only here:

* :class:`~api.auth.Unauthenticated` -> 401 with ``WWW-Authenticate``;
* :class:`~api.throttle.Throttled` -> 429 with ``Retry-After``;
* :class:`~api.principal.DirectoryUnavailable`, :class:`~api.oidc.KeysUnavailable` and
  any :class:`~catalogd.errors.StoreError` -> 503 with a fixed, generic message: the
  real reason (which may name a host, a file or a backend error) goes to the log only.

The application holds no global state: metrics live on a registry of its own, so tests
(and ``catalogd run``) can build several in one process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api import web
from api.auth import Authenticator, Unauthenticated
from api.context import ApiContext
from api.metrics import ApiMetrics, MetricsMiddleware
from api.oidc import KeysUnavailable, OidcVerifier
from api.principal import Directory, DirectoryUnavailable
from api.routes import catalogue, ops, violations
from api.throttle import LoginThrottle, Throttled
from api.tokens import ServiceTokens
from catalogd import __version__
from catalogd.config import ApiSettings, Settings
from catalogd.errors import StoreError
from catalogd.store.base import Store

log = logging.getLogger("catalogd.api")

STORE_DOWN = "the catalogue is unavailable; try again later"
DIRECTORY_DOWN = "the directory is unavailable; try again later"
KEYS_DOWN = "the token issuer's keys are unavailable; try again later"


def create_app(
    settings: Settings,
    store: Store,
    *,
    directory: Directory | None = None,
    clock: Callable[[], float] = time.time,
    throttle: LoginThrottle | None = None,
) -> FastAPI:
    """The search API over ``store``, authenticating against ``directory`` (None: no
    directory, so every catalogue request answers 503). ``clock`` gives POSIX time (the
    login throttle and the embargo); tests pass their own. ``throttle`` is the record of
    failed logins (default: this process's own; several workers share one)."""
    metrics = ApiMetrics()
    authenticator = Authenticator(
        settings.api,
        directory,
        throttle=throttle
        or LoginThrottle(
            max_failures=settings.api.login_max_failures,
            window_s=settings.api.login_window_s,
            clock=clock,
        ),
        metrics=metrics,
        service_tokens=ServiceTokens.load(settings.api.service_tokens_file),
        oidc=oidc_verifier(settings.api),
    )
    app = FastAPI(
        title="catalogd",
        version=__version__,
        description="Search a light source's data catalogue: every answer holds only "
        "what the caller's proposal groups allow.",
    )
    app.state.catalogd = ApiContext(
        settings=settings,
        store=store,
        directory=directory,
        authenticator=authenticator,
        metrics=metrics,
        clock=clock,
    )
    app.include_router(catalogue.router)
    app.include_router(violations.router)
    app.include_router(ops.router)
    web.install(app, settings.api)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app, authenticator, metrics)
    return app


def oidc_verifier(api: ApiSettings) -> OidcVerifier | None:
    """The token verifier ``[api]`` configures, or None when no issuer is set."""
    if api.oidc_issuer is None or api.oidc_audience is None:
        return None
    return OidcVerifier(
        issuer=api.oidc_issuer,
        audience=api.oidc_audience,
        algorithms=api.oidc_algorithms,
        username_claim=api.oidc_username_claim,
        leeway_s=api.oidc_leeway_s,
        jwks_url=api.oidc_jwks_url,
        cache_s=api.oidc_jwks_cache_s,
        cooldown_s=api.oidc_jwks_cooldown_s,
    )


def _add_error_handlers(app: FastAPI, authenticator: Authenticator, metrics: ApiMetrics) -> None:
    def unauthenticated(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Unauthenticated)
        return JSONResponse(
            {"detail": exc.message},
            status_code=401,
            headers={"WWW-Authenticate": authenticator.challenge},
        )

    def throttled(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Throttled)
        metrics.throttled.inc()
        return JSONResponse(
            {"detail": exc.message},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )

    def unavailable(dependency: str, message: str) -> Callable[[Request, Exception], JSONResponse]:
        def handler(request: Request, exc: Exception) -> JSONResponse:
            metrics.unavailable.labels(dependency).inc()
            log.error(
                "%s %s: %s unavailable: %s", request.method, request.url.path, dependency, exc
            )
            return JSONResponse({"detail": message}, status_code=503, headers={"Retry-After": "5"})

        return handler

    app.add_exception_handler(Unauthenticated, unauthenticated)
    app.add_exception_handler(Throttled, throttled)
    app.add_exception_handler(StoreError, unavailable("store", STORE_DOWN))
    app.add_exception_handler(DirectoryUnavailable, unavailable("directory", DIRECTORY_DOWN))
    app.add_exception_handler(KeysUnavailable, unavailable("oidc_keys", KEYS_DOWN))
