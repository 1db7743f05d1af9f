"""Remediation: set owner, group and mode to what the policy says.

:func:`plan` turns the audit's fixable findings into :class:`Action` values (one per
entry); :func:`apply` carries them out. Only directories and regular files inside the
layout are ever planned (see :meth:`Policy.fix_for`). Each action opens its entry
without following links and acts on the open file only if it is still the entry the
audit saw (same device and inode, still a directory or regular file), so a path swapped
for a link in between is never touched. Every action taken is logged on the
``catalogd.remediation`` logger.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from catalogd.document import display_path
from catalogd.errors import CatalogdError, describe_os_error
from catalogd.policy.check import NameLookup
from catalogd.policy.settings import format_mode
from catalogd.policy.walker import FixTarget

log = logging.getLogger("catalogd.remediation")

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class TooManyActions(CatalogdError):
    """More actions would be needed than ``--max-actions`` allows; none was taken."""


@dataclass(frozen=True, slots=True)
class Action:
    """Set owner and/or group, and/or mode, of one entry."""

    path: str
    dev: int
    ino: int
    uid: int | None
    gid: int | None
    mode: int | None
    #: What the entry was: ``owner:group mode``.
    before: str
    #: ``owner:group mode`` after the action (unchanged parts as before).
    after: str
    rules: tuple[str, ...]
    #: Expected attributes that cannot be set (e.g. a group unknown on this system).
    problems: tuple[str, ...] = ()

    def describe(self) -> str:
        steps = []
        if self.uid is not None or self.gid is not None:
            steps.append(f"chown {self.after.split(' ')[0]}")
        if self.mode is not None:
            steps.append(f"chmod {format_mode(self.mode)}")
        text = f"{', '.join(steps) or 'nothing'} {display_path(self.path)} (was {self.before})"
        if self.problems:
            text += f"; cannot: {'; '.join(self.problems)}"
        return text


@dataclass
class ApplyReport:
    applied: list[Action] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _who(names: NameLookup, uid: int, gid: int) -> str:
    return f"{names.owner(uid) or uid}:{names.group(gid) or gid}"


def plan(targets: Iterable[FixTarget], names: NameLookup) -> list[Action]:
    """The actions that mend ``targets`` (an audit's ``fixes``), in path order."""
    actions = []
    for target in sorted(targets, key=lambda t: t.path):
        st, fix = target.st, target.fix
        uid = fix.uid if fix.uid is not None else st.st_uid
        gid = fix.gid if fix.gid is not None else st.st_gid
        mode = fix.mode if fix.mode is not None else stat.S_IMODE(st.st_mode)
        actions.append(
            Action(
                path=target.path,
                dev=st.st_dev,
                ino=st.st_ino,
                uid=fix.uid,
                gid=fix.gid,
                mode=fix.mode,
                before=f"{_who(names, st.st_uid, st.st_gid)} {format_mode(st.st_mode)}",
                after=f"{_who(names, uid, gid)} {format_mode(mode)}",
                rules=target.rules,
                problems=fix.problems,
            )
        )
    return actions


def apply(actions: list[Action], *, max_actions: int | None = None) -> ApplyReport:
    """Carry out ``actions``; refuses all of them when there are more than
    ``max_actions`` (TooManyActions)."""
    doable = [a for a in actions if a.uid is not None or a.gid is not None or a.mode is not None]
    if max_actions is not None and len(doable) > max_actions:
        raise TooManyActions(
            f"{len(doable)} entries need fixing, more than --max-actions {max_actions}; "
            "nothing was changed"
        )
    report = ApplyReport()
    for action in doable:
        _apply_one(action, report)
    return report


def _open(path: str) -> int:
    try:
        return os.open(path, _OPEN_FLAGS | getattr(os, "O_NOATIME", 0))
    except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
        return os.open(path, _OPEN_FLAGS)


def _apply_one(action: Action, report: ApplyReport) -> None:
    shown = display_path(action.path)
    try:
        fd = _open(action.path)
    except OSError as exc:
        report.failed.append(f"{shown}: {describe_os_error(exc)}")
        log.error("not fixed: %s: %s", shown, exc.strerror)
        return
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (action.dev, action.ino) or not (
            stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
        ):
            report.skipped.append(f"{shown}: changed since the audit")
            log.warning("not fixed: %s changed since the audit", shown)
            return
        if action.uid is not None or action.gid is not None:
            uid = -1 if action.uid is None else action.uid
            gid = -1 if action.gid is None else action.gid
            os.fchown(fd, uid, gid)
        if action.mode is not None:
            os.fchmod(fd, action.mode)
        report.applied.append(action)
        log.warning("fixed: %s", action.describe())
    except OSError as exc:
        report.failed.append(f"{shown}: {exc.strerror or exc}")
        log.error("not fixed: %s: %s", shown, exc.strerror or exc)
    finally:
        os.close(fd)
