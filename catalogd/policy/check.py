"""The policy check: one classified path and its stat result in, findings out.

:meth:`Policy.check` is pure: it touches no disk. What only the disk can tell (the ACLs,
a symlink's target, an error listing a directory) comes in as :class:`EntryFacts`, read
by the walker side (:func:`catalogd.policy.audit.read_facts`). Owner and group names come
from a :class:`NameLookup` (normally :class:`catalogd.identity.NameCache`), which
resolves each id once.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from catalogd.document import display_path
from catalogd.errors import describe_os_error
from catalogd.layout import OTHER_AREA, LayoutConfig, Level, Location, relative_parts
from catalogd.policy import rules as R
from catalogd.policy.acl import GROUP, NO_ACLS, OTHER, USER, AclEntry, Acls
from catalogd.policy.settings import (
    LevelPolicy,
    PolicySettings,
    UserTypePolicy,
    format_mode,
    parse_mode,
)
from catalogd.violations import Violation

_DIR_LEVELS = (Level.USER_TYPE, Level.BEAMLINE, Level.PROPOSAL, Level.VISIT)


class NameLookup(Protocol):
    def owner(self, uid: int) -> str | None: ...
    def group(self, gid: int) -> str | None: ...
    def uid_of(self, name: str) -> int | None: ...
    def gid_of(self, name: str) -> int | None: ...


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """What the walker read besides ``lstat``."""

    acls: Acls = NO_ACLS
    #: ``os.readlink`` of a symbolic link.
    link_target: str | None = None
    #: Why the entry (or the listing of a directory) could not be read.
    error: OSError | None = None


NO_FACTS = EntryFacts()


@dataclass(frozen=True, slots=True)
class Fix:
    """What ``--fix`` would set on one entry: None leaves a property as it is."""

    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    #: Why some of the expected attributes cannot be set (e.g. an unknown group name).
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.uid is None and self.gid is None and self.mode is None


@dataclass(frozen=True, slots=True)
class InsideExpectation:
    """See :meth:`Policy.inside_expectation`. None: not checked."""

    uid: int | None
    gid: int | None
    required: int
    forbidden: int


@dataclass(frozen=True, slots=True)
class _Context:
    """The policy of one proposal (or beamline, or user type), resolved once."""

    policy: UserTypePolicy
    levels: dict[str, tuple[str | None, str | None, frozenset[int]]]
    inside_owner: str | None
    inside_group: str | None
    required: int
    forbidden: int
    acl_users: frozenset[str]
    acl_groups: frozenset[str]
    proposal_dir: str | None


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return "special file"


class Policy:
    """The data policy compiled for one layout; thread-safe for reading."""

    def __init__(
        self,
        settings: PolicySettings,
        layout: LayoutConfig,
        names: NameLookup,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.names = names
        self._contexts: dict[tuple[str | None, str | None, str | None], _Context] = {}
        self._user_types: dict[str, UserTypePolicy] = {}
        self._severity = {rule: settings.severity(rule) for rule in R.RULES}
        self._enabled = {rule: settings.enabled(rule) for rule in R.RULES}
        self._user_type_depth = layout.levels.index("user_type") + 1
        self._proposal_depth = (
            max(layout.levels.index(name) for name in ("user_type", "beamline", "proposal")) + 1
        )

    # -- the check -------------------------------------------------------------------
    def check(
        self,
        location: Location,
        st: os.stat_result | None,
        facts: EntryFacts = NO_FACTS,
    ) -> list[Violation]:
        """The findings for one entry. Pure: reads no disk."""
        found: list[Violation] = []
        if facts.error is not None:
            self._add(
                found,
                location,
                R.UNREADABLE,
                "readable",
                _error_text(facts.error),
                f"cannot read: {describe_os_error(facts.error)}; not checked",
            )
        if st is None:
            return found
        level = location.level
        if level is Level.OUTSIDE:
            self._check_outside(found, location, st)
            return found
        if level is Level.ROOT or location.user_type is None:
            return found
        ctx = self._context(location)
        mode = st.st_mode
        if level in _DIR_LEVELS or (level is Level.AREA and location.area != OTHER_AREA):
            self._check_layout_dir(found, ctx, location, st, facts)
            return found
        if level is Level.AREA and not ctx.policy.allow_other_areas:
            areas = " or ".join(self.layout.areas)
            self._add(
                found,
                location,
                R.UNEXPECTED,
                areas,
                posixpath.basename(location.path),
                f"a visit holds only {areas}; this {kind_of(mode)} is not one of them",
            )
        if stat.S_ISLNK(mode):
            self._check_link(found, ctx, location, facts)
            return found
        if ctx.inside_owner is not None:
            self._check_owner(found, location, st, ctx.inside_owner)
        if ctx.inside_group is not None:
            self._check_group(found, location, st, ctx.inside_group)
        bits = stat.S_IMODE(mode)
        if bits & ctx.forbidden:
            self._add(
                found,
                location,
                R.OTHER_ACCESS,
                f"none of {format_mode(ctx.forbidden)}",
                format_mode(bits),
                f"mode {format_mode(bits)} has forbidden bits "
                f"{format_mode(bits & ctx.forbidden)} (access for others)",
            )
        if stat.S_ISDIR(mode) and ctx.required & ~bits:
            self._add(
                found,
                location,
                R.SETGID,
                f"all of {format_mode(ctx.required)}",
                format_mode(bits),
                f"directory mode {format_mode(bits)} lacks required bits "
                f"{format_mode(ctx.required & ~bits)} (setgid keeps the proposal group)",
            )
        self._check_acls(found, ctx, location, facts.acls, inside=True)
        return found

    def _check_outside(
        self, found: list[Violation], location: Location, st: os.stat_result
    ) -> None:
        # Report an unknown user type once, at its top directory; nothing below it.
        if not location.extra:
            return
        parts = relative_parts(location.path, self.layout.root)
        if parts is None or len(parts) != self._user_type_depth:
            return
        types = ", ".join(self.layout.user_types)
        if stat.S_ISDIR(st.st_mode):
            self._add(
                found,
                location,
                R.UNKNOWN_USER_TYPE,
                f"one of {types}",
                location.extra[0],
                f"{location.extra[0]!r} is not a user type ({types}); not checked below",
            )
        else:
            self._add(
                found,
                location,
                R.UNEXPECTED,
                f"a user type directory ({types})",
                kind_of(st.st_mode),
                f"a {kind_of(st.st_mode)} where the layout has user type directories",
            )

    def _check_layout_dir(
        self,
        found: list[Violation],
        ctx: _Context,
        location: Location,
        st: os.stat_result,
        facts: EntryFacts,
    ) -> None:
        level = location.level.value
        mode = st.st_mode
        if not stat.S_ISDIR(mode):
            self._add(
                found,
                location,
                R.UNEXPECTED,
                "directory",
                kind_of(mode),
                f"a {kind_of(mode)} where the layout has a {level} directory",
            )
            if stat.S_ISLNK(mode):
                self._check_link(found, ctx, location, facts)
            return
        owner, group, modes = ctx.levels[level]
        if owner is not None:
            self._check_owner(found, location, st, owner)
        if group is not None:
            self._check_group(found, location, st, group)
        bits = stat.S_IMODE(mode)
        if modes and bits not in modes:
            allowed = " or ".join(format_mode(m) for m in sorted(modes, reverse=True))
            self._add(
                found,
                location,
                R.MODE,
                allowed,
                format_mode(bits),
                f"{level} directory mode is {format_mode(bits)}, the policy allows {allowed}",
            )
        if (
            location.level is Level.VISIT
            and location.visit_date is None
            and ctx.policy.require_visit_date
        ):
            self._add(
                found,
                location,
                R.VISIT_DATE,
                "YYYYMMDD...",
                location.visit or "",
                "a visit's name must begin with the date its first shift starts",
            )
        inside = location.level not in (Level.USER_TYPE, Level.BEAMLINE)
        self._check_acls(found, ctx, location, facts.acls, inside=inside)

    def _check_owner(
        self, found: list[Violation], location: Location, st: os.stat_result, expected: str
    ) -> None:
        actual = self.names.owner(st.st_uid)
        if actual != expected:
            shown = actual if actual is not None else f"uid {st.st_uid}"
            self._add(
                found,
                location,
                R.OWNER,
                expected,
                shown,
                f"owner is {shown}, the policy requires {expected}",
            )

    def _check_group(
        self, found: list[Violation], location: Location, st: os.stat_result, expected: str
    ) -> None:
        actual = self.names.group(st.st_gid)
        if actual != expected:
            shown = actual if actual is not None else f"gid {st.st_gid}"
            self._add(
                found,
                location,
                R.GROUP,
                expected,
                shown,
                f"group is {shown}, the policy requires {expected}",
            )

    def _check_link(
        self, found: list[Violation], ctx: _Context, location: Location, facts: EntryFacts
    ) -> None:
        if ctx.proposal_dir is None or facts.link_target is None:
            return
        target = posixpath.normpath(
            posixpath.join(posixpath.dirname(location.path), facts.link_target)
        )
        if target != ctx.proposal_dir and not target.startswith(ctx.proposal_dir + "/"):
            shown = display_path(facts.link_target)
            self._add(
                found,
                location,
                R.SYMLINK_ESCAPE,
                f"a target inside {display_path(ctx.proposal_dir)}",
                shown,
                f"symbolic link points outside its proposal, to {display_path(target)}",
            )

    def _check_acls(
        self, found: list[Violation], ctx: _Context, location: Location, acls: Acls, *, inside: bool
    ) -> None:
        if not acls.access and not acls.default:
            return
        bad: list[str] = []
        for which, entries in (("", acls.access), ("default:", acls.default)):
            for entry in entries:
                problem = self._acl_problem(ctx, entry, inside=inside, default=bool(which))
                if problem is not None:
                    bad.append(which + problem)
        if bad:
            allowed = sorted(ctx.acl_users) + sorted(ctx.acl_groups)
            expected = "named entries only for " + (", ".join(allowed) or "nobody")
            self._add(
                found,
                location,
                R.ACL,
                expected,
                ", ".join(bad),
                f"ACL grants more than the policy allows: {', '.join(bad)}",
            )

    def _acl_problem(
        self, ctx: _Context, entry: AclEntry, *, inside: bool, default: bool
    ) -> str | None:
        if not entry.perm:
            return None
        if entry.tag == USER and entry.id is not None:
            name = self.names.owner(entry.id)
            return None if name in ctx.acl_users else entry.text(name)
        if entry.tag == GROUP and entry.id is not None:
            name = self.names.group(entry.id)
            return None if name in ctx.acl_groups else entry.text(name)
        # The access ACL's "other" entry is the mode's o bits, reported by the mode rules;
        # a default ACL's would give others access to every new entry.
        if entry.tag == OTHER and default and inside:
            return entry.text()
        return None

    def inside_expectation(self, location: Location) -> InsideExpectation | None:
        """The ids and bits every entry inside the visit of ``location`` must have, for
        a walker's quick "certainly clean" test; None when only :meth:`check` can tell.

        An entry that has them, is not a link and has no ACL gives :meth:`check` no
        findings, so the walker may skip calling it.
        """
        if location.level not in (Level.AREA, Level.INSIDE) or location.user_type is None:
            return None
        ctx = self._context(location)
        uid = gid = None
        if ctx.inside_owner is not None:
            uid = self.names.uid_of(ctx.inside_owner)
            if uid is None or self.names.owner(uid) != ctx.inside_owner:
                return None
        if ctx.inside_group is not None:
            gid = self.names.gid_of(ctx.inside_group)
            if gid is None or self.names.group(gid) != ctx.inside_group:
                return None
        return InsideExpectation(uid=uid, gid=gid, required=ctx.required, forbidden=ctx.forbidden)

    # -- remediation ------------------------------------------------------------------
    def fix_for(
        self,
        location: Location,
        st: os.stat_result,
        *,
        rules: Collection[str] | None = None,
    ) -> Fix | None:
        """What would make this entry's owner, group and mode conform, or None.

        ``rules`` limits the fix to the findings of those rules (all when None). Only
        directories and regular files inside the layout are ever fixed; links, special
        files and anything outside the layout are left alone.
        """
        mode = st.st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            return None
        level = location.level
        if level in (Level.OUTSIDE, Level.ROOT) or location.user_type is None:
            return None
        ctx = self._context(location)
        bits = stat.S_IMODE(mode)
        if level in _DIR_LEVELS or (level is Level.AREA and location.area != OTHER_AREA):
            if not stat.S_ISDIR(mode):
                return None
            owner, group, modes = ctx.levels[level.value]
            new_mode = None if not modes or bits in modes else _closest(bits, modes)
        else:
            owner, group = ctx.inside_owner, ctx.inside_group
            want = bits & ~ctx.forbidden
            if stat.S_ISDIR(mode):
                want |= ctx.required
            new_mode = want if want != bits else None
        if rules is not None:
            owner = owner if R.OWNER in rules else None
            group = group if R.GROUP in rules else None
            if not {R.MODE, R.SETGID, R.OTHER_ACCESS} & set(rules):
                new_mode = None
        problems: list[str] = []
        uid = self._wanted_id(
            owner, st.st_uid, self.names.owner, self.names.uid_of, "user", problems
        )
        gid = self._wanted_id(
            group, st.st_gid, self.names.group, self.names.gid_of, "group", problems
        )
        fix = Fix(uid=uid, gid=gid, mode=new_mode, problems=tuple(problems))
        return None if fix.empty and not fix.problems else fix

    @staticmethod
    def _wanted_id(
        name: str | None,
        current: int,
        name_of: Callable[[int], str | None],
        id_of: Callable[[str], int | None],
        kind: str,
        problems: list[str],
    ) -> int | None:
        if name is None or name_of(current) == name:
            return None
        wanted = id_of(name)
        if wanted is None:
            problems.append(f"no {kind} named {name} on this system")
        return wanted

    # -- helpers ----------------------------------------------------------------------
    def _add(
        self,
        found: list[Violation],
        location: Location,
        rule: str,
        expected: str,
        actual: str,
        message: str,
    ) -> None:
        if not self._enabled[rule]:
            return
        found.append(
            Violation(
                path=location.path,
                rule=rule,
                severity=self._severity[rule].value,
                expected=expected,
                actual=actual,
                message=message,
                user_type=location.user_type,
                beamline=location.beamline,
                proposal=location.proposal,
                visit=location.visit,
            )
        )

    def user_type_policy(self, user_type: str) -> UserTypePolicy:
        policy = self._user_types.get(user_type)
        if policy is None:
            policy = self._user_types[user_type] = self.settings.for_user_type(user_type)
        return policy

    def _context(self, location: Location) -> _Context:
        key = (location.user_type, location.beamline, location.proposal)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = self._build_context(location)
        return ctx

    def _build_context(self, location: Location) -> _Context:
        assert location.user_type is not None
        policy = self.user_type_policy(location.user_type)
        values: dict[str, str | None] = {
            "user_type": location.user_type,
            "beamline": location.beamline,
            "proposal": location.proposal,
            "visit": None,
        }
        lay = self.layout
        if location.beamline is not None:
            values["service_user"] = lay.service_user_for(beamline=location.beamline)
            values["beamline_group"] = lay.beamline_group_for(beamline=location.beamline)
            if location.proposal is not None:
                values["proposal_group"] = lay.proposal_group_for(
                    beamline=location.beamline, proposal=location.proposal
                )

        def fill(template: str | None) -> str | None:
            return None if template is None else _fill(template, values)

        levels: dict[str, tuple[str | None, str | None, frozenset[int]]] = {}
        for name in ("user_type", "beamline", "proposal", "visit", "area"):
            lp: LevelPolicy = policy.level(name)
            levels[name] = (
                fill(lp.owner),
                fill(lp.group),
                frozenset(parse_mode(m) for m in lp.modes),
            )
        proposal_dir = None
        if location.proposal is not None:
            parts = relative_parts(location.path, lay.root)
            if parts is not None and len(parts) >= self._proposal_depth:
                proposal_dir = posixpath.join(lay.root, *parts[: self._proposal_depth])
        return _Context(
            policy=policy,
            levels=levels,
            inside_owner=fill(policy.inside_owner),
            inside_group=fill(policy.inside_group),
            required=parse_mode(policy.inside_dir_required_bits),
            forbidden=parse_mode(policy.inside_forbidden_bits),
            acl_users=frozenset(n for n in map(fill, policy.acl_allowed_users) if n),
            acl_groups=frozenset(n for n in map(fill, policy.acl_allowed_groups) if n),
            proposal_dir=proposal_dir,
        )


def _fill(template: str, values: dict[str, str | None]) -> str | None:
    """The template filled in, or None when it needs a value this level has not."""
    try:
        return template.format(**{k: v for k, v in values.items() if v is not None})
    except (KeyError, IndexError):
        return None


def _closest(bits: int, modes: frozenset[int]) -> int:
    """The allowed mode differing from ``bits`` in the fewest bits (ties: the tightest)."""
    return min(modes, key=lambda m: (bin(m ^ bits).count("1"), m))


def _error_text(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
