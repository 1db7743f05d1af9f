"""Benchmark: search API latency at 50 concurrent clients over 100,000 documents.

For each store asked for (``--stores sqlite,es``; Elasticsearch on a node this script
starts with ``scripts/elasticsearch.sh``, or on ``--es-url``):

1. ``--docs`` documents built the way the scanner builds them (the real layout gives
   layout fields and access groups from each path): ``--proposals`` proposals over 10
   beamlines and three user types (``proprietary`` included), a few visits each, NeXus
   entries with titles, samples and start times, detector data and notes files.
2. The API (``api.app.create_app``) served by uvicorn on a loopback port, in a process of
   its own. Its directory answers from memory (users' proposal groups, and the beamline
   staff groups nested in their beamline's non-proprietary proposal groups), so LDAP is
   not what is measured: every request still authenticates (Basic) and resolves groups.
3. ``--clients`` concurrent clients (httpx, asyncio) for ``--duration`` seconds after a
   warm-up, each acting as a user with a typical group set (one to four proposals; one
   user in ten is beamline staff) and sending a realistic mix: free text with partial
   words, text with a filter, a proposal's files newest first, a visit's directory,
   browsing, and the next page through the previous answer's cursor; facets always on
   (the API counts them on every search). Each client waits ``--think-ms`` (mean,
   exponential) between requests, as people and the portal do; 0 is a closed loop.

Each store's open-loop measure runs ``--runs`` times (default 3), each on a fresh API
server; prints p50/p90/p99/max per run and per kind of request (``free text`` is the
substring search of issue 14), the throughput and the load average, then per store the
median p50 and p99 of the runs with each run's figures and load, the Elasticsearch
index's bytes per document, and the bound for each store (issues 7 and 14: median p99
<= 100 ms, on SQLite and on Elasticsearch); the exit status is 1 when a store misses it.
``--baseline DIR`` also measures the code of the source tree DIR (say ``git worktree add
DIR main``) on the same stores, its runs alternating with this tree's, so that a
before/after comparison sees the same machine load.

The Elasticsearch node this script starts gets a 1 GiB heap (``--es-heap``; see
ES_HEAP), and the measures start once the merges after the fill are done (see
:func:`settle`). ``--es-index PREFIX`` keeps the filled index for the next run.

Then (issue 14; ``--workers 1,2``, empty to skip) the closed-loop throughput of the API
with 1 and with 2 worker processes on the SQLite store: ``--workers-clients`` clients,
no think time, the same request mix, ``--duration`` seconds each. The clients are `wrk`
(``bench/bench_api_wrk.lua``: one connection per wrk thread, each replaying the requests
this script writes for its seat, the next pages through the previous answer's cursor),
so that the load generator takes little of the machine's CPU (the httpx clients took
0.26-0.31 of 2 CPUs); without wrk (Debian package ``wrk``) it says so and uses the httpx
clients (``--load-generator httpx`` chooses them). 1 worker is
``catalogd serve --workers 1`` (uvicorn in the serving process), more are uvicorn's
supervisor with that many workers on one socket (``api.server.serve_workers``). Prints
searches/s per worker count and the ratio to 1 worker, the CPUs the server and the
load generator kept busy, and the server's CPU per search.

    .venv/bin/python bench/bench_api.py [--stores sqlite,es] [--docs 100000]
        [--clients 50] [--duration 60] [--think-ms 100] [--es-url URL] [--dir /tmp]
        [--workers 1,2] [--workers-clients 16] [--load-generator auto|wrk|httpx]
        [--runs 3] [--baseline DIR] [--es-heap 1g] [--es-index PREFIX]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from search_node import search_node

from catalogd.config import Settings
from catalogd.document import KIND_HDF5, KIND_NEXUS, KIND_OTHER, FileDocument, document_from_stat
from catalogd.layout import DEFAULT_STRICT_USER_TYPES, LayoutConfig, classify

BOUND_P99_S = 0.100
#: The heap of the Elasticsearch node the benchmark starts (see --es-heap): not the
#: tests' minimal 512m (scripts/elasticsearch.sh) but 1 GiB, the least Elastic's own
#: sizing gives a node; with it, a young collection of 6-10 ms every ~5 s under the
#: benchmark's load.
ES_HEAP = "1g"
ROOT = "/data"
PASSWORD = "bench-password"
BEAMLINES = tuple(f"bl{n:02d}" for n in range(10))
USER_TYPES = (("visitor", 0.7), ("staff", 0.15), ("proprietary", 0.15))
WORDS = (
    "lysozyme",
    "thaumatin",
    "insulin",
    "proteinase",
    "ferritin",
    "glucose",
    "isomerase",
    "myoglobin",
    "trypsin",
    "catalase",
    "rotation",
    "helical",
    "grid",
    "fluorescence",
    "tomography",
    "diffraction",
)
JSONDict = dict[str, Any]


# -- the catalogue ----------------------------------------------------------------------------
@dataclass
class Proposal:
    user_type: str
    beamline: str
    number: str
    visits: list[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        return f"{self.number}-group"


def make_proposals(count: int, rng: random.Random) -> list[Proposal]:
    proposals = []
    for n in range(count):
        user_type = rng.choices([u for u, _ in USER_TYPES], [w for _, w in USER_TYPES])[0]
        year = 2015 + n % 10
        proposal = Proposal(user_type, BEAMLINES[n % len(BEAMLINES)], f"{year}{n:04d}")
        for _ in range(rng.randint(1, 4)):
            proposal.visits.append(
                f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 23):02d}"
            )
        proposals.append(proposal)
    return proposals


def file_order(count: int, visits: int, order: str) -> Iterator[tuple[int, int]]:
    """(visit index, file number in it) for ``count`` files over ``visits`` visits (in
    date order), in the order the catalogue receives them.

    ``acquisition``: as the daemon indexes them, the visits of about one per beamline
    running side by side (their files interleaved), one window of visits after another.
    ``scattered``: every visit's files interleaved with every other's, the worst case
    for locality (a proposal's files spread over the whole table).
    """
    per_visit = [count // visits + (1 if v < count % visits else 0) for v in range(visits)]
    if order == "scattered":
        for i in range(count):
            yield i % visits, i // visits
        return
    window = len(BEAMLINES)
    for start in range(0, visits, window):
        running = range(start, min(start + window, visits))
        for n in range(max(per_visit[v] for v in running)):
            for v in running:
                if n < per_visit[v]:
                    yield v, n


def make_documents(
    count: int, proposals: list[Proposal], rng: random.Random, order: str = "acquisition"
) -> Iterator[FileDocument]:
    """``count`` documents over the proposals' visits, as the scanner builds them."""
    layout = LayoutConfig(root=ROOT)
    visits = sorted(((p, v) for p in proposals for v in p.visits), key=lambda pv: pv[1])
    for i, (index, n) in enumerate(file_order(count, len(visits), order)):
        proposal, visit = visits[index]
        roll = rng.random()
        date = f"{visit[:4]}-{visit[4:6]}-{visit[6:8]}"
        base = f"{ROOT}/{proposal.user_type}/{proposal.beamline}/{proposal.number}/{visit}"
        if roll < 0.65:
            sample = rng.choice(WORDS[:10])
            path = f"{base}/raw/{sample}_{n:05d}.nxs"
            kind = KIND_NEXUS
            title = f"{sample} {rng.choice(WORDS[10:])} scan {n}"
            entries: tuple[JSONDict, ...] = (
                {
                    "name": "entry",
                    "title": title,
                    "start_time": f"{date}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
                    "definition": "NXmx",
                    "sample": {"name": sample, "chemical_formula": "C613H959N193O185S10"},
                    "instrument": {"name": proposal.beamline},
                },
            )
        elif roll < 0.9:
            path = f"{base}/raw/data_{n:06d}.h5"
            kind, entries = KIND_HDF5, ()
        else:
            path = f"{base}/process/notes_{n:05d}.txt"
            kind, entries = KIND_OTHER, ()
        mtime = 1.5e9 + i
        st = os.stat_result(
            (stat.S_IFREG | 0o640, 10_000 + i, 2049, 1, 20_000, 5000, 1000 + i, mtime, mtime, mtime)
        )
        yield document_from_stat(
            path,
            st,
            classify(path, layout),
            layout,
            owner=f"{proposal.beamline}-service",
            group=proposal.group,
            indexed_at=mtime + 60,
            kind=kind,
            entries=entries,
            metadata={"hdf5": {"datasets": 3}} if kind != KIND_OTHER else {},
        )


@dataclass(frozen=True)
class User:
    name: str
    direct: tuple[str, ...]
    staff_of: str | None  # a beamline staff member's beamline
    proposals: tuple[str, ...]  # the proposals whose files the user sees


def make_users(count: int, proposals: list[Proposal], rng: random.Random) -> list[User]:
    users = []
    for n in range(count):
        if n % 10 == 9:
            beamline = rng.choice(BEAMLINES)
            seen = tuple(
                p.number
                for p in proposals
                if p.beamline == beamline and p.user_type not in DEFAULT_STRICT_USER_TYPES
            )
            users.append(User(f"staff{n:03d}", (beamline,), beamline, seen))
        else:
            mine = rng.sample(proposals, rng.randint(1, 4))
            users.append(
                User(
                    f"user{n:03d}",
                    tuple(p.group for p in mine),
                    None,
                    tuple(p.number for p in mine),
                )
            )
    return users


# -- the server (a process of its own) --------------------------------------------------------
class MemoryDirectory:
    """Users' passwords and direct groups, beamline groups nested in proposal groups."""

    def __init__(self, direct: dict[str, list[str]], nesting: dict[str, list[str]]) -> None:
        self.direct = {user: frozenset(groups) for user, groups in direct.items()}
        self.nesting = {group: frozenset(parents) for group, parents in nesting.items()}

    def authenticate(self, user: str, password: str) -> bool:
        return password == PASSWORD and user in self.direct

    def groups_of(self, user: str) -> frozenset[str]:
        seen: set[str] = set()
        todo = list(self.direct.get(user, ()))
        while todo:
            group = todo.pop()
            if group not in seen:
                seen.add(group)
                todo.extend(self.nesting.get(group, ()))
        return frozenset(seen)

    def ping(self) -> None:
        return None


def memory_directory(directory_file: str, settings: Settings | None = None) -> MemoryDirectory:
    """The benchmark's directory, from its file (also called in each API worker)."""
    data = json.loads(Path(directory_file).read_text())
    return MemoryDirectory(data["direct"], data["nesting"])


def bench_settings() -> Settings:
    return Settings().model_copy(
        update={"api": Settings().api.model_copy(update={"login_max_failures": 100_000})}
    )


def serve(store_url: str, directory_file: str, port: int, workers: int = 1) -> None:
    """Run the API on 127.0.0.1:``port`` until SIGTERM, from ``workers`` processes."""
    import api

    where = Path(api.__file__).resolve().parent.parent
    print(f"API server {os.getpid()}: the code of {where}", file=sys.stderr, flush=True)
    if workers > 1:
        serve_workers(store_url, directory_file, port, workers)
        return
    import uvicorn

    from api.app import create_app
    from catalogd.store import open_store

    directory = memory_directory(directory_file)
    settings = bench_settings()
    store = open_store(store_url)
    try:
        app = create_app(settings, store, directory=directory)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        store.close()


def serve_workers(store_url: str, directory_file: str, port: int, workers: int) -> None:
    """``catalogd serve``'s several-worker path, with the benchmark's directory."""
    import functools

    from api import server

    server.serve_workers(
        bench_settings(),
        store_url,
        server.bind(f"127.0.0.1:{port}"),
        workers,
        directory_factory=functools.partial(memory_directory, directory_file),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Variant:
    """The code an API server runs: this tree's, or (``--baseline DIR``) the source tree
    DIR's, first on the server's PYTHONPATH."""

    label: str
    source: str | None = None

    def env(self) -> dict[str, str] | None:
        if self.source is None:
            return None
        path = [self.source, *filter(None, [os.environ.get("PYTHONPATH")])]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


CURRENT = Variant("")


@contextmanager
def api_server(
    store_url: str, directory_file: Path, workers: int = 1, variant: Variant = CURRENT
) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "serve",
            store_url,
            str(directory_file),
            str(port),
            str(workers),
        ],
        start_new_session=True,
        env=variant.env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the API server did not start")
            time.sleep(0.2)
        if workers > 1:
            wait_for_workers(url, workers)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the clients ------------------------------------------------------------------------------
@dataclass
class Recorder:
    measuring: bool = False
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hits: list[int] = field(default_factory=list)
    #: Requests answered while measuring, and the server's CPU seconds meanwhile.
    answered: int = 0
    server_cpu_s: float = 0.0


def question(
    user: User, proposals: dict[str, Proposal], cursor: JSONDict | None, rng: random.Random
) -> tuple[str, JSONDict]:
    """A kind of request and its parameters, in the mix the module docstring describes."""
    roll = rng.random()
    word = rng.choice(WORDS)
    partial = word[: rng.randint(3, 6)]
    mine = proposals[rng.choice(user.proposals)] if user.proposals else None
    size = rng.choice((20, 50))
    if cursor is not None and roll < 0.12:
        return "next page", cursor
    if roll < 0.45:
        text = partial if rng.random() < 0.7 else f"{partial} {rng.choice(WORDS)[:4]}"
        return "free text", {"q": text, "size": size}
    if roll < 0.60:
        beamline = mine.beamline if mine else rng.choice(BEAMLINES)
        return "text + filter", {"q": partial, "beamline": beamline, "size": size}
    if roll < 0.75 and mine is not None:
        return "proposal, newest", {"proposal": mine.number, "sort": "-start_time", "size": size}
    if roll < 0.85 and mine is not None:
        visit = rng.choice(mine.visits)
        prefix = f"{ROOT}/{mine.user_type}/{mine.beamline}/{mine.number}/{visit}/raw"
        return "visit directory", {"path_prefix": prefix, "size": size}
    return "browse", {"size": size}


async def client(
    http: httpx.AsyncClient,
    users: list[User],
    proposals: dict[str, Proposal],
    recorder: Recorder,
    stop_at: float,
    think_s: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    user = rng.choice(users)
    cursor: JSONDict | None = None
    while time.monotonic() < stop_at:
        if rng.random() < 0.05:  # another person at this seat
            user, cursor = rng.choice(users), None
        kind, params = question(user, proposals, cursor, rng)
        token = base64.b64encode(f"{user.name}:{PASSWORD}".encode()).decode()
        started = time.perf_counter()
        try:
            response = await http.get(
                "/api/v1/search", params=params, headers={"Authorization": f"Basic {token}"}
            )
            elapsed = time.perf_counter() - started
            ok = response.status_code == 200
        except httpx.HTTPError:
            elapsed, ok = time.perf_counter() - started, False
        if recorder.measuring:
            recorder.answered += 1
            if ok:
                recorder.latencies[kind].append(elapsed)
            else:
                recorder.errors[kind] += 1
        if ok:
            body = response.json()
            if recorder.measuring:
                recorder.hits.append(int(body["total"]))
            following = body.get("next_cursor")
            cursor = {**params, "cursor": following} if following else None
        if think_s > 0:
            await asyncio.sleep(rng.expovariate(1 / think_s))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (its threads included, and its
    live child processes: the API's workers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in child_pids(pid))


async def load(
    url: str,
    server_pid: int,
    users: list[User],
    proposals: dict[str, Proposal],
    clients: int,
    warmup_s: float,
    duration_s: float,
    think_s: float,
) -> Recorder:
    recorder = Recorder()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        start = time.monotonic()
        stop_at = start + warmup_s + duration_s

        async def measure() -> None:
            await asyncio.sleep(warmup_s)
            cpu = cpu_seconds(server_pid)
            recorder.measuring = True
            await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
            recorder.measuring = False
            recorder.server_cpu_s = cpu_seconds(server_pid) - cpu

        tasks = [
            client(http, users, proposals, recorder, stop_at, think_s, seed)
            for seed in range(clients)
        ]
        await asyncio.gather(measure(), *tasks)
    return recorder


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, recorder: Recorder, duration_s: float) -> Measure:
    every = [x for values in recorder.latencies.values() for x in values]
    errors = sum(recorder.errors.values())
    hits = statistics.median(recorder.hits) if recorder.hits else 0
    print(
        f"\n== {name}: {len(every)} searches in {duration_s:.0f} s "
        f"({len(every) / duration_s:.0f}/s), {errors} errors, median total {hits:.0f} hits"
    )
    if recorder.answered:
        cpu_ms = recorder.server_cpu_s / recorder.answered * 1e3
        print(
            f"API server CPU: {cpu_ms:.1f} ms per search (the Elasticsearch node's own is "
            "not counted); load average now: " + " ".join(f"{x:.1f}" for x in os.getloadavg())
        )
    print(f"{'request':<18}{'count':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    rows = sorted(recorder.latencies.items()) + [("all", every)]
    for kind, values in rows:
        if not values:
            continue
        print(
            f"{kind:<18}{len(values):>7}{quantile(values, 0.5) * 1e3:>9.1f}"
            f"{quantile(values, 0.9) * 1e3:>9.1f}{quantile(values, 0.99) * 1e3:>9.1f}"
            f"{max(values) * 1e3:>9.1f}"
        )
    if not every:
        return Measure(float("inf"), float("inf"), load_average())
    return Measure(quantile(every, 0.5), quantile(every, 0.99), load_average())


def load_average() -> float:
    """The machine's load average over the last minute."""
    return os.getloadavg()[0]


@dataclass(frozen=True)
class Measure:
    """One open-loop run: its p50 and p99 in seconds, and the load average at its end."""

    p50: float
    p99: float
    load: float


def summary(name: str, runs: list[Measure]) -> str:
    """The median p50 and p99 of ``runs``, and each run's figures with its load."""
    each = "; ".join(
        f"p50 {m.p50 * 1e3:.1f} p99 {m.p99 * 1e3:.1f} ms at load {m.load:.1f}" for m in runs
    )
    return (
        f"{name}: median of {len(runs)} run(s): p50 "
        f"{statistics.median(m.p50 for m in runs) * 1e3:.1f} ms, p99 "
        f"{median_p99(runs) * 1e3:.1f} ms [runs: {each}]"
    )


def median_p99(runs: list[Measure]) -> float:
    return statistics.median(m.p99 for m in runs)


# -- several API workers (issue 14) -----------------------------------------------------------
def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def wait_for_workers(url: str, workers: int, timeout_s: float = 120.0) -> None:
    """Until ``workers`` distinct worker pids have answered /healthz."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {workers} API workers answered")
        try:
            # a new connection each time: the kernel picks the worker that accepts it
            answer = httpx.get(f"{url}/healthz", timeout=5)
            seen.add(answer.headers.get("X-Catalogd-Worker", ""))
        except httpx.TransportError:
            time.sleep(0.2)


def run_workers(
    store_url: str, args: argparse.Namespace, world: World, variants: list[Variant]
) -> dict[tuple[Variant, int], list[float]]:
    """Closed-loop searches/s of each variant with each worker count of ``--workers``, in
    the order given (``1,2,1,2`` alternates, so that a change in the machine's other load
    shows), the variants alternating within each count."""
    wrk = None if args.load_generator == "httpx" else shutil.which("wrk")
    if wrk is None and args.load_generator == "wrk":
        raise SystemExit(
            "wrk is missing (the closed loop's load generator): install it with "
            "`apt-get install wrk` (Debian and Ubuntu package), or pass --load-generator httpx"
        )
    if wrk is None:
        print(
            "\nwrk not found (`apt-get install wrk`): the closed loop falls back to the httpx "
            "load generator in this process, which takes a large share of a small machine's CPU"
        )
    throughput: dict[tuple[Variant, int], list[float]] = defaultdict(list)
    for workers in [int(w) for w in args.workers.split(",") if w.strip()]:
        for variant in variants:
            name = f"sqlite{variant.label}, {workers} worker{'s' if workers > 1 else ''}"
            name += ", closed loop"
            throughput[variant, workers].append(
                closed_loop(name, store_url, args, world, wrk, workers, variant)
            )
    return throughput


def closed_loop(
    name: str,
    store_url: str,
    args: argparse.Namespace,
    world: World,
    wrk: str | None,
    workers: int,
    variant: Variant,
) -> float:
    """Searches/s of one closed-loop measure (see run_workers)."""
    with api_server(store_url, world.directory_file, workers, variant) as (url, pid):
        if wrk is not None:
            searches, seconds, server_cpu_s, client_cpu_s = closed_loop_wrk(
                wrk, name, url, pid, args, world
            )
            client_busy = client_cpu_s / seconds
        else:
            searches, seconds, server_cpu_s, client_cpu_s = closed_loop_httpx(
                name, url, pid, args, world
            )
            client_busy = client_cpu_s / (args.warmup + seconds)
    print(
        f"CPUs busy: API server {server_cpu_s / seconds:.2f}, "
        f"load generator ({'wrk' if wrk else 'httpx'}) {client_busy:.2f}, "
        f"of {os.cpu_count()} (the rest: the machine's other load); "
        f"API server CPU {server_cpu_s / max(searches, 1) * 1e3:.1f} ms per search"
    )
    return searches / seconds


def httpx_load(
    url: str, pid: int, args: argparse.Namespace, world: World, clients: int, think_s: float
) -> Recorder:
    """``load`` with the benchmark's users and proposals, ``--warmup`` and ``--duration``."""
    proposals = {p.number: p for p in world.proposals}
    return asyncio.run(
        load(url, pid, world.users, proposals, clients, args.warmup, args.duration, think_s)
    )


def closed_loop_httpx(
    name: str, url: str, pid: int, args: argparse.Namespace, world: World
) -> tuple[int, float, float, float]:
    """Searches answered, the seconds measured, the server's and this process's CPU
    seconds, with the httpx clients of the open loop and no think time."""
    client_cpu = time.process_time()
    recorder = httpx_load(url, pid, args, world, args.workers_clients, 0.0)
    client_cpu = time.process_time() - client_cpu
    report(f"{name} (load generator: httpx)", recorder, args.duration)
    searches = sum(len(v) for v in recorder.latencies.values())
    return searches, args.duration, recorder.server_cpu_s, client_cpu


#: Requests written per seat for wrk (it starts over at the end of a seat's list).
WRK_REQUESTS_PER_SEAT = 5000
WRK_SCRIPT = Path(__file__).with_name("bench_api_wrk.lua")


def write_wrk_requests(prefix: Path, world: World, seats: int) -> None:
    """Each seat's requests for bench_api_wrk.lua (in ``PREFIX.SEAT``), in ``client``'s
    mix, with its changes of user."""
    proposals = {p.number: p for p in world.proposals}
    for seat in range(seats):
        rng = random.Random(seat)
        user = rng.choice(world.users)
        previous: JSONDict | None = None
        lines = []
        for _ in range(WRK_REQUESTS_PER_SEAT):
            if rng.random() < 0.05:  # another person at this seat
                user, previous = rng.choice(world.users), None
            token = base64.b64encode(f"{user.name}:{PASSWORD}".encode()).decode()
            kind, params = question(user, proposals, previous, rng)
            if kind == "next page":  # the cursor is the previous answer's, known in wrk
                lines.append(f"n\tBasic {token}\t-")
                continue
            previous = params
            target = "/api/v1/search?" + urllib.parse.urlencode(params)
            lines.append(f"q\tBasic {token}\t{target}")
        prefix.with_name(f"{prefix.name}.{seat}").write_text("\n".join(lines) + "\n")


def closed_loop_wrk(
    wrk: str, name: str, url: str, pid: int, args: argparse.Namespace, world: World
) -> tuple[int, float, float, float]:
    """Searches answered, the seconds measured, the server's and wrk's CPU seconds:
    ``--workers-clients``
    connections (one per wrk thread), a ``--warmup`` run first, then ``--duration``."""
    requests = world.directory_file.with_name("wrk-requests")
    write_wrk_requests(requests, world, args.workers_clients)
    env = {**os.environ, "BENCH_API_REQUESTS": str(requests)}
    seats = str(args.workers_clients)

    def run(seconds: float) -> JSONDict:
        command = [wrk, "-t", seats, "-c", seats, "-d", f"{max(1, round(seconds))}s"]
        command += ["--timeout", "30s", "-s", str(WRK_SCRIPT), url]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        marker = [line for line in out.stdout.splitlines() if line.startswith("BENCH_API_WRK ")]
        if out.returncode != 0 or not marker:
            raise SystemExit(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout}")
        summary: JSONDict = json.loads(marker[0].split(" ", 1)[1])
        return summary

    if args.warmup > 0:
        run(args.warmup)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = cpu_seconds(pid)
    summary = run(args.duration)
    server_cpu = cpu_seconds(pid) - server_cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    errors = summary["status_errors"] + summary["socket_errors"]
    searches = summary["requests"] - errors
    seconds = summary["duration_us"] / 1e6
    print(
        f"\n== {name}: {searches} searches in {seconds:.0f} s "
        f"({searches / seconds:.0f}/s), {errors} errors (load generator: wrk, "
        f"{args.workers_clients} connections); p50 {summary['p50_us'] / 1e3:.1f} ms, "
        f"p99 {summary['p99_us'] / 1e3:.1f} ms, max {summary['max_us'] / 1e3:.1f} ms; "
        "load average now: " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    return searches, seconds, server_cpu, wrk_cpu


def report_workers(throughput: dict[tuple[Variant, int], list[float]]) -> None:
    if not throughput:
        return
    for (variant, workers), rates in sorted(
        throughput.items(), key=lambda i: (i[0][0].label, i[0][1])
    ):
        mean = statistics.mean(rates)
        base = throughput.get((variant, 1))
        ratio = f" ({mean / statistics.mean(base):.2f}x 1 worker)" if base and workers != 1 else ""
        runs = ", ".join(f"{rate:.0f}" for rate in rates)
        print(
            f"closed loop{variant.label}, {workers} API worker(s): {mean:.0f} searches/s{ratio}"
            f" [runs: {runs}]"
        )


# -- stores -----------------------------------------------------------------------------------
def drop_indices(url: str, prefix: str) -> None:
    """Delete the benchmark's indices and index templates (on a node it did not start)."""
    from elasticsearch import Elasticsearch

    with Elasticsearch(url) as client:
        # Deleting by wildcard is refused (action.destructive_requires_name): by name.
        indices = list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all"))
        if indices:
            client.indices.delete(index=",".join(indices))
        templates = client.options(ignore_status=404).indices.get_index_template(name=f"{prefix}-*")
        for template in templates.body.get("index_templates", []):
            client.indices.delete_index_template(name=template["name"])


def fill(store_url: str, docs: int, proposals: list[Proposal], seed: int, order: str) -> None:
    from catalogd.store import open_store

    started = time.monotonic()
    store = open_store(store_url)
    try:
        batch: list[FileDocument] = []
        for doc in make_documents(docs, proposals, random.Random(seed), order):
            batch.append(doc)
            if len(batch) == 5000:
                store.put(batch)
                batch = []
        store.put(batch)
        store.flush()
        settle(store)
        count = store.count()
        size = index_bytes(store)
    finally:
        store.close()
    print(f"filled {store_url}: {count} documents in {time.monotonic() - started:.0f} s{size}")


def settle(store: Any, timeout_s: float = 300.0) -> None:
    """Until the Elasticsearch index's merges after the fill are done (they take the
    node's CPU for a while after the last bulk; measured alongside, they would count
    against the searches)."""
    from catalogd.store.elasticsearch import ElasticsearchStore

    if not isinstance(store, ElasticsearchStore):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = store.client.indices.stats(index=store.files_alias, metric="merge").body
        if stats["_all"]["primaries"]["merges"]["current"] == 0:
            return
        time.sleep(1)


def index_bytes(store: Any) -> str:
    """The files index's primary size on disk, per document (Elasticsearch), or ""."""
    from catalogd.store.elasticsearch import ElasticsearchStore

    if not isinstance(store, ElasticsearchStore):
        return ""
    stats = store.client.indices.stats(index=store.files_alias, metric="store,docs").body
    primaries = stats["_all"]["primaries"]
    size, docs = primaries["store"]["size_in_bytes"], primaries["docs"]["count"]
    return f"; files index {size / 1e6:.0f} MB on disk, {size / max(docs, 1):.0f} bytes/document"


def run_store(
    name: str,
    store_url: str,
    args: argparse.Namespace,
    world: World,
    variants: list[Variant],
    *,
    filled: bool = False,
) -> dict[Variant, list[Measure]]:
    """``--runs`` open-loop measures of each of ``variants`` on the store, alternating
    (run 1 of each variant, then run 2 of each, ...), so that a change in the machine's
    other load falls on all of them alike."""
    if not filled:
        fill(store_url, args.docs, world.proposals, args.seed, args.order)
    runs: dict[Variant, list[Measure]] = defaultdict(list)
    for run in range(args.runs):
        for variant in variants:
            with api_server(store_url, world.directory_file, variant=variant) as (url, pid):
                recorder = httpx_load(url, pid, args, world, args.clients, args.think_ms / 1000)
            label = f"{name}{variant.label}, run {run + 1} of {args.runs}"
            runs[variant].append(report(label, recorder, args.duration))
    return runs


@dataclass
class World:
    proposals: list[Proposal]
    users: list[User]
    directory_file: Path


def make_world(args: argparse.Namespace, work: Path) -> World:
    rng = random.Random(args.seed)
    proposals = make_proposals(args.proposals, rng)
    users = make_users(args.users, proposals, rng)
    nesting: dict[str, list[str]] = defaultdict(list)
    for p in proposals:
        if p.user_type not in DEFAULT_STRICT_USER_TYPES:
            nesting[p.beamline].append(p.group)
    directory_file = work / "directory.json"
    directory_file.write_text(
        json.dumps({"direct": {u.name: list(u.direct) for u in users}, "nesting": nesting})
    )
    return World(proposals, users, directory_file)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve(argv[1], argv[2], int(argv[3]), int(argv[4]) if len(argv) > 4 else 1)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,es", help="sqlite, es or both")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--proposals", type=int, default=1000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--think-ms", type=float, default=1000.0)
    parser.add_argument("--es-url", default=None)
    parser.add_argument("--dir", default=None, help="where the SQLite store is written")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--workers", default="1,2", help="API worker counts for the closed loop (empty: skip)"
    )
    parser.add_argument("--workers-clients", type=int, default=16)
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "httpx"),
        default="auto",
        help="the closed loop's clients: wrk (auto: when installed) or httpx in this process",
    )
    parser.add_argument(
        "--order",
        choices=("acquisition", "scattered"),
        default="acquisition",
        help="the order documents reach the store (see file_order)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="open-loop measures per store (and per variant); the medians are the result",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="also measure the code of the source tree DIR (e.g. `git worktree add DIR main`),"
        " its runs alternating with this tree's, on the same stores",
    )
    parser.add_argument(
        "--es-heap",
        default=ES_HEAP,
        help="heap of the Elasticsearch node this script starts (CATALOGD_ES_HEAP wins)",
    )
    parser.add_argument(
        "--es-index",
        default=None,
        metavar="PREFIX",
        help="the Elasticsearch index prefix; one already holding --docs documents is "
        "searched as it is and kept (default: a new one, filled, dropped at the end)",
    )
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    variants = [CURRENT]
    if args.baseline:
        variants = [Variant(" (baseline)", str(Path(args.baseline).resolve())), CURRENT]
    work = Path(tempfile.mkdtemp(prefix="catalogd-bench-api-", dir=args.dir))
    print(
        f"{args.docs} documents, {args.proposals} proposals, {args.users} users; "
        f"stored in {args.order} order; {args.clients} concurrent clients, "
        f"think time {args.think_ms:.0f} ms (mean), "
        f"{args.warmup:.0f} s warm-up then {args.duration:.0f} s measured, {args.runs} run(s)"
        f"{' of each variant' if args.baseline else ''}.\n"
        "The API's directory answers from memory (groups resolved per request, nesting "
        "included): LDAP is not measured. Server and clients share this machine "
        f"({os.cpu_count()} CPUs); load average at the start: {load_average():.1f}."
    )
    world = make_world(args, work)
    results: dict[str, dict[Variant, list[Measure]]] = {}
    throughput: dict[tuple[Variant, int], list[float]] = {}
    try:
        if "sqlite" in stores or args.workers:
            sqlite_url = f"sqlite://{work}/catalog.db"
            fill(sqlite_url, args.docs, world.proposals, args.seed, args.order)
            if "sqlite" in stores:
                results["sqlite"] = run_store(
                    "sqlite", sqlite_url, args, world, variants, filled=True
                )
            if args.workers:
                throughput = run_workers(sqlite_url, args, world, variants)
        if "es" in stores:
            with search_node(args.es_url, heap=args.es_heap) as node:
                prefix = args.es_index or f"bench-api-{os.getpid()}"
                url = f"{node}?index={prefix}"
                try:
                    filled = args.es_index is not None and stored(url) == args.docs
                    results["es"] = run_store(
                        "elasticsearch", url, args, world, variants, filled=filled
                    )
                finally:
                    if args.es_index is None:
                        drop_indices(node, prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    report_workers(throughput)
    verdicts = []
    for name, runs in results.items():  # issue 7 (SQLite) and issue 14 (Elasticsearch)
        for variant, measures in runs.items():
            print(summary(f"{name}{variant.label}", measures))
        p99 = median_p99(runs[CURRENT])
        verdicts.append(p99 <= BOUND_P99_S)
        verdict = "within" if verdicts[-1] else "OVER"
        bound = f"p99 <= {BOUND_P99_S * 1e3:.0f} ms"
        print(f"{name}: median p99 {p99 * 1e3:.1f} ms ({verdict} the bound: {bound})")
    print(f"load average at the end: {load_average():.1f}")
    return 0 if all(verdicts) else 1


def stored(store_url: str) -> int:
    """How many documents the store at ``store_url`` holds."""
    from catalogd.store import open_store

    store = open_store(store_url)  # creates the indices when there are none
    try:
        return store.count()
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
