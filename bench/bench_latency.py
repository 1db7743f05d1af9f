"""Benchmark: close-to-searchable latency of ``catalogd run`` with the embedded store.

For each event source asked for, on a fresh temporary tree of ``--dirs`` directories
(``visitor/blNN/pNNNN/vNNN/raw``), the daemon runs as ``catalogd run`` (a process of
its own, embedded SQLite store). Then, as an acquisition does (h5py: open, write a NeXus
entry and a small detector dataset, close):

1. **paced**: ``--files`` files at ``--rate`` files per second, each close time noted;
   the latency of a file is its document's ``indexed_at`` minus that close time;
2. **sustained**: ``--burst`` files as fast as the writer goes; files/s is the count
   over the time from the first close to the last ``indexed_at``.

Also the daemon's resident memory once it watches every directory (after its start
reconcile) and its peak (VmHWM), and the indexer processes' memory apart. Bound (issue
5): p99 <= 2 s with the embedded store.

    .venv/bin/python bench/bench_latency.py [--sources auto,inotify] [--dirs 50000]
        [--files 300] [--rate 20] [--burst 1000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from catalogd.document import document_id
from catalogd.store import open_store

BOUND_P99_S = 2.0
WAIT_S = 600.0
CATALOGD = [sys.executable, "-c", "import sys; from catalogd.cli import main; sys.exit(main())"]


def make_tree(root: Path, dirs: int) -> list[Path]:
    """``dirs`` directories in all (raw directories are where files are written)."""
    raws: list[Path] = []
    made = 0
    bl = 0
    while made < dirs:
        for p in range(20):
            for v in range(10):
                raw = root / "visitor" / f"bl{bl:02d}" / f"p{bl:02d}{p:03d}" / f"v{v:03d}" / "raw"
                raw.mkdir(parents=True)
                raws.append(raw)
                made += 2  # the visit and its raw
                if made >= dirs:
                    return raws
            made += 1
        bl += 1
    return raws


def write_scan(path: Path, i: int, frame: np.ndarray) -> float:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = f"bench scan {i}"
        entry["start_time"] = "2024-01-01T00:00:00Z"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data["frames"] = frame
    return time.time()


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (the indexer processes)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def status(state: Path) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads((state / "status.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def wait(condition: object, what: str, proc: subprocess.Popen[bytes]) -> None:
    assert callable(condition)
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            raise SystemExit(f"catalogd run exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_one(source: str, args: argparse.Namespace) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix=f"bench-latency-{source}-", dir=args.dir))
    root, state = base / "data", base / "state"
    url = f"sqlite:///{base}/catalog.db"
    t0 = time.monotonic()
    raws = make_tree(root, args.dirs)
    made_s = time.monotonic() - t0
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    env.update(
        CATALOGD_CONFIG=str(base / "empty.toml"),
        CATALOGD_DAEMON_SOURCE=source,
        CATALOGD_DAEMON_STATE_DIR=str(state),
        CATALOGD_DAEMON_EXTRACT_WORKERS=str(args.workers),
    )
    (base / "empty.toml").write_text("")
    log = open(base / "daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*CATALOGD, "run", "--root", str(root), "--store", url],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    result: dict[str, object] = {"source": source, "directories": args.dirs}
    try:
        t0 = time.monotonic()
        wait(lambda: status(state).get("reconciled_at_start") is True, "the start", proc)
        wait(lambda: status(state).get("pending") == 0, "the start's policy checks", proc)
        result["start_s"] = round(time.monotonic() - t0, 1)
        st = status(state)
        result["source_reason"] = st.get("reason")
        result["daemon_rss_watching_mib"] = round(rss_kib(proc.pid).get("VmRSS", 0) / 1024, 1)
        frame = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
        closes: dict[str, float] = {}
        # 1. paced, as an acquisition does
        interval = 1.0 / args.rate
        nxt = time.monotonic()
        for i in range(args.files):
            path = raws[i % len(raws)] / f"scan_{i:05d}.nxs"
            closes[str(path)] = write_scan(path, i, frame)
            nxt += interval
            time.sleep(max(0.0, nxt - time.monotonic()))
        paced = dict(closes)
        # 2. sustained: as fast as the writer goes
        burst: dict[str, float] = {}
        for i in range(args.burst):
            path = raws[(i * 7) % len(raws)] / f"burst_{i:05d}.nxs"
            burst[str(path)] = write_scan(path, i, frame)
        closes.update(burst)
        store = open_store(url)
        try:
            indexed: dict[str, float] = {}

            def all_indexed() -> bool:
                for path in [p for p in closes if p not in indexed]:
                    doc = store.get(document_id(path))
                    if doc is not None and doc.kind == "nexus":
                        indexed[path] = doc.indexed_at
                return len(indexed) == len(closes)

            wait(all_indexed, "every file to be searchable", proc)
        finally:
            store.close()
        latencies = sorted(indexed[p] - paced[p] for p in paced)
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        first_close = min(burst.values())
        last_indexed = max(indexed[p] for p in burst)
        result.update(
            files=len(paced),
            rate_asked=args.rate,
            latency_p50_s=round(q[49], 3),
            latency_p99_s=round(q[98], 3),
            latency_max_s=round(latencies[-1], 3),
            burst_files=len(burst),
            sustained_files_per_s=round(len(burst) / (last_indexed - first_close), 1),
            writer_files_per_s=round(len(burst) / (max(burst.values()) - first_close), 1),
            daemon_rss_peak_mib=round(rss_kib(proc.pid).get("VmHWM", 0) / 1024, 1),
            indexer_rss_mib=[
                round(rss_kib(c).get("VmRSS", 0) / 1024, 1) for c in children(proc.pid)
            ],
            p99_within_bound=q[98] <= BOUND_P99_S,
            tree_made_s=round(made_s, 1),
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        result["stopped_cleanly"] = status(state).get("stopped_cleanly")
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", default="auto,inotify")
    parser.add_argument("--dirs", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    for source in args.sources.split(","):
        print(json.dumps(run_one(source, args)), flush=True)


if __name__ == "__main__":
    main()
