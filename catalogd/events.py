"""The project's own event types: what an event source tells the rest of the daemon.

Only the modules under :mod:`catalogd.sources` talk to the kernel (fanotify, inotify);
everything downstream (the coalescer, the pipeline, the tests) sees these frozen
dataclasses and nothing else.

Every event is a *hint*: it names a path that may have changed. The consumer re-stats
the path to learn what is there now, because by the time the event is read the file
may have been written again, renamed or deleted. Paths are ``str`` as
:func:`os.fsdecode` gives them (undecodable bytes become surrogate escapes, so
``os.fsencode(path)`` gives the name back exactly).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventKind(enum.Enum):
    """What happened to a path."""

    #: The path appeared (created, hard-linked, or found by listing a new directory).
    CREATED = "created"
    #: The file's content was written (not yet closed: more may follow).
    MODIFIED = "modified"
    #: A writer closed the file: its content is probably complete.
    CLOSED_WRITE = "closed_write"
    #: Metadata only (mode, owner, times, extended attributes): content unchanged.
    ATTRIB = "attrib"
    #: The path was removed. For a directory: everything below it is gone too (its
    #: entries' own DELETED events usually come first, but a source may not be able
    #: to name entries of a directory that no longer exists).
    DELETED = "deleted"
    #: The path was renamed to somewhere this source cannot see (treat as deleted).
    MOVED_FROM = "moved_from"
    #: The path was renamed here from somewhere this source did not see (treat as
    #: created; for a directory, its whole subtree is new to the consumer).
    MOVED_TO = "moved_to"


@dataclass(frozen=True, slots=True)
class PathEvent:
    """Something happened to ``path``.

    ``synthetic`` is true when the source did not get this from the kernel but made it
    up from listing a directory it had just started watching (a directory created or
    moved in). A synthetic ``CREATED`` for a file says "this exists now"; the writer
    may already have closed it (its ``CLOSED_WRITE`` then came before the watch and is
    never reported) or may still be writing (its ``CLOSED_WRITE`` will follow), so the
    consumer treats it as possibly complete and lets its quiet period decide.
    """

    kind: EventKind
    path: str
    is_dir: bool
    source: str
    synthetic: bool = False


@dataclass(frozen=True, slots=True)
class Moved:
    """``src`` was renamed to ``dest``, both under the watched root.

    For a directory, everything below ``src`` is now below ``dest``; no events are
    sent for the entries inside.
    """

    src: str
    dest: str
    is_dir: bool
    source: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """Events were lost (the kernel queue overflowed): rescan ``root``.

    A source sends this after it has re-established its own watches, so a scan begun
    after receiving it misses nothing: what the scan does not see is reported again.
    """

    root: str
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unwatched:
    """The subtree at ``path`` cannot be watched (e.g. the inotify watch limit was
    reached): the consumer must poll it. Sent once per directory that failed; the
    source does not descend into it."""

    path: str
    reason: str
    source: str


@dataclass(frozen=True, slots=True)
class SourceFailed:
    """The source stopped delivering events (its thread hit an error it cannot
    recover from). The consumer should fall back (another source, or polling)."""

    source: str
    reason: str


Event = PathEvent | Moved | Overflow | Unwatched | SourceFailed


def affected_paths(event: Event) -> tuple[str, ...]:
    """The paths an event says may have changed (for a ``Moved``: source and
    destination; for an ``Overflow``: the root; ``()`` for ``SourceFailed``)."""
    if isinstance(event, PathEvent):
        return (event.path,)
    if isinstance(event, Moved):
        return (event.src, event.dest)
    if isinstance(event, Overflow):
        return (event.root,)
    if isinstance(event, Unwatched):
        return (event.path,)
    return ()
