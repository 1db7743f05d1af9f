"""Policy violations as the catalogue keeps them, with their history.

A violation is identified by ``(path, rule)``. An audit of a scope (a directory, or one
path) records what it found: a finding already open keeps its ``first_seen`` and gets a
new ``last_seen``; a new or re-appearing finding opens a new record; an open record in
the scope that the audit did not find again is resolved (``resolved_at``). Stores keep
resolved records, so auditors can see what was fixed when.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class ViolationState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One finding of the policy check, with its history once stored."""

    path: str
    rule: str
    severity: str
    expected: str
    actual: str
    message: str
    user_type: str | None = None
    beamline: str | None = None
    proposal: str | None = None
    visit: str | None = None
    #: POSIX timestamps, set by the store.
    first_seen: float | None = None
    last_seen: float | None = None
    resolved_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.rule)

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
