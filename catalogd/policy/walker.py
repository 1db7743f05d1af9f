"""The audit's walk: list, stat and check every entry of a tree, in parallel.

A Python ``lstat`` costs a few microseconds, most of it building the stat result while
holding the GIL, so threads cannot make a walk of a few hundred thousand entries fast.
The audit therefore walks the top of the tree (down to the proposals, or until it has
enough subtrees) in the calling process and hands the subtrees to a small pool of
forked processes; each walks its subtrees and sends back only the findings.

Directories are opened once and their entries stat'ed relative to the open directory
(``fstatat``), as ``find`` does. Symbolic links are never followed; directories on
another file system are checked but not entered unless ``cross_mounts``; entries that
vanish are skipped; a directory that cannot be opened or listed is a finding (DP011).
The walk keeps its own stack, so depth costs nothing but memory, and holds one directory
open at a time.

For entries inside a visit, :meth:`Policy.inside_expectation` gives the ids and bits
that make an entry certainly clean; only the others go through the full
:meth:`Policy.check` (with their ACLs and link targets read by :func:`read_facts`).
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from catalogd.layout import Level, Location, classify
from catalogd.policy import rules as R
from catalogd.policy.acl import ACCESS_XATTR, DEFAULT_XATTR, NO_ACLS, Acls, read_acls
from catalogd.policy.check import EntryFacts, Fix, InsideExpectation, Policy
from catalogd.violations import Violation

#: Rules whose findings ``--fix`` can mend.
FIXABLE = frozenset(rule.id for rule in R.RULES.values() if rule.fixable)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: Subtrees per process before the walk stops splitting the top of the tree.
SUBTREES_PER_PROCESS = 8
#: How many levels the calling process walks at most before handing out subtrees.
MAX_SPLIT_DEPTH = 6

_S_IFMT = 0o170000
_S_IFDIR = stat.S_IFDIR
_S_IFLNK = stat.S_IFLNK

Opener = Callable[[str], int]
ReadAcls = Callable[..., Acls]


def open_dir(path: str) -> int:
    """Open a directory for listing, never through a symbolic link."""
    return os.open(path, _DIR_FLAGS)


@dataclass(frozen=True, slots=True)
class FixTarget:
    """An entry with findings ``--fix`` can mend, as the walk saw it."""

    path: str
    st: os.stat_result
    fix: Fix
    rules: tuple[str, ...]


@dataclass
class AuditPart:
    """What the walk of part of a tree found."""

    entries: int = 0
    findings: list[Violation] = field(default_factory=list)
    fixes: list[FixTarget] = field(default_factory=list)

    def merge(self, other: AuditPart) -> None:
        self.entries += other.entries
        self.findings.extend(other.findings)
        self.fixes.extend(other.fixes)


def read_facts(
    path: str,
    st: os.stat_result | None,
    error: OSError | None = None,
    *,
    check_acls: bool = True,
    readlink: Callable[[str], str] = os.readlink,
    acls: ReadAcls = read_acls,
) -> EntryFacts:
    """What the check needs besides ``lstat``: a link's target, the ACLs, read errors."""
    if error is not None or st is None:
        return EntryFacts(error=error)
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        try:
            return EntryFacts(link_target=readlink(path))
        except FileNotFoundError:
            return EntryFacts()
        except OSError as exc:
            return EntryFacts(error=exc)
    if not check_acls:
        return EntryFacts()
    try:
        found = acls(path, is_dir=stat.S_ISDIR(mode))
    except FileNotFoundError:
        found = NO_ACLS
    except OSError as exc:
        return EntryFacts(error=exc)
    except ValueError as exc:  # a malformed ACL: say so rather than guess
        return EntryFacts(error=OSError(0, f"malformed ACL: {exc}", path))
    return EntryFacts(acls=found) if found is not NO_ACLS else EntryFacts()


class TreeAuditor:
    """Checks the entries of directories; one per process."""

    def __init__(
        self,
        policy: Policy,
        *,
        root_dev: int | None,
        plan_fixes: bool = False,
        opener: Opener = open_dir,
        relative_xattrs: bool = False,
    ) -> None:
        self.policy = policy
        #: Read xattrs relative to the directory being listed, after ``fchdir`` to it:
        #: the kernel then resolves one name instead of the whole path. Only for a
        #: process of our own (a forked worker): the working directory is per process.
        self.relative_xattrs = relative_xattrs
        self.root_dev = root_dev
        self.plan_fixes = plan_fixes
        self.opener = opener
        self.check_acls = policy.settings.check_acls

    def check_entry(
        self, part: AuditPart, path: str, st: os.stat_result | None, error: OSError | None
    ) -> Location:
        """The full check of one entry, into ``part``."""
        location = classify(path, self.policy.layout)
        facts = read_facts(path, st, error, check_acls=self.check_acls)
        found = self.policy.check(location, st, facts)
        if found:
            part.findings.extend(found)
            if self.plan_fixes and st is not None:
                rules = tuple(v.rule for v in found if v.rule in FIXABLE)
                fix = self.policy.fix_for(location, st, rules=rules) if rules else None
                if fix is not None:
                    part.fixes.append(FixTarget(path, st, fix, rules))
        return location

    def list_dir(self, directory: str, part: AuditPart) -> list[str]:
        """Check every entry of ``directory``; returns the subdirectories to enter."""
        subdirs: list[str] = []
        location = classify(directory, self.policy.layout)
        quick = None
        if location.level in (Level.AREA, Level.INSIDE):
            quick = self.policy.inside_expectation(location)
        try:
            fd = self.opener(directory)
        except (FileNotFoundError, NotADirectoryError):
            return subdirs  # vanished (or replaced) since it was listed
        except OSError as exc:
            self._unreadable(part, directory, exc)
            return subdirs
        try:
            if quick is None:
                self._list_all(fd, directory, part, subdirs)
            else:
                self._list_inside(fd, directory, part, subdirs, quick)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._unreadable(part, directory, exc)
        finally:
            os.close(fd)
        return subdirs

    def _list_all(self, fd: int, directory: str, part: AuditPart, subdirs: list[str]) -> None:
        """Every entry through the full check (the few directories above the visits)."""
        prefix = "" if directory == "/" else directory
        root_dev = self.root_dev
        with os.scandir(fd) as entries:
            for entry in entries:
                path = prefix + "/" + entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    part.entries += 1
                    self.check_entry(part, path, None, exc)
                    continue
                part.entries += 1
                if stat.S_ISDIR(st.st_mode) and (root_dev is None or st.st_dev == root_dev):
                    subdirs.append(path)
                self.check_entry(part, path, st, None)

    def _list_inside(
        self,
        fd: int,
        directory: str,
        part: AuditPart,
        subdirs: list[str],
        quick: InsideExpectation,
    ) -> None:
        """Entries inside a visit: the quick test first (this loop runs once per entry,
        hence the locals); the full check only for what fails it."""
        prefix = "" if directory == "/" else directory
        want_uid, want_gid = quick.uid, quick.gid
        required, forbidden = quick.required, quick.forbidden
        root_dev = self.root_dev
        check_acls = self.check_acls
        relative = self.relative_xattrs and check_acls
        listxattr = os.listxattr
        lstat = os.lstat
        count = 0
        if relative:
            os.fchdir(fd)
        try:
            for name in os.listdir(fd):
                try:
                    st = lstat(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    count += 1
                    self.check_entry(part, prefix + "/" + name, None, exc)
                    continue
                count += 1
                mode = st.st_mode
                kind = mode & _S_IFMT
                if kind == _S_IFDIR and (root_dev is None or st.st_dev == root_dev):
                    subdirs.append(prefix + "/" + name)
                if (
                    kind != _S_IFLNK
                    and (st.st_gid == want_gid or want_gid is None)
                    and not mode & forbidden
                    and (kind != _S_IFDIR or mode & required == required)
                    and (want_uid is None or st.st_uid == want_uid)
                ):
                    if not check_acls:
                        continue
                    try:
                        names = listxattr(
                            name if relative else prefix + "/" + name, follow_symlinks=False
                        )
                    except OSError:
                        names = [ACCESS_XATTR]  # let the full check read and report
                    if not names or (ACCESS_XATTR not in names and DEFAULT_XATTR not in names):
                        continue
                self.check_entry(part, prefix + "/" + name, st, None)
        finally:
            part.entries += count

    def walk_subtree(self, directory: str) -> AuditPart:
        """Check everything below ``directory`` (not the directory itself)."""
        part = AuditPart()
        stack = [directory]
        while stack:
            stack.extend(self.list_dir(stack.pop(), part))
        return part

    def _unreadable(self, part: AuditPart, directory: str, exc: OSError) -> None:
        if exc.filename is None:
            exc.filename = directory
        self.check_entry(part, directory, None, exc)


# -- the process pool -----------------------------------------------------------------
_WORKER: TreeAuditor | None = None


def _walk_task(directory: str) -> AuditPart:
    assert _WORKER is not None, "the pool's worker state is set before forking"
    _WORKER.relative_xattrs = True  # a forked worker: its working directory is its own
    return _WORKER.walk_subtree(directory)


def walk_tree(auditor: TreeAuditor, root: str, part: AuditPart, *, processes: int) -> None:
    """Check everything below the directory ``root`` into ``part``.

    With ``processes`` > 1 the subtrees are walked by forked processes; forking is only
    done from a single-threaded process (a daemon with threads walks in-process).
    """
    frontier = [root]
    depth = 0
    target = processes * SUBTREES_PER_PROCESS
    parallel = processes > 1 and threading.active_count() == 1
    while parallel and frontier and depth < MAX_SPLIT_DEPTH and len(frontier) < target:
        following: list[str] = []
        for directory in frontier:
            following.extend(auditor.list_dir(directory, part))
        frontier = following
        depth += 1
    if not frontier:
        return
    if not parallel or len(frontier) == 1:
        for directory in frontier:
            part.merge(auditor.walk_subtree(directory))
        return
    for piece in _in_processes(auditor, frontier, processes):
        part.merge(piece)


def _in_processes(auditor: TreeAuditor, subtrees: list[str], processes: int) -> Iterator[AuditPart]:
    global _WORKER
    _WORKER = auditor
    try:
        context = multiprocessing.get_context("fork")
        pool = context.Pool(min(processes, len(subtrees)))
        try:
            yield from pool.imap_unordered(_walk_task, subtrees, chunksize=1)
            pool.close()
        finally:
            pool.terminate()
            pool.join()
    finally:
        _WORKER = None
