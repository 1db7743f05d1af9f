"""Benchmark: ``catalogd extract`` against nexusformat's ``nxload`` on the same files.

Run as ``.venv/bin/python bench/bench_extract.py [--files N] [--entries E] [--trials T]``.
It writes N GDA-style NeXus files (E entries each) in a temporary directory, then, in
the same run and for each of T trials (interleaved, so a change in the machine's load
falls on every contender alike):

1. nexusformat: ``nxload`` each file and read ``title``, ``start_time``, ``end_time`` and
   ``definition`` of every entry, as a user of nexusformat would (nexusformat is
   imported beforehand: its import is not timed);
2. the ``catalogd extract`` command in its own process over all the files, with one
   worker process (``CATALOGD_INDEXERS_WORKERS=1``): the gain from the lean reading
   alone;
3. the same command with the default number of workers (``min(4, CPUs)``): the rate
   the issue's bound is about;
4. ``Registry.extract_many`` in this process with the default settings (the scanner's
   code path, without the command's start-up).

The command's figures include its start-up and its workers' (process creation, imports)
and writing the JSON lines. Every contender's answers are checked: each must read all
four values of every entry. It prints the median rate of each in files per second and
the median ratio to nexusformat; the bound is that ``catalogd extract`` reads at least
three times as many files per second as nexusformat. Exit status 1 when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import nexus_shapes  # noqa: E402

from indexers.registry import Registry  # noqa: E402
from indexers.worker import default_workers  # noqa: E402

BOUND = 3.0
FIELDS = ("title", "start_time", "end_time", "definition")
_CLI = (
    "import sys\n"
    "from catalogd.cli import cli, main\n"
    "from catalogd.cli import extract\n"
    "if 'extract' not in cli.commands:\n"
    "    cli.add_command(extract.command)\n"
    "sys.exit(main(sys.argv[1:]))\n"
)

NXLOAD = "nexusformat nxload"
CLI_ONE = "catalogd extract, 1 worker"
CLI_MANY = "catalogd extract, {n} workers"
REGISTRY = "Registry.extract_many, {n} workers"


def write_files(directory: Path, count: int, entries: int) -> list[str]:
    paths = []
    for index in range(count):
        path = directory / f"i22-{100000 + index}.nxs"
        nexus_shapes.write_gda_scan(path, entries=entries, scan_number=100000 + index)
        paths.append(str(path))
    return paths


def run_nexusformat(paths: list[str]) -> tuple[float, int]:
    """Seconds, and how many of the four values of every entry were read."""
    from nexusformat.nexus import nxload

    started = time.perf_counter()
    values = 0
    for path in paths:
        root = nxload(path, mode="r")
        try:
            for entry in root.NXentry:
                for field in FIELDS:
                    value = str(entry[field].nxvalue) if field in entry else None
                    values += bool(value)
        finally:
            root.nxfile.close()
    return time.perf_counter() - started, values


def run_cli(paths: list[str], workers: int | None) -> tuple[float, int]:
    env = dict(os.environ)
    env.pop("CATALOGD_INDEXERS_WORKERS", None)
    if workers is not None:
        env["CATALOGD_INDEXERS_WORKERS"] = str(workers)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "extract", *paths],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"catalogd extract failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    if [line["path"] for line in lines] != paths:
        raise SystemExit("catalogd extract: not one line per file, in order")
    return elapsed, sum(_values(line["entries"]) for line in lines)


def run_registry(paths: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    with Registry.from_entry_points() as registry:
        values = sum(_values(result.entries) for result in registry.extract_many(paths))
    return time.perf_counter() - started, values


def _values(entries: object) -> int:
    assert isinstance(entries, (list, tuple))
    return sum(1 for entry in entries for field in FIELDS if entry.get(field))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--entries", type=int, default=3)
    parser.add_argument("--trials", type=int, default=3, help="runs of each; medians reported")
    args = parser.parse_args()
    workers = default_workers()
    import nexusformat.nexus  # noqa: F401  # imported before the clock starts

    contenders: dict[str, Callable[[list[str]], tuple[float, int]]] = {
        NXLOAD: run_nexusformat,
        CLI_ONE: lambda paths: run_cli(paths, 1),
        CLI_MANY.format(n=workers): lambda paths: run_cli(paths, None),
        REGISTRY.format(n=workers): run_registry,
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    print(
        f"CPUs: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))}), "
        f"workers: {workers} (default min(4, CPUs)), load average: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="catalogd-bench-") as tmp:
        print(f"writing {args.files} NeXus files ({args.entries} entries each) ...", flush=True)
        paths = write_files(Path(tmp), args.files, args.entries)
        expected = args.files * args.entries * len(FIELDS)
        for trial in range(1, args.trials + 1):
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print(f"trial {trial} (load average {load}):", flush=True)
            for name, run in contenders.items():
                elapsed, values = run(paths)
                if values != expected:
                    raise SystemExit(f"{name}: read {values} values, expected {expected}")
                rates[name].append(args.files / elapsed)
                print(f"  {name:34s} {elapsed:7.2f} s {rates[name][-1]:7.1f} files/s", flush=True)
    reference = rates[NXLOAD]
    print(f"\nmedians over {args.trials} trials ({args.files} files, {expected} values each):")
    for name, trials in rates.items():
        note = "" if name == NXLOAD else f"  {_ratio(trials, reference):5.2f}x nexusformat"
        print(f"  {name:34s} {statistics.median(trials):7.1f} files/s{note}")
    many = CLI_MANY.format(n=workers)
    ratio = _ratio(rates[many], reference)
    print(
        f"\nbound: {many} at least {BOUND:g}x nexusformat's rate: "
        f"{ratio:.2f}x -> {'PASS' if ratio >= BOUND else 'FAIL'}"
    )
    return 0 if ratio >= BOUND else 1


def _ratio(rates: list[float], reference: list[float]) -> float:
    """The median of the trials' ratios (each trial's contenders ran side by side)."""
    return statistics.median(rate / ref for rate, ref in zip(rates, reference, strict=True))


if __name__ == "__main__":
    sys.exit(main())
