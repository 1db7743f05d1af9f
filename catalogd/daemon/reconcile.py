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

The walk runs in the caller's thread; ``emit`` receives work in chunks as it is found,
so the daemon starts on the first changes while a big tree is still being walked.
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
from catalogd.errors import describe_os_error
from catalogd.store.base import Fingerprint
from catalogd.store.query import under_prefix
from catalogd.walk import DEFAULT_WORKERS, Lstat, Scandir, walk

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
    directories: bool = True,
    workers: int = DEFAULT_WORKERS,
    cross_mounts: bool = False,
    stop: threading.Event | None = None,
    scandir: Scandir = os.scandir,
    lstat: Lstat = os.lstat,
) -> ReconcileResult:
    """Compare the tree at ``root`` with ``known`` (the store's fingerprints under
    ``root``, read *before* the walk starts) and emit the work that brings the store up
    to date. See the module docstring."""
    result = ReconcileResult(root)
    snapshot = {fp.path: fp for fp in known}
    chunk: list[Work] = []

    def push(work: Work) -> None:
        chunk.append(work)
        if len(chunk) >= EMIT_CHUNK:
            emit(chunk.copy())
            chunk.clear()

    try:
        entries = walk(
            root, workers=workers, cross_mounts=cross_mounts, scandir=scandir, lstat=lstat
        )
        for entry in entries:
            if stop is not None and stop.is_set():
                log.info("reconcile of %s interrupted", root)
                emit(chunk)
                result.elapsed_s = time.monotonic() - result.started
                return result
            if entry.error is not None:
                result.errors.append(describe_os_error(entry.error))
                if entry.is_dir:
                    result.unlisted.append(entry.path)
                snapshot.pop(entry.path, None)  # cannot tell: keep its document
                continue
            st = entry.stat
            assert st is not None
            if entry.is_dir:
                result.directories += 1
                if directories:
                    push(Work(entry.path, attrib=True, is_dir=True))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # links and special files are not catalogued
            result.files += 1
            before = snapshot.pop(entry.path, None)
            now = Fingerprint.of_stat(before.id if before else "", entry.path, st)
            if before is None:
                result.new += 1
                push(Work(entry.path, content=True))
            elif not before.same_content(now):
                result.changed += 1
                push(Work(entry.path, content=True))
            elif before.ctime != now.ctime:
                result.attrib += 1
                push(Work(entry.path, attrib=True))
    except FileNotFoundError:
        # The root itself is gone: everything below it is.
        pass
    except OSError as exc:
        result.errors.append(describe_os_error(exc))
        log.warning("cannot reconcile %s", describe_os_error(exc))
        emit(chunk)
        result.elapsed_s = time.monotonic() - result.started
        return result
    emit(chunk)
    result.gone = [
        fp for fp in snapshot.values() if not any(under_prefix(fp.path, d) for d in result.unlisted)
    ]
    result.complete = True
    result.elapsed_s = time.monotonic() - result.started
    return result


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
