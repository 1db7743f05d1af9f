"""The rules of the data policy, with their stable ids.

Ids never change meaning and are never reused; docs/policy.md has the same table (a
test keeps them in step). Severities here are the defaults; ``[policy.severities]``
changes them per site.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalogd.violations import Severity


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    name: str
    severity: Severity
    summary: str
    #: Whether ``catalogd audit --fix`` can mend it (owner, group and mode only).
    fixable: bool = False


OWNER = "DP001"
GROUP = "DP002"
MODE = "DP003"
SETGID = "DP004"
OTHER_ACCESS = "DP005"
ACL = "DP006"
VISIT_DATE = "DP007"
UNEXPECTED = "DP008"
UNKNOWN_USER_TYPE = "DP009"
SYMLINK_ESCAPE = "DP010"
UNREADABLE = "DP011"

_ALL = (
    Rule(
        OWNER,
        "owner",
        Severity.ERROR,
        "The owner of a layout directory (or of an entry inside a visit, when "
        "configured) is not the one the policy names.",
        fixable=True,
    ),
    Rule(
        GROUP,
        "group",
        Severity.ERROR,
        "The group of an entry is not the one the policy names for its level "
        "(inside a proposal: the proposal group).",
        fixable=True,
    ),
    Rule(
        MODE,
        "mode",
        Severity.ERROR,
        "A layout directory's mode is none of the modes allowed for its level.",
        fixable=True,
    ),
    Rule(
        SETGID,
        "setgid",
        Severity.WARNING,
        "A directory inside a visit lacks a required bit (the setgid bit, so new "
        "entries inherit the proposal group).",
        fixable=True,
    ),
    Rule(
        OTHER_ACCESS,
        "other-access",
        Severity.CRITICAL,
        "An entry inside a visit has a forbidden bit (any bit for others).",
        fixable=True,
    ),
    Rule(
        ACL,
        "acl",
        Severity.CRITICAL,
        "A POSIX ACL (access or default) names a user or group the policy does not "
        "allow, or grants others access inside a proposal.",
    ),
    Rule(
        VISIT_DATE,
        "visit-date",
        Severity.WARNING,
        "A visit's name does not begin with a valid date (YYYYMMDD).",
    ),
    Rule(
        UNEXPECTED,
        "unexpected-entry",
        Severity.WARNING,
        "An entry where the layout has none: a file or link at a directory level, or "
        "an entry in a visit that is not one of its areas (raw, process).",
    ),
    Rule(
        UNKNOWN_USER_TYPE,
        "unknown-user-type",
        Severity.ERROR,
        "A directory at the user-type level whose name is not a configured user type; "
        "nothing below it is checked.",
    ),
    Rule(
        SYMLINK_ESCAPE,
        "symlink-escape",
        Severity.ERROR,
        "A symbolic link inside a proposal points outside that proposal.",
    ),
    Rule(
        UNREADABLE,
        "unreadable",
        Severity.ERROR,
        "An entry that could not be read or listed (e.g. EACCES): its contents were not checked.",
    ),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _ALL}
