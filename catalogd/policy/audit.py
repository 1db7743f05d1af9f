"""The audit: walk a tree, classify and check every entry, collect the findings.

:func:`audit_tree` is the entry point of ``catalogd audit``; :func:`check_path` checks
one path the way the daemon does when an event names it. Both read from the disk what the
pure check needs (``lstat``, the ACLs, a link's target) and hand it to
:meth:`~catalogd.policy.check.Policy.check`.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field

from catalogd.errors import UsageError, describe_os_error
from catalogd.layout import LayoutConfig, classify, normalise_root
from catalogd.policy.check import NameLookup, Policy
from catalogd.policy.settings import PolicySettings
from catalogd.policy.walker import (
    AuditPart,
    FixTarget,
    Lstat,
    Opener,
    TreeAuditor,
    open_dir,
    read_facts,
    walk_tree,
)
from catalogd.violations import Violation

#: Processes walking subtrees at most (the CLI's ``--workers`` and ``[scan] workers``).
DEFAULT_PROCESSES = os.cpu_count() or 1


@dataclass
class AuditResult:
    """The findings of one audit, sorted by path and rule."""

    root: str
    findings: list[Violation] = field(default_factory=list)
    #: Entries ``--fix`` could mend (only when the audit planned fixes).
    fixes: list[FixTarget] = field(default_factory=list)
    entries: int = 0
    #: When the audit started (POSIX time): the ``seen_at`` of its findings.
    started: float = field(default_factory=time.time)
    elapsed_s: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.findings


def make_policy(
    settings: PolicySettings | None,
    layout: LayoutConfig,
    names: NameLookup | None = None,
) -> Policy:
    """A compiled policy; the seed's when ``settings`` is None."""
    from catalogd.identity import NameCache

    return Policy(settings or PolicySettings(), layout, names or NameCache())


def check_path(path: str, policy: Policy, *, lstat: Lstat = os.lstat) -> list[Violation]:
    """Check one path (not what is below it), as the daemon does for an event.

    A path that no longer exists has no findings.
    """
    try:
        st: os.stat_result | None = lstat(path)
        error: OSError | None = None
    except FileNotFoundError:
        return []
    except OSError as exc:
        st, error = None, exc
    facts = read_facts(path, st, error, check_acls=policy.settings.check_acls)
    return policy.check(classify(path, policy.layout), st, facts)


def audit_tree(
    root: str,
    policy: Policy,
    *,
    processes: int = DEFAULT_PROCESSES,
    cross_mounts: bool = False,
    plan_fixes: bool = False,
    opener: Opener = open_dir,
) -> AuditResult:
    """Audit ``root`` and every entry below it.

    Raises UsageError (exit status 2) when ``root`` is not absolute, cannot be stat'ed or
    cannot be listed. Entries below it that cannot be read are findings (DP011). With
    ``processes`` > 1, subtrees are walked by forked processes (see
    :mod:`catalogd.policy.walker`).
    """
    if not root.startswith("/"):
        raise UsageError(f"audit root must be an absolute path, got {root!r}")
    root = normalise_root(root)
    result = AuditResult(root=root)
    clock = time.monotonic()
    try:
        root_stat = os.lstat(root)
    except OSError as exc:
        raise UsageError(f"cannot audit {describe_os_error(exc)}") from None
    auditor = TreeAuditor(
        policy,
        root_dev=None if cross_mounts else root_stat.st_dev,
        plan_fixes=plan_fixes,
        opener=opener,
    )
    part = AuditPart(entries=1)
    auditor.check_entry(part, root, root_stat, None)
    if stat.S_ISDIR(root_stat.st_mode):
        try:
            os.close(opener(root))
        except OSError as exc:
            raise UsageError(f"cannot read {describe_os_error(exc)}") from None
        walk_tree(auditor, root, part, processes=processes)
    result.entries = part.entries
    result.findings = sorted(part.findings, key=lambda v: (v.path, v.rule))
    result.fixes = sorted(part.fixes, key=lambda f: f.path)
    result.elapsed_s = time.monotonic() - clock
    return result
