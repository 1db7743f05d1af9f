"""Benchmark: the web pages' latency over 100,000 documents, beside the API's.

The corpus is bench_api's (``make_proposals``/``make_documents``: documents built the
way the scanner builds them, 10 beamlines, three user types, NeXus entries, detector
data and notes files) in the embedded SQLite store, plus ``--violations`` recorded
policy violations. The application (``api.app.create_app``) is asked in process, one
request at a time, through Starlette's test client (no sockets, so the figure is the
application's own time: query, facets and rendering), as a logged-in user of four
proposals (the session cookie of a form login) and, for the dashboard, as an auditor.
For each page it prints p50/p95 milliseconds and those of the API request that asks the
store the same question, so the cost of the HTML is the difference.

    .venv/bin/python bench/bench_web.py [--docs 100000] [--requests 50] [--dir /tmp]

Run it under ``flock /tmp/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_api import (  # noqa: E402
    PASSWORD,
    MemoryDirectory,
    make_documents,
    make_proposals,
)

from api.app import create_app  # noqa: E402
from catalogd.config import ApiSettings, Settings  # noqa: E402
from catalogd.store.sqlite import SQLiteStore  # noqa: E402
from catalogd.violations import Violation  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(http: TestClient, url: str, count: int, **kwargs: Any) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        answer = http.get(url, **kwargs)
        times.append(time.perf_counter() - began)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--proposals", type=int, default=400)
    parser.add_argument("--violations", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    rng = random.Random(2017)
    proposals = make_proposals(args.proposals, rng)
    work = Path(tempfile.mkdtemp(prefix="bench-web-", dir=args.dir))
    store = SQLiteStore(str(work / "catalog.db"))
    began = time.perf_counter()
    batch = []
    for doc in make_documents(args.docs, proposals, rng):
        batch.append(doc)
        if len(batch) == 5000:
            store.put(batch)
            batch = []
    store.put(batch)
    findings = [
        Violation(
            path=f"/data/{p.user_type}/{p.beamline}/{p.number}/{p.visits[0]}/raw/f{i}.nxs",
            rule=rng.choice(["DP001", "DP002", "DP003"]),
            severity="error",
            expected="group x",
            actual="group y",
            message="wrong group",
            user_type=p.user_type,
            beamline=p.beamline,
            proposal=p.number,
            visit=p.visits[0],
        )
        for i, p in enumerate(rng.choice(proposals) for _ in range(args.violations))
    ]
    store.record_audit(findings, scope="/data", seen_at=time.time() - 86400 * 30)
    store.record_audit(findings[: len(findings) // 2], scope="/data", seen_at=time.time())
    store.flush()
    print(
        f"corpus: {args.docs} documents, {len(proposals)} proposals, {args.violations} "
        f"violations (half resolved) in SQLite, built in {time.perf_counter() - began:.0f} s"
    )

    mine = [p for p in proposals if p.user_type == "visitor"][:4]
    directory = MemoryDirectory({"user": [p.group for p in mine], "auditor": ["data-auditors"]}, {})
    settings = Settings(api=ApiSettings(login_max_failures=100_000))
    app = create_app(settings, store, directory=directory)
    results: list[tuple[str, list[float], list[float]]] = []
    for user in ("user", "auditor"):
        http = TestClient(app)
        page = http.get("/ui/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token is not None
        answer = http.post(
            "/ui/login",
            data={"csrf": token.group(1), "username": user, "password": PASSWORD},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        basic = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        api = {"headers": {"Authorization": f"Basic {basic}"}}
        if user == "user":
            first = http.get("/api/v1/search", params={"size": 1}, **api).json()
            doc_id = first["items"][0]["id"]
            cases = [
                ("search, no filter", "/ui/search", "/api/v1/search"),
                ("search, free text", "/ui/search?q=lyso", "/api/v1/search?q=lyso"),
                (
                    "search, a proposal newest first",
                    f"/ui/search?proposal={mine[0].number}&sort=-start_time",
                    f"/api/v1/search?proposal={mine[0].number}&sort=-start_time",
                ),
                ("file page", f"/ui/files/{doc_id}", f"/api/v1/files/{doc_id}"),
            ]
        else:
            cases = [
                ("violations dashboard", "/ui/violations", "/api/v1/violations?state=all"),
            ]
        for name, page_url, api_url in cases:
            timed(http, page_url, 3)  # warm
            pages = timed(http, page_url, args.requests)
            apis = timed(http, api_url, args.requests, **api)
            results.append((name, pages, apis))
    print(f"{'request':34} {'page p50':>9} {'page p95':>9} {'API p50':>9} {'API p95':>9}  (ms)")
    for name, pages, apis in results:
        print(
            f"{name:34} {statistics.median(pages) * 1e3:9.1f} {quantile(pages, 0.95) * 1e3:9.1f}"
            f" {statistics.median(apis) * 1e3:9.1f} {quantile(apis, 0.95) * 1e3:9.1f}"
        )
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
