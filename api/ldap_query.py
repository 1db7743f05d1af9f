# ldap3 ships no type hints (typeshed has them as types-ldap3):
# mypy: disable-error-code="import-untyped"
"""What catalogd asks the directory: the LDAP filters and how group names are read.

Pure (no connection), so the parts a real slapd cannot serve, above all Active
Directory's in-chain matching rule, are tested as logic. Three rules hold everywhere:

- every value that goes into a filter (a user name, a DN the server sent, a gidNumber)
  passes through ldap3's :func:`~ldap3.utils.conv.escape_filter_chars`, so ``*``, ``(``,
  ``)``, ``\\`` and NUL in a user name are matched literally and cannot widen a search;
- DNs are never built from input: a user's DN is whatever the search for their name
  found, and group DNs are those the server returned;
- a group's name is its ``group_name_attribute`` (``cn``); blank names are dropped, and
  of several names only the one the entry is named by (its RDN) counts, so an alias
  value cannot smuggle in another group's name.

The site's own filters (``user_filter``, ``group_filter``) are checked with ldap3's
filter parser when the directory is set up: a typo is a configuration error at start,
not a failed login later.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from catalogd.config import LdapSettings
from catalogd.errors import ConfigError

with warnings.catch_warnings():
    # ldap3 2.9.1 imports names that pyasn1 0.6 deprecates (tagMap, typeMap): harmless,
    # not ours to fix, and silenced for this import only.
    warnings.filterwarnings("ignore", r"\w+ is deprecated\. Please use", DeprecationWarning)
    from ldap3.core.exceptions import LDAPException
    from ldap3.operation.search import parse_filter
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn


#: Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: ``member:<rule>:=<DN>`` matches the
#: groups that hold DN directly or through any depth of nesting, evaluated by the DC.
IN_CHAIN_RULE = "1.2.840.113556.1.4.1941"
#: The RFC 2307 attribute of a user's primary group (and of a posixGroup's number).
GID_NUMBER = "gidNumber"
#: A DN escape: a backslash and two hex digits, or a backslash and the character itself.
_DN_ESCAPE = re.compile(rb"\\([0-9A-Fa-f]{2}|[^0-9A-Fa-f])")


@dataclass(frozen=True, slots=True)
class SchemaDefaults:
    """What a directory schema calls users, groups and members."""

    user_attribute: str
    user_filter: str
    group_filter: str
    member_attribute: str


SCHEMA_DEFAULTS: dict[str, SchemaDefaults] = {
    "rfc2307": SchemaDefaults(
        "uid", "(objectClass=posixAccount)", "(objectClass=posixGroup)", "memberUid"
    ),
    "rfc2307bis": SchemaDefaults(
        "uid", "(objectClass=posixAccount)", "(objectClass=groupOfNames)", "member"
    ),
    "ad": SchemaDefaults(
        "sAMAccountName",
        "(&(objectClass=user)(!(objectClass=computer)))",
        "(objectClass=group)",
        "member",
    ),
}


#: ldap3's filter parser (untyped in typeshed's stubs too), as a typed callable.
_parse_filter: Callable[..., object] = parse_filter


def is_valid_filter(text: str) -> bool:
    """Whether ldap3 parses ``text`` as one well-formed search filter."""
    try:
        _parse_filter(text, None, False, True, None, False)
    except (LDAPException, ValueError, TypeError):
        return False
    return True


def escape(value: str) -> str:
    """``value`` as a filter assertion value: metacharacters become ``\\XX`` escapes."""
    escaped: str = escape_filter_chars(value)
    return escaped


@dataclass(frozen=True, slots=True)
class Queries:
    """The effective lookups for one ``[ldap]`` configuration."""

    schema: str
    user_attribute: str
    user_filter: str
    group_filter: str
    member_attribute: str
    group_name_attribute: str

    @classmethod
    def from_settings(cls, settings: LdapSettings) -> Queries:
        """The schema's defaults, overridden by whatever ``[ldap]`` sets; raises
        ConfigError for a filter ldap3 cannot parse."""
        defaults = SCHEMA_DEFAULTS[settings.schema_]
        queries = cls(
            schema=settings.schema_,
            user_attribute=settings.user_attribute or defaults.user_attribute,
            user_filter=settings.user_filter or defaults.user_filter,
            group_filter=settings.group_filter or defaults.group_filter,
            member_attribute=settings.member_attribute or defaults.member_attribute,
            group_name_attribute=settings.group_name_attribute,
        )
        for key, text in (
            ("user_filter", queries.user_filter),
            ("group_filter", queries.group_filter),
        ):
            if not is_valid_filter(text):
                raise ConfigError(f"ldap.{key}: {text!r} is not a valid LDAP filter")
        return queries

    @property
    def nested(self) -> bool:
        """Whether catalogd follows nesting itself (rfc2307bis); AD's server does it
        (in-chain rule), RFC 2307 groups cannot nest."""
        return self.schema == "rfc2307bis"

    def user_attributes(self) -> list[str]:
        """What is read from a user's entry (the DN always comes with it)."""
        return [GID_NUMBER] if self.schema == "rfc2307" else []

    def user(self, name: str) -> str:
        """The entries whose login name is exactly ``name``."""
        return f"(&{self.user_filter}({self.user_attribute}={escape(name)}))"

    def direct_groups(self, *, name: str, dn: str, gid: str | None) -> str:
        """The groups to start from: for ``rfc2307`` those listing ``name`` in memberUid
        plus the primary group (``gid``); for ``rfc2307bis`` those whose member holds
        ``dn``; for ``ad`` every group holding ``dn`` at any depth (in-chain rule)."""
        attr = self.member_attribute
        if self.schema == "rfc2307":
            terms = f"({attr}={escape(name)})"
            if gid is not None and gid.isdigit():
                terms = f"(|{terms}({GID_NUMBER}={escape(gid)}))"
            return f"(&{self.group_filter}{terms})"
        if self.schema == "ad":
            return f"(&{self.group_filter}({attr}:{IN_CHAIN_RULE}:={escape(dn)}))"
        return f"(&{self.group_filter}({attr}={escape(dn)}))"

    def groups_containing(self, dns: Sequence[str]) -> str:
        """The groups whose member attribute holds any of ``dns`` (one nesting level)."""
        if not dns:
            raise ValueError("no DNs to look for")
        terms = "".join(f"({self.member_attribute}={escape(dn)})" for dn in dns)
        return f"(&{self.group_filter}(|{terms}))"


def group_name(dn: str, values: Sequence[str], name_attribute: str) -> str | None:
    """The name of the group entry ``dn`` from the values of its name attribute.

    Blank values are dropped. One value left: that is the name. Several: the one the
    entry is named by (its RDN, when the RDN uses the name attribute); if none is, the
    group is ambiguous and gets no name (None) rather than all of them.
    """
    names = [value for value in values if value.strip()]
    if len(names) <= 1:
        return names[0] if names else None
    try:
        rdn_attribute, rdn_value, _ = parse_dn(dn)[0]
    except (LDAPException, IndexError, ValueError):
        return None
    if rdn_attribute.lower() != name_attribute.lower():
        return None
    try:
        rdn_name = _unescape_dn_value(rdn_value).lower()
    except UnicodeDecodeError:
        return None
    return next((name for name in names if name.lower() == rdn_name), None)


def _unescape_dn_value(value: str) -> str:
    """An RDN value as text: RFC 4514 escapes (``\\,``, ``\\2B``) decoded."""

    def one(match: re.Match[bytes]) -> bytes:
        code = match[1]
        return bytes.fromhex(code.decode("ascii")) if len(code) == 2 else code

    return _DN_ESCAPE.sub(one, value.encode("utf-8")).decode("utf-8")
