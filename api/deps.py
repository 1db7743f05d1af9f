"""FastAPI dependencies: the shared context and the caller's principal.

:func:`current_principal` is the one way a route learns who is asking. It is a plain
(synchronous) function, so FastAPI runs it in its thread pool: the directory lookups
it makes (an LDAP bind, a group search) never block the event loop. The other
dependencies (:func:`context`, :func:`single_valued_query`) only read the request, so
they are ``async`` and run on the event loop: each sync one costs a hand-off to the
thread pool and back (under load the hand-offs of a search took about a quarter of a
worker's GIL time, by py-spy). The ``Basic`` and ``Bearer`` schemes are declared for
the OpenAPI description only; the header is read and checked by
:class:`~api.auth.Authenticator`, which counts every failure against the caller's
address.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBasic, HTTPBearer
from starlette.requests import HTTPConnection

from api.auth import MAX_USER_LENGTH, USER_HEADER, Credentials
from api.context import ApiContext
from api.principal import Principal


class _BasicScheme(HTTPBasic):
    """Declares HTTP Basic in the OpenAPI description; reads nothing itself."""

    async def __call__(self, request: HTTPConnection) -> Any:
        return None


class _BearerScheme(HTTPBearer):
    """Declares Bearer tokens in the OpenAPI description; reads nothing itself."""

    async def __call__(self, request: HTTPConnection) -> Any:
        return None


basic_scheme = _BasicScheme(
    scheme_name="HTTPBasic",
    auto_error=False,
    description="Directory (LDAP) user name and password.",
)
bearer_scheme = _BearerScheme(
    scheme_name="HTTPBearer",
    auto_error=False,
    description="An OpenID Connect token of the configured issuer, or a service token "
    f"(with the end user named in {USER_HEADER}).",
)


async def context(request: Request) -> ApiContext:
    ctx = request.app.state.catalogd
    assert isinstance(ctx, ApiContext)
    return ctx


def current_principal(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    _basic: Annotated[None, Security(basic_scheme)],
    _bearer: Annotated[None, Security(bearer_scheme)],
    acting_for: Annotated[
        str | None,
        Header(
            alias=USER_HEADER,
            max_length=MAX_USER_LENGTH,
            description="With a service token only: the end user it acts for.",
        ),
    ] = None,
) -> Principal:
    source = request.client.host if request.client is not None else "unknown"
    credentials = Credentials(request.headers.get("authorization"), acting_for, source)
    return ctx.authenticator.authenticate(credentials)


Caller = Annotated[Principal, Depends(current_principal)]
Context = Annotated[ApiContext, Depends(context)]


async def single_valued_query(request: Request) -> None:
    """Every query parameter the API describes takes one value: one given more than once
    (``?q=a&q=b``) is refused with 422, not silently read as its last value."""
    params = request.query_params
    repeated = sorted({name for name in params if len(params.getlist(name)) > 1})
    if repeated:
        raise RequestValidationError(
            [
                {
                    "type": "repeated_parameter",
                    "loc": ("query", name),
                    "msg": "given more than once; it takes one value",
                    "input": params.getlist(name),
                }
                for name in repeated
            ]
        )


#: For the routers of ``/api/v1``: see :func:`single_valued_query`.
SINGLE_VALUED = [Depends(single_valued_query)]
