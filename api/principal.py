"""Who is asking: the principal every API request is answered for, and the directory
interface that authenticates users and resolves their effective groups.

The application depends only on :class:`Directory`; :mod:`api.ldap` implements it with
ldap3 against a real directory, and unit tests of pure logic may pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from catalogd.errors import EX_UNAVAILABLE, CatalogdError

ROLE_AUDITOR = "auditor"
ROLE_ADMIN = "admin"


class DirectoryUnavailable(CatalogdError):
    """The directory cannot be reached (or answered with an error) and nothing usable is
    cached: the API fails closed with 503, never open."""

    exit_code = EX_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``groups`` are the *effective* groups resolved by the server (nested groups
    included, blank names dropped), never anything the client sent. ``via`` says how
    the caller authenticated (``ldap``, ``oidc`` or ``service:<token name>``); for a
    service token ``user`` is the end user it acts for, and only that user's groups
    apply.
    """

    user: str
    groups: frozenset[str]
    roles: frozenset[str] = field(default_factory=frozenset)
    via: str = "ldap"

    @property
    def is_auditor(self) -> bool:
        return ROLE_AUDITOR in self.roles or ROLE_ADMIN in self.roles

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles


class Directory(Protocol):
    """The facility's directory, as the API needs it."""

    def authenticate(self, user: str, password: str) -> bool:
        """True when ``user`` exists and ``password`` binds as them; False for a wrong
        user or password (including an empty password, which must never be taken as an
        anonymous bind). Raises :class:`DirectoryUnavailable` when the directory cannot
        be asked."""
        ...

    def groups_of(self, user: str) -> frozenset[str]:
        """The effective groups of ``user`` (nested memberships followed, empty set for
        an unknown user), from a short-lived cache or the directory. Raises
        :class:`DirectoryUnavailable` when the directory cannot be asked and the cache
        has no live entry."""
        ...
