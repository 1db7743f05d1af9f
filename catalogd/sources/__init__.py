"""Event sources: the only modules that talk to the kernel's change notification.

:func:`open_source` picks one for a root and says why: fanotify (one whole-file-system
mark, nothing to add as directories appear) when the process has the privilege and
the root is on a local file system, else the recursive inotify layer. Both put
:mod:`catalogd.events` into the queue they are given.

Usage::

    events: queue.Queue[Event] = queue.Queue()
    source = open_source("/data", events)
    log.info("watching with %s: %s", source.name, source.reason)
    source.start()
    ...
    event = events.get(timeout=1.0)
    ...
    source.stop()
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

from catalogd.sources.base import (
    STOP_TIMEOUT_S,
    EventQueue,
    EventSource,
    SourceError,
    SourceUnavailable,
)

__all__ = [
    "REMOTE_FS_TYPES",
    "STOP_TIMEOUT_S",
    "EventQueue",
    "EventSource",
    "Mount",
    "Prefer",
    "SourceError",
    "SourceUnavailable",
    "find_mount",
    "open_source",
]

log = logging.getLogger(__name__)

Prefer = Literal["auto", "fanotify", "inotify"]

#: File systems where a kernel on this node does not see other nodes' changes (and
#: where neither fanotify nor inotify can promise anything): poll these.
REMOTE_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "gpfs",
        "lustre",
        "beegfs",
        "glusterfs",
        "afs",
        "9p",
        "fuse",
        "fuseblk",
        "ocfs2",
        "gfs2",
    }
)
MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: str
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    raw = os.fsencode(field)
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def find_mount(path: str, mountinfo: str) -> Mount | None:
    """The mount that ``path`` (absolute, resolved) is on, from the text of
    ``/proc/self/mountinfo``: the longest mount point that is a prefix of it (the last
    one listed wins, as a later mount hides an earlier one at the same place)."""
    best: Mount | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        point = _unescape(fields[4])
        under = path == point or path.startswith(point.rstrip("/") + "/")
        if under and (best is None or len(point) >= len(best.mount_point)):
            best = Mount(point, tail[0], _unescape(tail[1]))
    return best


def _read_mountinfo() -> str:
    try:
        with open(MOUNTINFO) as f:
            return f.read()
    except OSError:
        return ""


def _is_remote(fs_type: str) -> bool:
    base = fs_type.split(".", 1)[0]  # fuse.sshfs, fuse.glusterfs ...
    return fs_type in REMOTE_FS_TYPES or base in REMOTE_FS_TYPES


def open_source(
    root: str,
    events: EventQueue,
    *,
    prefer: Prefer = "auto",
    strict: bool = False,
    unlimited_queue: bool = False,
    mountinfo: str | None = None,
) -> EventSource:
    """Build (but do not start) the best event source for ``root``.

    ``prefer="auto"`` (or ``"fanotify"``): fanotify if the root is on a local file
    system and fanotify can be set up here, else inotify. ``prefer="inotify"``:
    inotify. With ``strict``, a preferred fanotify that cannot be used raises
    :class:`SourceUnavailable` instead of falling back. The returned source's
    ``name`` and ``reason`` say which was chosen and why (including the errno of
    what failed). ``unlimited_queue`` is passed to the fanotify source (an unbounded
    kernel queue instead of ``fs.fanotify.max_queued_events``). ``mountinfo`` is the
    text of ``/proc/self/mountinfo`` (read when not given).
    """
    from catalogd.sources.fanotify import FanotifySource
    from catalogd.sources.inotify import InotifySource

    resolved = os.path.realpath(root)
    if not os.path.isdir(resolved):
        raise SourceError(f"cannot watch {root}: not a directory")
    mount = find_mount(resolved, _read_mountinfo() if mountinfo is None else mountinfo)
    where = f"{mount.fs_type} mounted at {mount.mount_point}" if mount else "unknown file system"
    remote = mount is not None and _is_remote(mount.fs_type)
    remote_note = (
        f"; {mount.fs_type} is a shared file system: changes made on other nodes are NOT "
        "seen, poll it"
        if mount is not None and remote
        else ""
    )
    why_not: str
    if prefer == "inotify":
        why_not = "inotify was asked for"
    elif remote:
        why_not = f"fanotify not used: {where} is not local"
        if strict:
            raise SourceUnavailable(why_not)
    else:
        try:
            source: EventSource = FanotifySource(resolved, events, unlimited_queue=unlimited_queue)
        except SourceUnavailable as exc:
            if strict:
                raise
            why_not = f"fanotify unavailable: {exc.message}"
        else:
            source.reason = f"fanotify: whole-file-system mark on {where}"
            log.info("event source for %s: %s", resolved, source.reason)
            return source
    source = InotifySource(resolved, events)
    source.reason = f"inotify: {why_not}{remote_note}"
    log.info("event source for %s: %s", resolved, source.reason)
    return source
