"""The fanotify source: record parsing, the handle cache, overflow, privilege.

The overflow is provoked with the real ``fs.fanotify.max_queued_events``: the consumer's
queue holds one event, the reader blocks on it, and distinct hard links fill the kernel
queue (fanotify merges repeated events on one name, so each must be new).
"""

from __future__ import annotations

import os
import queue
import struct
from pathlib import Path

import pytest

from catalogd.events import Event, EventKind, Moved, PathEvent
from catalogd.sources import SourceUnavailable
from catalogd.sources import _linux as k
from catalogd.sources.fanotify import (
    READ_SIZE,
    FanotifySource,
    HandleCache,
    parse_events,
)
from catalogd.sources.testing import Recorder

TIMEOUT_S = 20.0


pytestmark = pytest.mark.usefixtures("no_source_leaks")


def fanotify(root: Path, events: queue.Queue[Event]) -> FanotifySource:
    try:
        return FanotifySource(str(root), events)
    except SourceUnavailable as exc:
        pytest.skip(f"fanotify unavailable here: {exc.message} (errno {exc.errno})")


# -- parsing, with no kernel -------------------------------------------------------------


def info(info_type: int, handle: bytes, name: bytes | None) -> bytes:
    body = b"FSIDFSID" + struct.pack("=Ii", len(handle), 1) + handle
    if name is not None:
        body += name + b"\0"
    length = 4 + len(body)
    pad = (-length) % 4
    return struct.pack("=BBH", info_type, 0, length + pad) + body + b"\0" * pad


def event(mask: int, *records: bytes) -> bytes:
    body = b"".join(records)
    return struct.pack("=IBBHQii", 24 + len(body), 3, 0, 24, mask, -1, 42) + body


def test_parse_events_splits_events_and_records() -> None:
    data = (
        event(k.FAN_CREATE | k.FAN_CLOSE_WRITE, info(k.FAN_EVENT_INFO_TYPE_DFID_NAME, b"H1", b"f"))
        + event(
            k.FAN_RENAME | k.FAN_ONDIR,
            info(k.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, b"H1", b"old"),
            info(k.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, b"H2xx", b"new\xff"),
        )
        + event(k.FAN_Q_OVERFLOW)
    )
    parsed = list(parse_events(data))
    assert [(m, fd) for m, fd, _ in parsed] == [
        (k.FAN_CREATE | k.FAN_CLOSE_WRITE, -1),
        (k.FAN_RENAME | k.FAN_ONDIR, -1),
        (k.FAN_Q_OVERFLOW, -1),
    ]
    first = parsed[0][2][k.FAN_EVENT_INFO_TYPE_DFID_NAME]
    assert first == (b"FSIDFSID" + struct.pack("=Ii", 2, 1) + b"H1", "f")
    renamed = parsed[1][2]
    assert renamed[k.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME][1] == "old"
    assert renamed[k.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME][1] == os.fsdecode(b"new\xff")
    assert parsed[2][2] == {}


def test_parse_events_rejects_a_wrong_version_and_truncation() -> None:
    good = event(k.FAN_CREATE, info(k.FAN_EVENT_INFO_TYPE_DFID_NAME, b"H", b"f"))
    with pytest.raises(ValueError, match="version"):
        list(parse_events(good[:4] + b"\x02" + good[5:]))
    with pytest.raises(ValueError, match="truncated"):
        list(parse_events(good[:-4]))


def test_handle_cache_is_bounded_and_least_recently_used() -> None:
    cache = HandleCache(maxsize=2)
    cache.put(b"a", "/a")
    cache.put(b"b", "/b")
    assert cache.get(b"a") == "/a"  # now b is the oldest
    cache.put(b"c", "/c")
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert cache.get(b"a") == "/a" and cache.get(b"c") == "/c"
    cache.clear()
    assert len(cache) == 0


# -- the real kernel -----------------------------------------------------------------


def test_directory_handles_resolve_through_the_cache(tmp_path: Path) -> None:
    events: queue.Queue[Event] = queue.Queue()
    source = fanotify(tmp_path, events)
    assert source.pairs_renames  # Linux 5.17+: FAN_RENAME
    resolved: list[str | None] = []
    real_resolve = source._resolve

    def counting_resolve(key: bytes) -> str | None:
        path = real_resolve(key)
        resolved.append(path)
        return path

    source._resolve = counting_resolve  # type: ignore[method-assign]
    with source:
        rec = Recorder(events)
        d = tmp_path / "visit"
        d.mkdir()
        files = [d / f"f{i}" for i in range(100)]
        for f in files:
            f.write_bytes(b"x")
        assert rec.wait(
            lambda r: all(r.saw(str(f), EventKind.CLOSED_WRITE) for f in files), TIMEOUT_S
        )
        # 300 events in the directory, about one resolution (the file system is shared:
        # another process's renames may empty the cache; count only our directory).
        assert 1 <= resolved.count(str(d)) <= 5
        # Renaming a directory empties the cache: later events carry the new name.
        os.rename(d, tmp_path / "renamed")
        later = tmp_path / "renamed" / "g"
        later.write_bytes(b"x")
        assert rec.wait(lambda r: r.saw(str(later), EventKind.CLOSED_WRITE), TIMEOUT_S)
        assert Moved(str(d), str(tmp_path / "renamed"), True, "fanotify") in rec.moves
        assert 1 <= resolved.count(str(tmp_path / "renamed")) <= 5


def test_merged_events_come_out_in_order(tmp_path: Path) -> None:
    events: queue.Queue[Event] = queue.Queue()
    with fanotify(tmp_path, events):
        rec = Recorder(events)
        path = tmp_path / "f"
        path.write_bytes(b"x")
        assert rec.wait(lambda r: r.saw(str(path), EventKind.CLOSED_WRITE), TIMEOUT_S)
        kinds = [e.kind for e in rec.all if isinstance(e, PathEvent) and e.path == str(path)]
        order = [EventKind.CREATED, EventKind.MODIFIED, EventKind.CLOSED_WRITE]
        assert [kind for kind in kinds if kind in order] == order


def test_overflow(tmp_path: Path) -> None:
    limit = int(Path("/proc/sys/fs/fanotify/max_queued_events").read_text())
    events: queue.Queue[Event] = queue.Queue(maxsize=1)
    source = fanotify(tmp_path, events)
    source.start()
    try:
        origin = tmp_path / "origin"
        origin.write_bytes(b"x")
        links = tmp_path / "links"
        links.mkdir()
        for i in range(limit + READ_SIZE // 32 + 100):
            os.link(origin, links / f"l{i}")
        rec = Recorder(events)
        assert rec.wait(lambda r: bool(r.overflows), TIMEOUT_S), "no Overflow"
        assert rec.overflows[0].root == str(tmp_path)
        assert rec.overflows[0].source == "fanotify"
        after = tmp_path / "after"
        after.write_bytes(b"x")
        assert rec.wait(lambda r: r.saw(str(after), EventKind.CLOSED_WRITE), TIMEOUT_S)
    finally:
        source.stop()
