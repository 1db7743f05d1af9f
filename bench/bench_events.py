"""Benchmark: a burst of N files into one new directory, through each event source.

For every source that works here (fanotify needs CAP_SYS_ADMIN), a child process
creates a new directory and writes N files into it at once (open, write 64 bytes,
close), as an acquisition does; the source's events are counted until every file's
close-after-write has been seen or nothing arrives for a while. Prints, per source:
files written, creates and close-after-writes seen (inotify's files found by listing
the new directory are counted apart: they are reported as synthetic creates, their
close may have come before the watch), overflows, the time the writer took and the
time until the last file was accounted for.

    .venv/bin/python bench/bench_events.py [--files 50000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time

from catalogd.events import Event, EventKind
from catalogd.sources import EventSource, SourceUnavailable
from catalogd.sources.fanotify import FanotifySource
from catalogd.sources.inotify import InotifySource
from catalogd.sources.testing import BURST_WRITER, Recorder, all_complete, burst_paths

#: Give up when no event arrived for this long after the writer finished.
QUIET_GIVE_UP_S = 5.0


def run_one(kind: str, base: str, files: int) -> dict[str, object]:
    root = tempfile.mkdtemp(prefix=f"bench-events-{kind}-", dir=base)
    events: queue.Queue[Event] = queue.Queue()
    source: EventSource
    try:
        if kind == "fanotify":
            source = FanotifySource(root, events)
        else:
            source = InotifySource(root, events)
    except SourceUnavailable as exc:
        shutil.rmtree(root)
        return {"source": kind, "error": exc.message}
    target = os.path.join(os.path.realpath(root), "burst")
    paths = burst_paths(target, files)
    recorder = Recorder(events)

    done = all_complete(paths)

    try:
        source.start()
        t0 = time.monotonic()
        writer = subprocess.Popen([sys.executable, "-c", BURST_WRITER, target, str(files)])
        while writer.poll() is None:
            recorder.wait(lambda r: False, 0.2)
        t_written = time.monotonic() - t0
        if writer.returncode != 0:
            raise SystemExit(f"writer failed with status {writer.returncode}")
        seen_before = -1
        while not done(recorder) and len(recorder.all) != seen_before:
            seen_before = len(recorder.all)
            recorder.wait(done, QUIET_GIVE_UP_S)
        t_seen = time.monotonic() - t0
    finally:
        source.stop()
        shutil.rmtree(root)
    closed = sum(1 for p in paths if recorder.saw(p, EventKind.CLOSED_WRITE))
    created = sum(
        1 for p in paths if recorder.saw(p, EventKind.CREATED) and p not in recorder.synthetic
    )
    listed = sum(1 for p in paths if p in recorder.synthetic)
    return {
        "source": kind,
        "written": files,
        "creates": created,
        "closes": closed,
        "listed": listed,
        "all": sum(
            1 for p in paths if recorder.saw(p, EventKind.CLOSED_WRITE) or p in recorder.synthetic
        ),
        "overflows": len(recorder.overflows),
        "write_s": t_written,
        "seen_s": t_seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write")
    parser.add_argument("--sources", default="fanotify,inotify")
    args = parser.parse_args()
    print(f"burst of {args.files} files into one new directory under {args.dir}")
    header = (
        f"{'source':<10} {'written':>8} {'creates':>8} {'closes':>8} {'listed':>7} "
        f"{'accounted':>9} {'overflow':>8} {'write s':>8} {'seen s':>7}"
    )
    print(header)
    print("-" * len(header))
    for kind in args.sources.split(","):
        row = run_one(kind, args.dir, args.files)
        if "error" in row:
            print(f"{kind:<10} unavailable: {row['error']}")
            continue
        print(
            f"{row['source']:<10} {row['written']:>8} {row['creates']:>8} {row['closes']:>8} "
            f"{row['listed']:>7} {row['all']:>9} {row['overflows']:>8} "
            f"{row['write_s']:>8.2f} {row['seen_s']:>7.2f}"
        )
    print(
        "creates/closes: kernel events per file; listed: files inotify found by listing "
        "the new directory (synthetic creates); accounted: files with a close or a "
        "listing; write s: the writer's time; seen s: until the last file was accounted for"
    )


if __name__ == "__main__":
    main()
