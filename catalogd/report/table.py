"""A table for a terminal (rich), with counts per severity under it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

SEVERITY_STYLES = {"critical": "bold red", "error": "red", "warning": "yellow", "info": "cyan"}
_COLUMNS = ("severity", "rule", "path", "expected", "actual", "message")


def write_table(
    records: Sequence[dict[str, Any]],
    fields: Sequence[str],
    stream: TextIO,
    *,
    title: str,
    color: bool = False,
) -> None:
    console = Console(file=stream, force_terminal=color, no_color=not color, width=None)
    if not records:
        console.print(f"{title}: none")
        return
    columns = _COLUMNS + tuple(f for f in fields if f not in _COLUMNS and f.endswith("_seen"))
    if "resolved_at" in fields:
        columns += ("resolved_at",)
    table = Table(title=title, show_lines=False, expand=False)
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=name in ("severity", "rule"))
    for rec in records:
        style = SEVERITY_STYLES.get(str(rec.get("severity")), "")
        cells = ["" if rec.get(name) is None else str(rec[name]) for name in columns]
        # Names come from the tree: show them literally, never as rich markup.
        table.add_row(*[_escape(c) for c in cells], style=style)
    console.print(table)
    counts = Counter(str(rec["severity"]) for rec in records)
    summary = ", ".join(f"{counts[s]} {s}" for s in SEVERITY_STYLES if counts[s])
    console.print(f"{len(records)} violations: {summary}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
