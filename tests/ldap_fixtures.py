# ldap3 ships no type hints (typeshed has them as types-ldap3):
# mypy: disable-error-code="import-untyped"
"""The test directory's content: users, groups, passwords and what each user must get.

One model, written to LDIF in two layouts below one suffix (``dc=example,dc=org``):

- ``rfc2307bis`` (``ou=rfc2307bis``): users are ``inetOrgPerson`` + ``posixAccount``;
  groups are ``groupOfNames`` whose ``member`` values are user DNs and group DNs
  (nesting: the beamline staff group ``biomax`` is a member of the visitor proposal
  groups, never of the ``proprietary`` one; ``cycle-a`` and ``cycle-b`` hold each other;
  ``level-1`` .. ``level-6`` form a chain);
- ``rfc2307`` (``ou=rfc2307``): the same users; groups are ``posixGroup`` with
  ``memberUid`` (user names only: RFC 2307 groups do not nest) and a ``gidNumber`` that
  makes ``20170300-group`` henry's primary group.

Group names follow the layout defaults (``{proposal}-group``, ``{beamline}``). Some names
are built to attack the filters: ``a*`` (a wildcard of ``anna`` and ``ann``), ``ann`` (a
prefix of ``anna``), ``o(k)`` and ``b\\s``. A group named only by blank ``cn`` values, and
one with a blank value beside its real name, test that blank names are dropped; a group
with an alias ``cn`` naming a proprietary proposal group tests that an alias does not
grant that name.

:data:`EXPECTED` is written out by hand, per layout and user: the effective groups the
directory layer must answer. Other test modules (the API's) import all of this.
"""

from __future__ import annotations

import base64
import hashlib
import os
import warnings
from dataclasses import dataclass

with warnings.catch_warnings():
    # ldap3 2.9.1 imports names that pyasn1 0.6 deprecates (tagMap, typeMap): harmless,
    # not ours to fix, and silenced for this import only.
    warnings.filterwarnings("ignore", r"\w+ is deprecated\. Please use", DeprecationWarning)
    from ldap3.utils.dn import escape_rdn

SUFFIX = "dc=example,dc=org"
SERVICE_DN = f"cn=catalogd,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "catalogd-service-secret"
LAYOUTS = ("rfc2307bis", "rfc2307")
#: Every user's primary gidNumber unless said otherwise: no group has it.
DEFAULT_GID = 100


def user_base(layout: str) -> str:
    return f"ou=people,ou={layout},{SUFFIX}"


def group_base(layout: str) -> str:
    return f"ou=groups,ou={layout},{SUFFIX}"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: str
    uid_number: int
    gid_number: int = DEFAULT_GID


@dataclass(frozen=True, slots=True)
class Group:
    """``key`` identifies the group in this model (nesting refers to it); ``names`` are
    its ``cn`` values (blank ones included on purpose); ``rdn`` names the entry when the
    first ``cn`` cannot (``ou=...`` for a blank-named group)."""

    key: str
    names: tuple[str, ...]
    gid_number: int
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    rdn: str | None = None


USERS: tuple[User, ...] = (
    User("alice", "alice-pw", 20001),  # visitor on 20170251
    User("ann", "ann-pw", 20002),  # prefix of anna
    User("anna", "anna-pw", 20003),
    User("a*", "astar-pw", 20004),  # a wildcard of ann and anna, as a real name
    User("bob", "bob-pw", 20005),  # 20180042 (visitor) and 20190007 (proprietary)
    User("carol", "carol-pw", 20006),  # biomax beamline staff
    User("dave", "dave-pw", 20007),  # auditor
    User("erin", "erin-pw", 20008),  # in the nesting cycle
    User("frank", "frank-pw", 20009),  # at the bottom of a long chain
    User("grace", "grace-pw", 20010),  # in the blank-named groups
    User("henry", "henry-pw", 20011, gid_number=5300),  # primary group 20170300-group
    User("ivan", "ivan-pw", 20012),  # industrial user on 20190007 only
    User("o(k)", "ok-pw", 20013),
    User("b\\s", "bs-pw", 20014),
    User("nobody-in-groups", "lonely-pw", 20015),
)

PASSWORDS: dict[str, str] = {user.name: user.password for user in USERS}

GROUPS: tuple[Group, ...] = (
    Group("biomax", ("biomax",), 5000, users=("carol",)),
    Group("20170251-group", ("20170251-group",), 5251, users=("alice", "ann"), groups=("biomax",)),
    Group("20180042-group", ("20180042-group",), 5042, users=("bob",), groups=("biomax",)),
    # proprietary: the beamline staff group is not a member
    Group("20190007-group", ("20190007-group",), 5007, users=("bob", "ivan")),
    Group("20170300-group", ("20170300-group",), 5300, users=("alice",)),
    Group("data-auditors", ("data-auditors",), 5900, users=("dave",)),
    Group("20230001-group", ("20230001-group",), 6001, users=("a*",)),
    Group("20230002-group", ("20230002-group",), 6002, users=("anna",)),
    Group("20230003-group", ("20230003-group",), 6003, users=("o(k)",)),
    Group("20230004-group", ("20230004-group",), 6004, users=("b\\s",)),
    # a cycle, and a proposal group reached through it
    Group("cycle-a", ("cycle-a",), 7001, users=("erin",), groups=("cycle-b",)),
    Group("cycle-b", ("cycle-b",), 7002, groups=("cycle-a",)),
    Group("20200012-group", ("20200012-group",), 7003, groups=("cycle-b",)),
    # a chain: frank -> level-1 -> level-2 -> ... -> level-6
    Group("level-1", ("level-1",), 7101, users=("frank",)),
    *(
        Group(f"level-{n}", (f"level-{n}",), 7100 + n, groups=(f"level-{n - 1}",))
        for n in range(2, 7)
    ),
    # blank names: a group named by blanks only (its nesting still counts), and a
    # group with a blank value beside its real name
    Group("blank", (" ",), 7201, users=("grace",), rdn="ou=blank"),
    Group("20220001-group", ("20220001-group",), 7202, groups=("blank",)),
    Group("g-named", ("g-named", " "), 7203, users=("grace",)),
    # an alias cn must not grant the proprietary proposal's name
    Group("staff-alias", ("staff-alias", "20190007-group"), 7301, users=("henry",)),
)


_BIOMAX_PROPOSALS = {"biomax", "20170251-group", "20180042-group"}
_CHAIN = {f"level-{n}" for n in range(1, 7)}

#: The effective groups of every user, per layout (what ``groups_of`` must answer with
#: the default ``max_depth``).
EXPECTED: dict[str, dict[str, frozenset[str]]] = {
    "rfc2307bis": {
        "alice": frozenset({"20170251-group", "20170300-group"}),
        "ann": frozenset({"20170251-group"}),
        "anna": frozenset({"20230002-group"}),
        "a*": frozenset({"20230001-group"}),
        "bob": frozenset({"20180042-group", "20190007-group"}),
        "carol": frozenset(_BIOMAX_PROPOSALS),
        "dave": frozenset({"data-auditors"}),
        "erin": frozenset({"cycle-a", "cycle-b", "20200012-group"}),
        "frank": frozenset(_CHAIN),
        "grace": frozenset({"g-named", "20220001-group"}),
        "henry": frozenset({"staff-alias"}),  # the primary group is an RFC 2307 notion
        "ivan": frozenset({"20190007-group"}),
        "o(k)": frozenset({"20230003-group"}),
        "b\\s": frozenset({"20230004-group"}),
        "nobody-in-groups": frozenset(),
    },
    "rfc2307": {
        "alice": frozenset({"20170251-group", "20170300-group"}),
        "ann": frozenset({"20170251-group"}),
        "anna": frozenset({"20230002-group"}),
        "a*": frozenset({"20230001-group"}),
        "bob": frozenset({"20180042-group", "20190007-group"}),
        "carol": frozenset({"biomax"}),  # no nesting in RFC 2307
        "dave": frozenset({"data-auditors"}),
        "erin": frozenset({"cycle-a"}),
        "frank": frozenset({"level-1"}),
        "grace": frozenset({"g-named"}),
        "henry": frozenset({"staff-alias", "20170300-group"}),  # primary gidNumber
        "ivan": frozenset({"20190007-group"}),
        "o(k)": frozenset({"20230003-group"}),
        "b\\s": frozenset({"20230004-group"}),
        "nobody-in-groups": frozenset(),
    },
}


def user_dn(layout: str, name: str) -> str:
    return f"uid={escape_rdn(name)},{user_base(layout)}"


def group_dn(layout: str, key: str, groups: tuple[Group, ...] = GROUPS) -> str:
    group = next(g for g in groups if g.key == key)
    rdn = group.rdn or f"cn={escape_rdn(group.names[0])}"
    return f"{rdn},{group_base(layout)}"


def ssha(password: str) -> str:
    """A salted SHA-1 userPassword value, as slappasswd writes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _line(attribute: str, value: str) -> str:
    """One LDIF line; base64 when the value is not an RFC 2849 SAFE-STRING."""
    safe = (
        value
        and value.isascii()
        and not any(c in value for c in "\0\r\n")
        and value[0] not in " :<"
        and not value.endswith(" ")
    )
    if safe or value == "":
        return f"{attribute}: {value}"
    return f"{attribute}:: {base64.b64encode(value.encode()).decode('ascii')}"


def _entry(dn: str, attributes: list[tuple[str, str]]) -> str:
    return "\n".join([_line("dn", dn), *(_line(a, v) for a, v in attributes)]) + "\n"


def ldif(
    users: tuple[User, ...] = USERS,
    groups: tuple[Group, ...] = GROUPS,
    layouts: tuple[str, ...] = LAYOUTS,
) -> str:
    """The whole directory: suffix, service account, and ``users`` and ``groups`` in
    each of ``layouts`` (by default the test directory, both layouts)."""
    entries = [
        _entry(
            SUFFIX,
            [("objectClass", "dcObject"), ("objectClass", "organization"), ("dc", "example")]
            + [("o", "Example light source")],
        ),
        _entry(
            f"ou=services,{SUFFIX}", [("objectClass", "organizationalUnit"), ("ou", "services")]
        ),
        _entry(
            SERVICE_DN,
            [
                ("objectClass", "applicationProcess"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "catalogd"),
                ("userPassword", ssha(SERVICE_PASSWORD)),
            ],
        ),
    ]
    for layout in layouts:
        entries.append(
            _entry(f"ou={layout},{SUFFIX}", [("objectClass", "organizationalUnit"), ("ou", layout)])
        )
        for base in (user_base(layout), group_base(layout)):
            ou = base.split(",", 1)[0].removeprefix("ou=")
            entries.append(_entry(base, [("objectClass", "organizationalUnit"), ("ou", ou)]))
        for user in users:
            entries.append(
                _entry(
                    user_dn(layout, user.name),
                    [
                        ("objectClass", "inetOrgPerson"),
                        ("objectClass", "posixAccount"),
                        ("uid", user.name),
                        ("cn", user.name),
                        ("sn", user.name),
                        ("uidNumber", str(user.uid_number)),
                        ("gidNumber", str(user.gid_number)),
                        ("homeDirectory", f"/home/{user.uid_number}"),
                        ("userPassword", ssha(user.password)),
                    ],
                )
            )
        for group in groups:
            attributes = [("cn", name) for name in group.names]
            if group.rdn is not None:
                attribute, value = group.rdn.split("=", 1)
                attributes.append((attribute, value))
            if layout == "rfc2307":
                attributes = [("objectClass", "posixGroup"), ("gidNumber", str(group.gid_number))]
                attributes += [("cn", name) for name in group.names]
                if group.rdn is not None:  # posixGroup has no ou: name it by gidNumber
                    attributes = [a for a in attributes if a[0] != "ou"]
                attributes += [("memberUid", name) for name in group.users]
            else:
                attributes.insert(0, ("objectClass", "groupOfNames"))
                attributes += [("member", user_dn(layout, name)) for name in group.users]
                attributes += [("member", group_dn(layout, key, groups)) for key in group.groups]
            entries.append(_entry(_group_entry_dn(layout, group, groups), attributes))
    return "\n".join(entries)


def _group_entry_dn(layout: str, group: Group, groups: tuple[Group, ...]) -> str:
    if group.rdn is not None and layout == "rfc2307":
        return f"gidNumber={group.gid_number},{group_base(layout)}"
    return group_dn(layout, group.key, groups)
