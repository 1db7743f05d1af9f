"""Benchmark: ``catalogd scan`` into the embedded store, against GNU find, on two trees.

- **dirty**: small detector frames (CBF, not HDF5), 250 per visit, owned by root: the
  groups the policy wants do not exist, so every entry takes the full policy check and
  has findings (cached between runs);
- **clean** (as root only): the same frames in a tree clean under the default policy,
  with beamline service users and proposal groups made for the run (named with
  bench_audit's random prefix and removed afterwards, with the tree).

For each tree, in the same run, it times ``catalogd scan ROOT --store sqlite:///...`` (a
fresh store each repetition) and ``find ROOT -printf '%U %G %m %s %T@ %p\\n'`` (the walk
and stat alone, no catalogue), interleaved, and prints files per second for both, the
ratio and the machine's load. ``--before SRC`` also times the scan of another source
tree (e.g. an export of main) in the same runs, so before and after meet the same load.

    python bench/bench_scan.py [--files 100000] [--trees dirty,clean] [--repeat 3]
        [--before /tmp/main-src] [--dir /tmp/catalogd-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

USER_TYPES = ("visitor", "staff", "proprietary")
FILES_PER_VISIT = 250
#: Detector frames (not HDF5): the scan must open each to look for an HDF5 signature.
CBF_HEADER = b"###CBF: VERSION 1.5\r\n# Detector: PILATUS 6M\r\n" + b"\x00" * 64
#: The issue's bound, files per second into the embedded store.
BOUND = 20_000


def build_tree(root: Path, files: int) -> None:
    """The dirty tree: frames spread like a facility's, 250 per visit, 4 per proposal."""
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


def build_clean_tree(root: Path, files: int) -> None:
    """The clean tree: bench_audit's owners, groups and modes, frames in visit/raw."""
    import grp
    import pwd

    from bench_audit import BEAMLINES, PREFIX, PROPOSALS, _dir

    proposals = BEAMLINES * PROPOSALS
    visits = -(-files // (FILES_PER_VISIT * proposals))  # per proposal, rounded up
    root.mkdir(mode=0o755)
    _dir(root / "visitor", 0, 0, 0o2755)
    made = 0
    for b in range(BEAMLINES):
        bl = f"{PREFIX}bl{b}"
        uid = pwd.getpwnam(f"{bl}-service").pw_uid
        _dir(root / "visitor" / bl, uid, grp.getgrnam(bl).gr_gid, 0o2775)
        for p in range(PROPOSALS):
            proposal = root / "visitor" / bl / f"{PREFIX}p{b}{p:02d}"
            gid = grp.getgrnam(f"{proposal.name}-group").gr_gid
            _dir(proposal, uid, gid, 0o2750)
            for v in range(visits):
                visit = proposal / f"2024{v // 28 + 1:02d}{v % 28 + 1:02d}08"
                _dir(visit, uid, gid, 0o2770)
                _dir(visit / "process", uid, gid, 0o2770)
                _dir(visit / "raw", uid, gid, 0o2770)
                for i in range(min(FILES_PER_VISIT, files - made)):
                    fd = os.open(visit / "raw" / f"frame_{i:05d}.cbf", os.O_CREAT | os.O_WRONLY)
                    os.write(fd, CBF_HEADER)
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, 0o640)
                    os.close(fd)
                    made += 1


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def measure(tree: Path, files: int, args: argparse.Namespace, label: str) -> bool:
    """Time find, the scan and (with --before) the other scan on ``tree``; print them."""
    catalogd = str(Path(sys.executable).with_name("catalogd"))
    find = shutil.which("find")
    assert find is not None
    scans: dict[str, dict[str, str] | None] = {"after": None}
    if args.before:
        scans = {"before": {**os.environ, "PYTHONPATH": str(args.before)}, **scans}
    times: dict[str, list[float]] = {"find": [], **{name: [] for name in scans}}
    findings: dict[str, int] = {}
    loads: list[float] = []
    timed([find, str(tree), "-printf", r"%U %G %m %s %T@ %p\n"])  # warm the caches
    for n in range(args.repeat):
        times["find"].append(timed([find, str(tree), "-printf", r"%U %G %m %s %T@ %p\n"]))
        for name, env in scans.items():
            db = args.dir / f"bench-{name}-{n}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            loads.append(os.getloadavg()[0])
            cmd = [catalogd, "scan", str(tree), "--store", f"sqlite:///{db}", "-q"]
            times[name].append(timed(cmd, env))
            with sqlite3.connect(db) as conn:
                stored = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
                findings[name] = conn.execute("SELECT count(*) FROM violations").fetchone()[0]
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            if stored < files:
                print(f"{name}: only {stored:,} documents stored of {files:,}", file=sys.stderr)
                return False
    find_s = statistics.median(times["find"])
    print(f"-- {label} tree: {files:,} files, median of {args.repeat}, interleaved; load "
          f"(1 min) {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(f"GNU find          : {files / find_s:10,.0f} files/s  ({find_s:.2f} s)")
    met = True
    for name in scans:
        scan_s = statistics.median(times[name])
        rate = files / scan_s
        print(
            f"catalogd scan {name:<6}: {rate:10,.0f} files/s  ({scan_s:.2f} s, "
            f"{scan_s / find_s:.1f}x find's time, {findings[name]:,} violations recorded)"
        )
        met = rate >= BOUND if name == "after" else met
    print(f"bound {BOUND:,} files/s: {'met' if met else 'NOT met'}")
    return met


def with_clean_tree(run: Callable[[Path], bool], files: int) -> bool:
    from bench_audit import create_ids, remove_ids

    users: list[str] = []
    groups: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="catalogd-bench-clean-"))
    try:
        create_ids(users, groups)
        started = time.perf_counter()
        build_clean_tree(workdir / "data", files)
        print(f"built a clean tree of {files:,} files in {time.perf_counter() - started:.0f} s")
        return run(workdir / "data")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        remove_ids(users, groups)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="e.g. 1000000 for 10^6")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trees", default="dirty,clean", help="dirty, clean or both")
    parser.add_argument("--before", type=Path, help="also scan with this source tree")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "catalogd-bench")
    args = parser.parse_args()
    trees = [t.strip() for t in args.trees.split(",") if t.strip()]
    if not set(trees) <= {"dirty", "clean"}:
        parser.error("--trees takes dirty, clean or both")
    if shutil.which("find") is None:
        print("GNU find is needed for the comparison", file=sys.stderr)
        return 2
    if "clean" in trees and os.geteuid() != 0:
        print("the clean tree needs root (it makes users and groups): skipping it")
        trees.remove("clean")
    args.dir.mkdir(parents=True, exist_ok=True)
    met = True
    for name in trees:
        if name == "dirty":
            tree = args.dir / "data"
            print(f"building (or reusing) a tree of {args.files:,} files under {tree} ...")
            build_tree(tree, args.files)
            met = measure(tree, args.files, args, "dirty (root-owned)") and met
        else:
            met = (
                with_clean_tree(lambda t: measure(t, args.files, args, "clean"), args.files) and met
            )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
