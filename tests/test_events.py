"""The project's own event types."""

from __future__ import annotations

import dataclasses
import os

import pytest

from catalogd.events import (
    EventKind,
    Moved,
    Overflow,
    PathEvent,
    SourceFailed,
    Unwatched,
    affected_paths,
)


def test_events_are_frozen_and_hashable() -> None:
    event = PathEvent(EventKind.CLOSED_WRITE, "/data/a.h5", False, "inotify")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.path = "/elsewhere"  # type: ignore[misc]
    assert {event, PathEvent(EventKind.CLOSED_WRITE, "/data/a.h5", False, "inotify")} == {event}
    assert not event.synthetic


def test_affected_paths() -> None:
    assert affected_paths(PathEvent(EventKind.DELETED, "/d/x", False, "fanotify")) == ("/d/x",)
    assert affected_paths(Moved("/d/a", "/d/b", True, "fanotify")) == ("/d/a", "/d/b")
    assert affected_paths(Overflow("/d", "inotify", "lost")) == ("/d",)
    assert affected_paths(Unwatched("/d/big", "limit", "inotify")) == ("/d/big",)
    assert affected_paths(SourceFailed("inotify", "boom")) == ()


def test_undecodable_names_round_trip() -> None:
    raw = b"/data/scan-\xff.h5"
    event = PathEvent(EventKind.CREATED, os.fsdecode(raw), False, "inotify")
    assert os.fsencode(event.path) == raw


def test_kinds_have_stable_values() -> None:
    assert [k.value for k in EventKind] == [
        "created",
        "modified",
        "closed_write",
        "attrib",
        "deleted",
        "moved_from",
        "moved_to",
    ]
