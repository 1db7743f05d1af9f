"""Is the writer done with a file? Signals read without ever getting in a writer's way.

An acquisition that reopens its file must never fail because the indexer holds it, so
nothing here takes a lock (no ``flock``, no ``fcntl``, no HDF5 open with locking): the
file is opened read-only with plain ``open(2)`` and read with ``pread``. The signals:

- **a lock held by a writer.** HDF5 (1.10 and newer, h5py by default) ``flock`` s a file
  exclusively while a writer has it open; a reader with HDF5 locking on would fail with
  EAGAIN. ``/proc/locks`` lists the locks held on this machine by device and inode, so
  a write lock on the file is seen without trying to take one (:func:`write_locked`).
- **the HDF5 superblock's "open for writing" flag.** Superblock versions 2 and 3 (files
  written with ``libver="latest"`` or ``"v108"`` and newer, and SWMR files) carry file
  consistency flags: bit 0 is set while a writer has the file open and cleared on a
  clean close (bit 2: SWMR writing). Versions 0 and 1 do not use it
  (:func:`hdf5_write_flag`). A writer that crashed leaves the flag set; the lock went
  with it, so the daemon waits at most ``writer_timeout_s`` for such a file.
- **size and mtime stable.** Without a close event, a file modified less than a quiet
  period ago is still being written (poll-only mode, a synthetic create).

:func:`check` combines them; it is a pure function of what it is given, apart from the
``pread`` of the superblock done by :func:`hdf5_write_flag`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: The superblock is at 0, 512, 1024, 2048 ... (after a user block).
_FIRST_USERBLOCK = 512
_MAX_SEARCH = 1 << 40
#: File consistency flags of superblock v2/v3.
FLAG_WRITE_ACCESS = 0x01
FLAG_SWMR_WRITE = 0x04
PROC_LOCKS = "/proc/locks"

#: (major, minor, inode) of a file, as /proc/locks names it.
LockKey = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str = ""


READY = Readiness(True)


def hdf5_write_flag(fd: int, size: int) -> bool | None:
    """True if the HDF5 superblock (v2/v3) of the open file says a writer has it open,
    False if it says not, None when the file is not HDF5 or its superblock (v0/v1)
    does not carry the flag. Reads with ``pread`` only."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) + 4 <= size and offset <= _MAX_SEARCH:
        head = os.pread(fd, 12, offset)
        if head[:8] == HDF5_SIGNATURE:
            version = head[8]
            if version in (2, 3) and len(head) == 12:
                return bool(head[11] & (FLAG_WRITE_ACCESS | FLAG_SWMR_WRITE))
            return None
        offset = _FIRST_USERBLOCK if offset == 0 else offset * 2
    return None


def hdf5_path_write_flag(path: str) -> bool | None:
    """:func:`hdf5_write_flag` of the file at ``path`` (None if it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return hdf5_write_flag(fd, os.fstat(fd).st_size)
    except OSError:
        return None
    finally:
        os.close(fd)


def parse_locks(text: str) -> frozenset[LockKey]:
    """The files with a *write* lock (flock, POSIX or OFD) in the text of /proc/locks.

    A line reads ``1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`` (major and minor
    in hexadecimal, the inode in decimal); blocked waiters (``->``) are skipped.
    """
    found: set[LockKey] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        if fields[3] != "WRITE":
            continue
        parts = fields[5].split(":")
        if len(parts) != 3:
            continue
        try:
            found.add((int(parts[0], 16), int(parts[1], 16), int(parts[2])))
        except ValueError:
            continue
    return frozenset(found)


def read_locks(path: str = PROC_LOCKS) -> frozenset[LockKey]:
    """The write-locked files of this machine (empty when /proc/locks is unreadable)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return parse_locks(f.read())
    except OSError:
        return frozenset()


def write_locked(st: os.stat_result, locks: Collection[LockKey]) -> bool:
    """Whether the file of ``st`` holds a write lock. On stacked file systems
    (overlayfs) the lock is on the lower inode's device, so the inode alone is matched
    when the device differs: a rare false positive only delays indexing."""
    if not locks:
        return False
    key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    return key in locks or any(ino == st.st_ino for _, _, ino in locks)


def check(
    path: str,
    st: os.stat_result,
    *,
    closed: bool,
    now: float,
    quiet_period_s: float,
    locks: Collection[LockKey],
    is_hdf5: bool,
    write_flag: Callable[[str], bool | None] = hdf5_path_write_flag,
) -> Readiness:
    """Whether the file at ``path`` (whose ``lstat`` is ``st``) can be indexed now.

    ``closed``: a close after writing (or a rename into place) was the last thing seen.
    ``now`` is wall-clock time (compared with ``st_mtime``).
    """
    if write_locked(st, locks):
        return Readiness(False, "a writer holds a lock on it")
    if is_hdf5 and write_flag(path):
        return Readiness(False, "its HDF5 superblock says it is open for writing")
    if not closed:
        age = now - st.st_mtime
        if 0 <= age < quiet_period_s:
            return Readiness(False, f"modified {age:.1f} s ago")
    return READY


def superblock_flags(data: bytes) -> int | None:
    """The consistency flags of a v2/v3 superblock at the start of ``data`` (tests)."""
    if data[:8] != HDF5_SIGNATURE or len(data) < 12 or data[8] not in (2, 3):
        return None
    (flags,) = struct.unpack_from("B", data, 11)
    return int(flags)
