# ldap3 ships no type hints (typeshed has them as types-ldap3):
# mypy: disable-error-code="import-untyped"
"""The facility's directory over LDAP (ldap3): logins and effective groups.

:class:`LdapDirectory` implements :class:`api.principal.Directory`. FastAPI calls it from
its thread pool, so it shares no connection between calls: each call opens its own
(``SYNC`` strategy), binds, asks, and unbinds; the only shared state is the group cache
and the bind cache, behind locks. Connect and receive timeouts come from ``[ldap] timeout_s``.

- **Searches** run under catalogd's service account (``bind_dn`` and its password; an
  anonymous bind when no ``bind_dn`` is set, for directories that allow reading).
- **authenticate** finds the user's entry by a search for the login name (escaped:
  see :mod:`api.ldap_query`), and only when exactly one entry matches binds as *that
  entry's DN* with the password. A DN is never built from the name. An empty password
  is refused before anything is sent: LDAP treats a DN with an empty password as an
  unauthenticated bind that "succeeds", which must never count as a login.
- **groups_of** resolves per ``[ldap] schema``: ``rfc2307`` (memberUid, plus the group
  of the user's primary gidNumber), ``rfc2307bis`` (member DNs, followed level by level
  to ``max_depth`` with a guard against cycles), ``ad`` (one search with the in-chain
  rule; the server follows the nesting). Unknown users have no groups.
- **Bind cache** (``bind_cache_ttl_s``, 0 by default: off): a successful password
  check is kept that long per user as a keyed digest (:class:`BindCache`), so a user's
  next requests skip the search and the bind (2.3-2.7 ms of the worker's CPU a login
  against a local slapd). A changed password or a locked account takes effect after
  at most that long; a wrong password is always asked of the directory.
- **Cache**: a user's groups are kept ``cache_ttl_s``. When the entry has expired and the
  directory cannot be asked, :class:`DirectoryUnavailable` is raised (the API answers
  503): stale groups are never served past their time and an outage never looks like
  "no groups". Answers resume by themselves when the directory is back.

ldap3's exceptions and result codes are translated here: wrong credentials are False,
everything else that goes wrong is DirectoryUnavailable, with the reason in the message
(never the password).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from api.ldap_query import GID_NUMBER, Queries, group_name
from api.principal import DirectoryUnavailable
from catalogd.config import LdapSettings
from catalogd.errors import ConfigError

with warnings.catch_warnings():
    # ldap3 2.9.1 imports names that pyasn1 0.6 deprecates (tagMap, typeMap): harmless,
    # not ours to fix, and silenced for this import only.
    warnings.filterwarnings("ignore", r"\w+ is deprecated\. Please use", DeprecationWarning)
    from ldap3 import ANONYMOUS, NONE, SIMPLE, SUBTREE, SYNC, Connection, Server, Tls
    from ldap3.core.exceptions import (
        LDAPException,
        LDAPInappropriateAuthenticationResult,
        LDAPInvalidCredentialsResult,
    )


log = logging.getLogger(__name__)

#: Longer login names are refused outright (no directory has them; no filter needs them).
MAX_NAME_LENGTH = 256
#: Entries per page of a group search (the paged-results control).
PAGE_SIZE = 500
#: Group DNs asked about in one nesting query.
DNS_PER_QUERY = 50
#: Users whose groups are cached at most; expired entries are dropped beyond it.
MAX_CACHED_USERS = 100_000

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class UserEntry:
    """A user as found in the directory."""

    dn: str
    gid: str | None = None


class TtlCache(Generic[V]):
    """A value per user for ``ttl_s`` seconds (0: no caching), thread-safe."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, V]] = {}

    def get(self, user: str) -> V | None:
        with self._lock:
            entry = self._entries.get(user)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[user]
                return None
            return entry[1]

    def put(self, user: str, value: V) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            now = self._clock()
            if len(self._entries) >= MAX_CACHED_USERS:
                live = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(live) >= MAX_CACHED_USERS:
                    live.clear()
                self._entries = live
            self._entries[user] = (now + self._ttl, value)

    def drop(self, user: str) -> None:
        with self._lock:
            self._entries.pop(user, None)


class GroupCache(TtlCache[frozenset[str]]):
    """Each user's groups for ``ttl_s`` seconds (0: no caching), thread-safe."""


class BindCache:
    """Each user's last successful password check for ``ttl_s`` seconds (0: none).

    Holds no password: a keyed HMAC-SHA256 of it, with a random key made per process
    and never written anywhere. Only a success is kept; a password that does not match
    the kept digest is not an answer here (the caller asks the directory, which counts
    a wrong one as a failure), and a failed bind forgets the user's entry."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = secrets.token_bytes(32)
        self._digests: TtlCache[bytes] = TtlCache(ttl_s, clock)

    def _digest(self, user: str, password: str) -> bytes:
        text = f"{user}\x00{password}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, text, hashlib.sha256).digest()

    def matches(self, user: str, password: str) -> bool:
        kept = self._digests.get(user)
        return kept is not None and hmac.compare_digest(kept, self._digest(user, password))

    def succeeded(self, user: str, password: str) -> None:
        self._digests.put(user, self._digest(user, password))

    def failed(self, user: str) -> None:
        self._digests.drop(user)


class LdapDirectory:
    """:class:`api.principal.Directory` against an LDAP server (OpenLDAP, 389-ds, AD)."""

    def __init__(
        self, settings: LdapSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        missing = [key for key in ("url", "user_base", "group_base") if not getattr(settings, key)]
        if missing:
            raise ConfigError(f"[ldap] needs {', '.join(missing)} to authenticate users")
        if settings.bind_dn and settings.bind_password is None:
            raise ConfigError("ldap.bind_dn is set but neither bind_password nor its file")
        self._settings = settings
        self._queries = Queries.from_settings(settings)
        self._cache = GroupCache(settings.cache_ttl_s, clock)
        self._binds = BindCache(settings.bind_cache_ttl_s, clock)
        ca_file = str(settings.ca_file) if settings.ca_file is not None else None
        try:
            self._tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        except LDAPException as exc:
            raise ConfigError(f"ldap.ca_file: {exc}") from exc
        self._server()  # a malformed URL is a configuration error now, not at first login

    # -- the protocol -----------------------------------------------------------------

    def authenticate(self, user: str, password: str) -> bool:
        if not _plausible_name(user) or not password:
            return False
        if self._binds.matches(user, password):
            return True
        with self._service() as conn:
            entry = self._find_user(conn, user)
        if entry is None:
            self._binds.failed(user)
            return False
        conn = self._connection(entry.dn, password)
        try:
            self._open(conn)
            conn.bind()
        except (LDAPInvalidCredentialsResult, LDAPInappropriateAuthenticationResult):
            self._binds.failed(user)
            return False
        except (LDAPException, OSError) as exc:
            raise self._unavailable("checking a password", exc) from exc
        finally:
            _close(conn)
        self._binds.succeeded(user, password)
        return True

    def groups_of(self, user: str) -> frozenset[str]:
        cached = self._cache.get(user)
        if cached is not None:
            return cached
        if not _plausible_name(user):
            return frozenset()
        try:
            with self._service() as conn:
                entry = self._find_user(conn, user)
                groups = frozenset() if entry is None else self._resolve(conn, user, entry)
        except (LDAPException, OSError) as exc:
            raise self._unavailable("resolving groups", exc) from exc
        self._cache.put(user, groups)
        return groups

    def ping(self) -> None:
        """Bind as the service account and let go: readiness (``/readyz``) asks this.
        Raises DirectoryUnavailable when the directory cannot be reached or refuses."""
        with self._service():
            pass

    # -- lookups ------------------------------------------------------------------------

    def _find_user(self, conn: Connection, user: str) -> UserEntry | None:
        """The one entry named ``user``; None when there is none or more than one."""
        assert self._settings.user_base is not None
        try:
            conn.search(
                self._settings.user_base,
                self._queries.user(user),
                SUBTREE,
                attributes=self._queries.user_attributes(),
                size_limit=2,
            )
        except (LDAPException, OSError) as exc:
            raise self._unavailable("looking up a user", exc) from exc
        entries = [item for item in conn.response or [] if item.get("type") == "searchResEntry"]
        if len(entries) != 1:
            if entries:
                log.warning("ldap: %d entries match one login name; refusing it", len(entries))
            return None
        raw = entries[0].get("raw_attributes", {})
        gids = _texts(raw.get(GID_NUMBER, []))
        return UserEntry(dn=entries[0]["dn"], gid=gids[0] if gids else None)

    def _resolve(self, conn: Connection, user: str, entry: UserEntry) -> frozenset[str]:
        queries = self._queries
        found = self._groups(conn, queries.direct_groups(name=user, dn=entry.dn, gid=entry.gid))
        if queries.nested:
            seen = {dn.lower() for dn in found}
            frontier = list(found)
            for _ in range(self._settings.max_depth):
                if not frontier:
                    break
                parents: dict[str, str | None] = {}
                for start in range(0, len(frontier), DNS_PER_QUERY):
                    chunk = frontier[start : start + DNS_PER_QUERY]
                    parents.update(self._groups(conn, queries.groups_containing(chunk)))
                frontier = [dn for dn in parents if dn.lower() not in seen]
                seen.update(dn.lower() for dn in frontier)
                found.update({dn: parents[dn] for dn in frontier})
            if frontier:
                log.warning(
                    "ldap: groups of %r nest deeper than max_depth=%d; the rest are ignored",
                    user,
                    self._settings.max_depth,
                )
        return frozenset(name for name in found.values() if name is not None)

    def _groups(self, conn: Connection, search_filter: str) -> dict[str, str | None]:
        """DN -> name (None: blank or ambiguous) of the groups matching the filter."""
        assert self._settings.group_base is not None
        name_attribute = self._queries.group_name_attribute
        entries = conn.extend.standard.paged_search(
            self._settings.group_base,
            search_filter,
            SUBTREE,
            attributes=[name_attribute],
            paged_size=PAGE_SIZE,
            generator=False,
        )
        groups: dict[str, str | None] = {}
        for item in entries:
            if item.get("type") != "searchResEntry":
                continue
            values = _texts(item.get("raw_attributes", {}).get(name_attribute, []))
            groups[item["dn"]] = group_name(item["dn"], values, name_attribute)
        return groups

    # -- connections --------------------------------------------------------------------

    def _server(self) -> Server:
        assert self._settings.url is not None
        try:
            return Server(
                self._settings.url,
                connect_timeout=self._settings.timeout_s,
                get_info=NONE,
                tls=self._tls,
            )
        except LDAPException as exc:
            raise ConfigError(f"ldap.url: {self._settings.url!r}: {exc}") from exc

    def _connection(self, dn: str | None, password: str | None) -> Connection:
        return Connection(
            self._server(),
            user=dn,
            password=password,
            authentication=SIMPLE if dn else ANONYMOUS,
            client_strategy=SYNC,
            read_only=True,
            auto_referrals=False,
            raise_exceptions=True,
            # ldap3 packs it into SO_RCVTIMEO as whole seconds
            receive_timeout=max(1, math.ceil(self._settings.timeout_s)),
        )

    def _open(self, conn: Connection) -> None:
        conn.open()
        if self._settings.start_tls and not conn.server.ssl:
            conn.start_tls()

    @contextmanager
    def _service(self) -> Iterator[Connection]:
        """A connection bound as catalogd's service account."""
        secret = self._settings.bind_password
        dn = self._settings.bind_dn
        conn = self._connection(dn, secret.get_secret_value() if dn and secret else None)
        try:
            try:
                self._open(conn)
                conn.bind()
            except LDAPInvalidCredentialsResult as exc:
                raise DirectoryUnavailable(
                    f"the directory at {self._settings.url} refused catalogd's service "
                    f"account {dn!r} (ldap.bind_dn and its password)"
                ) from exc
            except (LDAPException, OSError) as exc:
                raise self._unavailable("binding as the service account", exc) from exc
            yield conn
        finally:
            _close(conn)

    def _unavailable(self, doing: str, exc: BaseException) -> DirectoryUnavailable:
        if isinstance(exc, DirectoryUnavailable):
            return exc
        reason = getattr(exc, "description", None) or str(exc) or type(exc).__name__
        return DirectoryUnavailable(
            f"the directory at {self._settings.url} failed while {doing}: {reason}"
        )


def _plausible_name(user: str) -> bool:
    return bool(user.strip()) and len(user) <= MAX_NAME_LENGTH


def _texts(values: Any) -> list[str]:
    """Raw attribute values as text; values that are not UTF-8 are left out."""
    texts = []
    for value in values:
        try:
            texts.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError:
            continue
    return texts


def _close(conn: Connection) -> None:
    """Unbind and close, also after a failed open (ldap3 leaves the socket of a refused
    connection open)."""
    try:
        conn.unbind()
    except (LDAPException, OSError):
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
