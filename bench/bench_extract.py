"""Benchmark: ``catalogd extract`` against nexusformat's ``nxload`` on the same files.

Run as ``.venv/bin/python bench/bench_extract.py [--files N] [--entries E]``. It writes N
GDA-style NeXus files (E entries each) in a temporary directory, then, in the same run:

1. ``Registry.extract`` over them in this process, with the default settings (a worker
   process per registry, the time and memory bounds on): the code path of the scanner
   and of ``catalogd extract``;
2. the ``catalogd extract`` command in its own process over all the files (start-up,
   worker start-up and JSON output included);
3. nexusformat's ``nxload`` reading title, start_time, end_time and definition of every
   entry of the same files.

It prints each rate in files per second and the ratios; the issue's bound is that
``catalogd extract`` reads at least three times as many files per second as nexusformat.
Exit status 1 when the bound is not met.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import nexus_shapes  # noqa: E402

from indexers.registry import Registry  # noqa: E402

BOUND = 3.0
_CLI = (
    "import sys\n"
    "from catalogd.cli import cli, main\n"
    "from catalogd.cli import extract\n"
    "if 'extract' not in cli.commands:\n"
    "    cli.add_command(extract.command)\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def write_files(directory: Path, count: int, entries: int) -> list[str]:
    paths = []
    for index in range(count):
        path = directory / f"i22-{100000 + index}.nxs"
        nexus_shapes.write_gda_scan(path, entries=entries, scan_number=100000 + index)
        paths.append(str(path))
    return paths


def run_registry(paths: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    with Registry.from_entry_points() as registry:
        titles = sum(1 for p in paths for e in registry.extract(p).entries if e.get("title"))
    return time.perf_counter() - started, titles


def run_cli(paths: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "extract", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"catalogd extract failed ({done.returncode}): {done.stderr[-2000:]}")
    titles = 0
    for line in done.stdout.splitlines():
        titles += sum(1 for e in json.loads(line)["entries"] if e.get("title"))
    return elapsed, titles


def run_nexusformat(paths: list[str]) -> tuple[float, int]:
    from nexusformat.nexus import nxload

    started = time.perf_counter()
    titles = 0
    for path in paths:
        root = nxload(path, mode="r")
        try:
            for entry in root.NXentry:
                values = {}
                for field in ("title", "start_time", "end_time", "definition"):
                    values[field] = str(entry[field].nxvalue) if field in entry else None
                titles += bool(values["title"])
        finally:
            root.nxfile.close()
    return time.perf_counter() - started, titles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--entries", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="catalogd-bench-") as tmp:
        print(f"writing {args.files} NeXus files ({args.entries} entries each) ...", flush=True)
        paths = write_files(Path(tmp), args.files, args.entries)
        expected = args.files * args.entries
        results = {}
        for name, run in (
            ("nexusformat nxload", run_nexusformat),
            ("catalogd Registry.extract (in process)", run_registry),
            ("catalogd extract (CLI process)", run_cli),
        ):
            elapsed, titles = run(paths)
            if titles != expected:
                raise SystemExit(f"{name}: read {titles} titles, expected {expected}")
            results[name] = args.files / elapsed
            print(f"{name:42s} {elapsed:8.2f} s  {results[name]:8.1f} files/s", flush=True)
    reference = results["nexusformat nxload"]
    registry_ratio = results["catalogd Registry.extract (in process)"] / reference
    cli_ratio = results["catalogd extract (CLI process)"] / reference
    print(f"ratio Registry.extract / nxload: {registry_ratio:.1f}x")
    print(f"ratio catalogd extract / nxload: {cli_ratio:.1f}x  (bound: at least {BOUND:g}x)")
    ok = cli_ratio >= BOUND
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
