"""Benchmark: ``catalogd audit`` against ``find -printf`` on a clean 200,000-entry tree.

Run as root (it creates users and groups, prefixed ``cdb`` and a random tag, and
removes them)::

    .venv/bin/python bench/bench_audit.py [--entries 200000] [--keep DIR]

It builds a tree that is clean under the default policy (``PolicySettings()``), times
``find ROOT -printf '%U %G %m %p\\n'`` and ``catalogd audit ROOT --format json`` (both
writing to /dev/null, caches warm, best of ``--repeat`` interleaved runs) and prints both and the
ratio. The issue's bound: the audit takes at most twice find's time.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: Users and groups are named with this prefix and a random tag, and removed afterwards.
PREFIX = "cdb" + secrets.token_hex(3)
BEAMLINES = 4
PROPOSALS = 10  # per beamline
VISITS = 5  # per proposal
SUBDIRS = 10  # per area
BOUND = 2.0


@dataclass(frozen=True)
class Shape:
    files_per_subdir: int

    @property
    def entries(self) -> int:
        visits = BEAMLINES * PROPOSALS * VISITS
        per_area = SUBDIRS * (1 + self.files_per_subdir)
        return 2 + BEAMLINES + BEAMLINES * PROPOSALS + visits * (1 + 2 * (1 + per_area))


def shape_for(entries: int) -> Shape:
    files = 1
    while Shape(files).entries < entries:
        files += 1
    return Shape(files)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def create_ids(users: list[str], groups: list[str]) -> None:
    """Create the users and groups, appending each to its list as soon as it exists."""
    for b in range(BEAMLINES):
        bl = f"{PREFIX}bl{b}"
        _run("groupadd", bl)
        groups.append(bl)
        _run("useradd", "--no-create-home", "--no-user-group", "-g", bl, f"{bl}-service")
        users.append(f"{bl}-service")
        for p in range(PROPOSALS):
            group = f"{PREFIX}p{b}{p:02d}-group"
            _run("groupadd", group)
            groups.append(group)


def remove_ids(users: list[str], groups: list[str]) -> None:
    for user in users:
        subprocess.run(["userdel", user], check=False, stderr=subprocess.DEVNULL)
    for group in groups:
        subprocess.run(["groupdel", group], check=False, stderr=subprocess.DEVNULL)


def build_tree(root: Path, shape: Shape) -> int:
    """A tree clean under the default policy; returns the number of entries."""
    import grp
    import pwd

    count = 1
    root.mkdir(mode=0o755, exist_ok=True)
    visitor = root / "visitor"
    visitor.mkdir()
    os.chown(visitor, 0, 0)
    os.chmod(visitor, 0o2755)
    count += 1
    for b in range(BEAMLINES):
        bl = f"{PREFIX}bl{b}"
        uid = pwd.getpwnam(f"{bl}-service").pw_uid
        bl_dir = visitor / bl
        bl_dir.mkdir()
        os.chown(bl_dir, uid, grp.getgrnam(bl).gr_gid)
        os.chmod(bl_dir, 0o2775)
        count += 1
        for p in range(PROPOSALS):
            proposal = f"{PREFIX}p{b}{p:02d}"
            gid = grp.getgrnam(f"{proposal}-group").gr_gid
            count += _proposal(bl_dir / proposal, uid, gid, shape)
    return count


def _dir(path: Path, uid: int, gid: int, mode: int) -> None:
    os.mkdir(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _proposal(path: Path, uid: int, gid: int, shape: Shape) -> int:
    count = 1
    _dir(path, uid, gid, 0o2750)
    for v in range(VISITS):
        visit = path / f"202401{v + 10:02d}08"
        _dir(visit, uid, gid, 0o2770)
        count += 1
        for area in ("raw", "process"):
            area_dir = visit / area
            _dir(area_dir, uid, gid, 0o2770)
            count += 1
            for s in range(SUBDIRS):
                sub = area_dir / f"scan_{s:03d}"
                _dir(sub, uid, gid, 0o2770)
                count += 1
                for f in range(shape.files_per_subdir):
                    name = os.path.join(sub, f"frame_{f:05d}.h5")
                    fd = os.open(name, os.O_CREAT | os.O_WRONLY, 0o640)
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, 0o640)
                    os.close(fd)
                    count += 1
    return count


def timed(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        status = subprocess.run(cmd, stdout=devnull, check=False).returncode
    return time.perf_counter() - start, status


def race(find_cmd: list[str], audit_cmd: list[str], repeat: int) -> tuple[float, float, int]:
    """Best times of each, the runs interleaved so that a busy machine hurts both alike."""
    timed(find_cmd)  # warm the caches
    timed(audit_cmd)
    find_best = audit_best = float("inf")
    status = 0
    for _ in range(repeat):
        find_best = min(find_best, timed(find_cmd)[0])
        audit_s, status = timed(audit_cmd)
        audit_best = min(audit_best, audit_s)
    return find_best, audit_best, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_audit: run as root (it creates users, groups and owned files)")
        return 2
    catalogd = str(Path(sys.executable).with_name("catalogd"))
    shape = shape_for(args.entries)
    users: list[str] = []
    groups: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="catalogd-bench-"))
    try:
        create_ids(users, groups)
        t0 = time.perf_counter()
        entries = build_tree(workdir / "data", shape)
        print(f"built a clean tree of {entries:,} entries in {time.perf_counter() - t0:.1f} s")
        root = str(workdir / "data")
        find_cmd = ["find", root, "-printf", "%U %G %m %p\\n"]
        audit_cmd = [catalogd, "audit", root, "--format", "json"]
        if args.workers:
            audit_cmd += ["--workers", str(args.workers)]
        env_note = f"caches warm, best of {args.repeat}, interleaved"
        find_s, audit_s, status = race(find_cmd, audit_cmd, args.repeat)
        if status != 0:
            print(f"catalogd audit exited {status}: the tree should be clean")
            return 1
        ratio = audit_s / find_s
        print(f"find:  {find_s:.3f} s  ({env_note})")
        print(f"audit: {audit_s:.3f} s  (exit status {status})")
        verdict = "ok" if ratio <= BOUND else "EXCEEDED"
        print(f"ratio: {ratio:.2f}x  (bound {BOUND:.0f}x: {verdict})")
        return 0 if ratio <= BOUND else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        remove_ids(users, groups)


if __name__ == "__main__":
    sys.exit(main())
