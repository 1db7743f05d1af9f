"""Benchmark: ``catalogd scan`` into the embedded store on a 100,000-file tree.

Generates a /data-shaped tree (cached between runs), then in the same run times
``catalogd scan ROOT --store sqlite:///...`` (a fresh store each repetition) and GNU
``find ROOT -printf '%U %G %m %s %T@ %p\\n'`` (the walk and stat alone, no catalogue),
and prints files per second for both and the ratio.

    python bench/bench_scan.py [--files 100000] [--repeat 3] [--dir /tmp/catalogd-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER_TYPES = ("visitor", "staff", "proprietary")
FILES_PER_VISIT = 250
#: Detector frames (not HDF5): the scan must open each to look for an HDF5 signature.
CBF_HEADER = b"###CBF: VERSION 1.5\r\n# Detector: PILATUS 6M\r\n" + b"\x00" * 64


def build_tree(root: Path, files: int) -> None:
    """Small detector frames spread like a facility's: 250 per visit, 4 per proposal."""
    marker = root / f".complete-cbf2-{files}"
    if marker.exists():
        return
    if root.exists():
        shutil.rmtree(root)
    made = 0
    visit_no = 0
    while made < files:
        user_type = USER_TYPES[visit_no % len(USER_TYPES)]
        beamline = f"bl{visit_no % 7}"
        proposal = f"2017{visit_no // 4:04d}"
        visit = f"201711{visit_no % 28 + 1:02d}08"
        raw = root / user_type / beamline / proposal / visit / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        (raw.parent / "process").mkdir(exist_ok=True)
        for i in range(min(FILES_PER_VISIT, files - made)):
            (raw / f"frame_{i:05d}.cbf").write_bytes(CBF_HEADER)
            made += 1
        visit_no += 1
    marker.touch()


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "catalogd-bench")
    args = parser.parse_args()

    tree = args.dir / "data"
    print(f"building a tree of {args.files:,} files under {tree} ...", flush=True)
    build_tree(tree, args.files)
    catalogd = str(Path(sys.executable).with_name("catalogd"))
    find = shutil.which("find")
    if find is None:
        print("GNU find is needed for the comparison", file=sys.stderr)
        return 2
    scan_times: list[float] = []
    find_times: list[float] = []
    for n in range(args.repeat):
        db = args.dir / f"bench-{n}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        subprocess.run(["sync"], check=False)
        find_times.append(timed([find, str(tree), "-printf", r"%U %G %m %s %T@ %p\n"]))
        scan_times.append(timed([catalogd, "scan", str(tree), "--store", f"sqlite:///{db}", "-q"]))
        os.unlink(db)
    scan_s, find_s = statistics.median(scan_times), statistics.median(find_times)
    print(
        f"catalogd scan: {args.files / scan_s:10,.0f} files/s  ({scan_s:.2f} s, median of "
        f"{args.repeat}; walk, stat, classify and store in SQLite with full-text index)"
    )
    print(
        f"GNU find     : {args.files / find_s:10,.0f} files/s  ({find_s:.2f} s; walk and stat only)"
    )
    print(f"ratio        : catalogd takes {scan_s / find_s:.1f}x find's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
