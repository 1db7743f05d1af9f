"""Reconciliation: compare the disk with the catalogue, both ways.

Walk a subtree and compare each regular file's ``lstat`` with the fingerprint its
document was stored with (size, mtime, ctime, inode):

- a file with no document, or whose size, mtime or inode differ: work with ``content``
  (the pipeline extracts it again);
- a file whose ctime alone differs: work with ``attrib`` (the policy is checked again,
  nothing is re-extracted);
- a file whose fingerprint is unchanged: nothing (so a restart does not re-read what
  was already catalogued);
- every directory: work with ``attrib``, so the policy of directories is checked.

Documents whose files were not seen are reported as gone only after a *complete* pass,
and never below a directory that could not be listed (its files may still exist). The
caller deletes them after confirming with ``lstat`` (:func:`confirm_gone`), because a
file may have been created again since the walk passed its directory.

The walk is the scan's (:func:`catalogd.pipeline.tree_pass` with ``check=False``:
forked children list and ``fstatat`` the entries and send back stat tuples in parts; the
daemon's pipeline checks the policy of what it is handed). ``root`` is the daemon's
subtree (``[watch] subtree``) or any directory below it. ``emit`` receives work in
chunks as the parts arrive, so the daemon starts on the first changes while a big tree
is still being walked.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from catalogd.daemon.coalesce import Work
from catalogd.errors import UsageError
from catalogd.pipeline import (
    DEFAULT_PROCESSES,
    Change,
    TreePass,
    compare,
    gone_after_pass,
    tree_pass,
)
from catalogd.policy import Policy
from catalogd.policy.walker import Lstat, Opener, open_dir
from catalogd.store.base import Fingerprint

log = logging.getLogger(__name__)

#: Work handed to ``emit`` at once.
EMIT_CHUNK = 512


@dataclass
class ReconcileResult:
    root: str
    files: int = 0
    directories: int = 0
    new: int = 0
    changed: int = 0
    attrib: int = 0
    #: Documents whose files were not found (to be confirmed, then deleted).
    gone: list[Fingerprint] = field(default_factory=list)
    #: Directories that could not be listed (nothing below them is reported gone).
    unlisted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    complete: bool = False
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0


def reconcile(
    root: str,
    known: Iterable[Fingerprint],
    *,
    emit: Callable[[list[Work]], None],
    policy: Policy,
    directories: bool = True,
    processes: int = DEFAULT_PROCESSES,
    cross_mounts: bool = False,
    stop: threading.Event | None = None,
    opener: Opener = open_dir,
) -> ReconcileResult:
    """Compare the tree at ``root`` with ``known`` (the store's fingerprints under
    ``root``, read *before* the walk starts) and emit the work that brings the store up
    to date. ``policy`` gives the walk its layout and ACL setting (it checks nothing).
    See the module docstring."""
    result = ReconcileResult(root)
    snapshot = {fp.path: fp for fp in known}
    chunk: list[Work] = []

    def push(work: Work) -> None:
        chunk.append(work)
        if len(chunk) >= EMIT_CHUNK:
            emit(chunk.copy())
            chunk.clear()

    def finish(complete: bool) -> ReconcileResult:
        emit(chunk)
        result.complete = complete
        result.elapsed_s = time.monotonic() - result.started
        return result

    tree = TreePass(root)
    try:
        os.lstat(root)
    except FileNotFoundError:  # the root itself is gone: everything below it is
        result.gone = list(snapshot.values())
        return finish(True)
    except OSError:
        pass  # tree_pass says why
    parts = tree_pass(
        root,
        policy,
        check=False,
        processes=processes,
        cross_mounts=cross_mounts,
        opener=opener,
        stop=stop,
        result=tree,
    )
    try:
        for part in parts:
            if stop is not None and stop.is_set():
                break
            result.directories += len(part.dirs)
            if directories:
                for path in part.dirs:
                    push(Work(path, attrib=True, is_dir=True))
            result.files += len(part.files)
            for fs in part.files:
                path, _, inode, _, _, _, _, size, mtime, ctime = fs
                before = snapshot.pop(path, None)
                change = compare(before, size, mtime, ctime, inode)
                if change is Change.NEW:
                    result.new += 1
                    push(Work(path, content=True))
                elif change is Change.CONTENT:
                    result.changed += 1
                    push(Work(path, content=True))
                elif change is Change.ATTRIB:
                    result.attrib += 1
                    push(Work(path, attrib=True))
    except UsageError as exc:  # the root cannot be read (or is not a directory)
        result.errors.append(str(exc))
        log.warning("cannot reconcile %s", exc)
        return finish(False)
    finally:
        parts.close()  # stops the walking children when the walk was left early
    result.unlisted = list(tree.unlisted)
    result.errors.extend(tree.errors)
    if not tree.complete or (stop is not None and stop.is_set()):
        log.info("reconcile of %s interrupted", root)
        return finish(False)
    result.gone = gone_after_pass(snapshot.values(), result.unlisted)
    return finish(True)


def confirm_gone(
    candidates: Iterable[Fingerprint], *, lstat: Lstat = os.lstat
) -> list[Fingerprint]:
    """Those of ``candidates`` that are still not regular files on disk."""
    out = []
    for fp in candidates:
        try:
            st = lstat(fp.path)
        except FileNotFoundError:
            out.append(fp)
            continue
        except NotADirectoryError:
            out.append(fp)
            continue
        except OSError:
            continue  # cannot tell: keep it
        if not stat.S_ISREG(st.st_mode):
            out.append(fp)
    return out
