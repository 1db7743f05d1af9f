"""Authentication: from the ``Authorization`` header to a :class:`~api.principal.Principal`.

Three ways in, all ending with groups the *server* resolves from the directory:

* ``Basic`` user and password, checked by :meth:`Directory.authenticate` (an LDAP
  bind); an empty user or password is refused without asking the directory.
* ``Bearer`` service token (:mod:`api.tokens`), for the data portal: the end user it
  acts for is named in the ``X-Catalogd-User`` header and only *that user's* groups
  apply; a service token without the header is refused.
* ``Bearer`` OpenID Connect JWT (:mod:`api.oidc`): the username claim names the user.

The ``X-Catalogd-User`` header is refused with any other credentials, so it can never
change who a caller is. Every failure counts against the source address
(:mod:`api.throttle`) and a source over the limit is refused before its credentials are
read. Roles come from the configured auditor and admin groups met by the resolved
groups. This module knows nothing about HTTP responses: it raises
:class:`Unauthenticated`, :class:`~api.throttle.Throttled`,
:class:`~api.principal.DirectoryUnavailable` or :class:`~api.oidc.KeysUnavailable`,
which :mod:`api.app` turns into 401, 429 and 503.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from api.metrics import ApiMetrics
from api.oidc import InvalidToken, OidcVerifier
from api.principal import ROLE_ADMIN, ROLE_AUDITOR, Directory, DirectoryUnavailable, Principal
from api.throttle import LoginThrottle
from api.tokens import ServiceTokens
from catalogd.config import ApiSettings
from catalogd.errors import CatalogdError

log = logging.getLogger("catalogd.api")

#: The header a service token names its end user in.
USER_HEADER = "X-Catalogd-User"
#: Longest user name accepted from a client (Basic, token claim or header).
MAX_USER_LENGTH = 256
REALM = "catalogd"


class Unauthenticated(CatalogdError):
    """No credentials, or credentials that do not prove who the caller is (401)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented: its Authorization header, the user a service token
    acts for, and where it came from."""

    authorization: str | None
    acting_for: str | None
    source: str


class Authenticator:
    """Turns credentials into a principal; see the module docstring for the rules."""

    def __init__(
        self,
        settings: ApiSettings,
        directory: Directory | None,
        *,
        throttle: LoginThrottle,
        metrics: ApiMetrics,
        service_tokens: ServiceTokens | None = None,
        oidc: OidcVerifier | None = None,
    ) -> None:
        self.directory = directory
        self.throttle = throttle
        self.metrics = metrics
        self.service_tokens = service_tokens if service_tokens is not None else ServiceTokens()
        self.oidc = oidc
        self.auditor_groups = frozenset(settings.auditor_groups)
        self.admin_groups = frozenset(settings.admin_groups)

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401: the schemes this server takes."""
        schemes = [f'Basic realm="{REALM}", charset="UTF-8"']
        if self.oidc is not None or self.service_tokens:
            schemes.append(f'Bearer realm="{REALM}"')
        return ", ".join(schemes)

    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal the credentials prove, or an exception (see the module docstring)."""
        if not credentials.authorization:
            raise Unauthenticated("authentication required")
        self.throttle.check(credentials.source)
        scheme, _, value = credentials.authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "basic":
            self._no_acting_for(credentials)
            user = self._basic(value, credentials.source)
            return self.principal(user, via="ldap")
        if scheme == "bearer" and value:
            service = self.service_tokens.match(value) if self.service_tokens else None
            if service is not None:
                return self._service(service, credentials)
            if self.oidc is not None and value.count(".") == 2:
                self._no_acting_for(credentials)
                try:
                    user = _user_name(self.oidc.username(value))
                except InvalidToken as exc:
                    self._failed("oidc", credentials.source, str(exc))
                    raise Unauthenticated(exc.message) from None
                return self.principal(user, via="oidc")
            self._failed("service", credentials.source, "unknown bearer token")
            raise Unauthenticated("the bearer token is not valid")
        raise Unauthenticated("use Basic or Bearer credentials")

    def principal(self, user: str, *, via: str) -> Principal:
        """The principal for ``user``: effective groups from the directory, roles from them."""
        groups = frozenset(g for g in self._directory().groups_of(user) if g.strip())
        roles = set()
        if groups & self.auditor_groups:
            roles.add(ROLE_AUDITOR)
        if groups & self.admin_groups:
            roles.add(ROLE_ADMIN)
        return Principal(user=user, groups=groups, roles=frozenset(roles), via=via)

    # -- the schemes -----------------------------------------------------------------------
    def _basic(self, value: str, source: str) -> str:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            self._failed("basic", source, "malformed Basic credentials")
            raise Unauthenticated("malformed Basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep or not user or not password or len(user) > MAX_USER_LENGTH:
            self._failed("basic", source, "empty or malformed user or password")
            raise Unauthenticated("wrong user name or password")
        if not self._directory().authenticate(user, password):
            self._failed("basic", source, f"wrong password for {user!r}")
            raise Unauthenticated("wrong user name or password")
        return user

    def _service(self, name: str, credentials: Credentials) -> Principal:
        acting_for = credentials.acting_for
        if acting_for is None or not acting_for.strip():
            self._failed("service", credentials.source, f"token {name!r} named no user")
            raise Unauthenticated(
                f"a service token must name the user it acts for in {USER_HEADER}"
            )
        try:
            user = _user_name(acting_for.strip())
        except InvalidToken as exc:
            self._failed("service", credentials.source, str(exc))
            raise Unauthenticated(exc.message) from None
        return self.principal(user, via=f"service:{name}")

    def _no_acting_for(self, credentials: Credentials) -> None:
        if credentials.acting_for is not None:
            self._failed("header", credentials.source, f"{USER_HEADER} without a service token")
            raise Unauthenticated(f"{USER_HEADER} is accepted with a service token only")

    def _directory(self) -> Directory:
        if self.directory is None:
            raise DirectoryUnavailable("no directory is configured ([ldap] url)")
        return self.directory

    def _failed(self, method: str, source: str, reason: str) -> None:
        self.metrics.auth_failures.labels(method).inc()
        self.throttle.failed(source)
        log.warning("failed %s authentication from %s: %s", method, source, reason)


def _user_name(value: str) -> str:
    if len(value) > MAX_USER_LENGTH or not value.isprintable():
        raise InvalidToken("the user name is too long or contains control characters")
    return value
