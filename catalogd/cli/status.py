"""``catalogd status [--url URL] [--json]``: how a running daemon is doing.

Reads the daemon's ``/readyz`` and ``/metrics`` (:mod:`catalogd.daemon.http`) and prints
a summary: ready or why not, the event source, queues, files indexed, extraction
failures, open violations, store writes, the spool, the last reconcile. ``--json``
prints the same as one JSON object.

Where to ask: ``--url``, else the address the daemon wrote into ``status.json`` in
``[daemon] state_dir`` (the port actually bound), else ``[daemon] listen``.
Exit 0 when the daemon is ready, 1 when it answers but is not ready, 69 when it cannot
be reached.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import click
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from catalogd.cli import CliContext, pass_cli
from catalogd.config import Settings
from catalogd.errors import EX_FAILURE, EX_OK, EX_UNAVAILABLE, CatalogdError, UsageError

TIMEOUT_S = 5.0
PREFIX = "catalogd_"


@dataclass
class Snapshot:
    """What the daemon said: its readiness answer and its metrics, flattened."""

    url: str
    ready: bool
    readyz: dict[str, Any]
    #: metric name (prefix removed) -> value, or label value -> value for one label.
    metrics: dict[str, Any] = field(default_factory=dict)


def daemon_url(settings: Settings) -> str:
    """The base URL of the local daemon's listener."""
    listen = settings.daemon.listen
    if settings.daemon.state_dir:
        try:
            with open(
                os.path.join(settings.daemon.state_dir, "status.json"), encoding="utf-8"
            ) as f:
                listen = str(json.load(f).get("listen") or listen)
        except (OSError, ValueError, AttributeError):
            pass
    if not listen:
        raise UsageError("[daemon] listen is empty (the listener is disabled): give --url")
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as exc:  # 503 from /readyz still has a body
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CatalogdError(
            f"cannot reach the daemon at {url}: {reason}", exit_code=EX_UNAVAILABLE
        ) from None


def fetch(base: str, *, timeout: float = TIMEOUT_S) -> Snapshot:
    """Ask the daemon at ``base`` (``http://HOST:PORT``)."""
    base = base.rstrip("/")
    code, body = _get(f"{base}/readyz", timeout)
    try:
        readyz = json.loads(body)
    except ValueError:
        raise CatalogdError(
            f"{base}/readyz did not answer JSON (is this a catalogd daemon?)",
            exit_code=EX_UNAVAILABLE,
        ) from None
    mcode, text = _get(f"{base}/metrics", timeout)
    if mcode != 200:
        raise CatalogdError(f"{base}/metrics answered {mcode}", exit_code=EX_UNAVAILABLE)
    return Snapshot(base, code == 200, readyz if isinstance(readyz, dict) else {}, parse(text))


def parse(text: bytes) -> dict[str, Any]:
    """The catalogd metrics of a Prometheus text page, flattened for people."""
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text.decode("utf-8", "replace")):
        if family.name in (f"{PREFIX}info", PREFIX.rstrip("_")):  # text format: a gauge
            out["info"] = dict(family.samples[0].labels) if family.samples else {}
            continue
        if not family.name.startswith(PREFIX):
            continue
        # Counters are named without their ``_total`` here, as the parser names them.
        name = family.name.removeprefix(PREFIX)
        if family.type == "histogram":
            sums: dict[str, dict[str, float]] = {}
            for sample in family.samples:
                op = next(iter(sample.labels.values()), "")
                if sample.name.endswith("_count"):
                    sums.setdefault(op, {})["count"] = sample.value
                elif sample.name.endswith("_sum"):
                    sums.setdefault(op, {})["sum_s"] = sample.value
            out[name] = sums
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if sample.labels:
                out.setdefault(name, {})[next(iter(sample.labels.values()))] = sample.value
            else:
                out[name] = sample.value
    return out


def _number(value: Any) -> str:
    if not isinstance(value, float) or math.isnan(value):
        return "-"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def _labelled(values: Any) -> str:
    if not isinstance(values, dict) or not values:
        return "none"
    return ", ".join(f"{k}={_number(v)}" for k, v in sorted(values.items()))


def render(snap: Snapshot, console: Console) -> None:
    m = snap.metrics
    info = m.get("info", {})
    state = "ready" if snap.ready else str(snap.readyz.get("status", "not ready"))
    table = Table(title=f"catalogd at {snap.url}: {state}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    store = snap.readyz.get("store", {})
    rows = [
        ("version", str(info.get("version", "?"))),
        ("event source", str(snap.readyz.get("source") or info.get("source") or "-")),
        ("store", str(store.get("state", "?")) if isinstance(store, dict) else "?"),
        ("reconciled at start", str(snap.readyz.get("reconciled_at_start", "?")).lower()),
        ("events received", _labelled(m.get("events_received"))),
        ("queues", _labelled(m.get("queue_depth"))),
        ("files indexed", _number(m.get("files_indexed"))),
        ("files extracted", _number(m.get("files_extracted"))),
        ("files deleted", _number(m.get("files_deleted"))),
        ("extraction failures", _labelled(m.get("extraction_failures"))),
        ("open violations", _labelled(m.get("open_violations"))),
        ("spooled writes", _number(m.get("spool_documents"))),
        (
            "last reconcile",
            f"{_number(m.get('last_reconcile_duration_seconds'))} s, "
            f"{_number(m.get('last_reconcile_age_seconds'))} s ago",
        ),
    ]
    writes = m.get("store_write_duration_seconds", {})
    for op, figures in sorted(writes.items()):
        count = figures.get("count", 0.0)
        mean = figures.get("sum_s", 0.0) / count * 1000 if count else math.nan
        rows.append((f"store {op}", f"{_number(count)} writes, mean {_number(mean)} ms"))
    if isinstance(store, dict) and store.get("error"):
        rows.append(("store error", str(store["error"])))
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)


@click.command("status")
@click.option("--url", metavar="URL", help="The daemon's listener, e.g. http://127.0.0.1:9180.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--timeout", type=float, default=TIMEOUT_S, show_default=True, help="Seconds.")
@pass_cli
def command(ctx: CliContext, url: str | None, as_json: bool, timeout: float) -> int:
    """How a running `catalogd run` is doing (its /readyz and /metrics). Exit 0 when
    ready, 1 when not ready, 69 when it cannot be reached."""
    base = url if url else daemon_url(ctx.settings())
    snap = fetch(base, timeout=timeout)
    if as_json:
        data = {
            "url": snap.url,
            "ready": snap.ready,
            "readyz": snap.readyz,
            "metrics": snap.metrics,
        }
        click.echo(json.dumps(_no_nan(data), sort_keys=True, allow_nan=False))
    else:
        render(snap, Console(soft_wrap=True))
    return EX_OK if snap.ready else EX_FAILURE


def _no_nan(value: Any) -> Any:
    """NaN (no reconcile yet) as null, so the output is standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return value
