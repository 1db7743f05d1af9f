"""Output helpers shared by the commands: JSON Lines, consoles, progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console


def err_console() -> Console:
    """Rich console on standard error (progress bars, tables for people); rich is
    imported here, by the commands that show one, not by every command's start-up."""
    from rich.console import Console

    return Console(stderr=True)


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (standard error by default) is a terminal."""
    target = stream if stream is not None else sys.stderr
    return bool(getattr(target, "isatty", lambda: False)())


def write_jsonl(records: Iterable[dict[str, Any]], stream: TextIO | None = None) -> int:
    """Write one compact JSON object per line; returns how many were written."""
    out = stream if stream is not None else sys.stdout
    count = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    out.flush()
    return count
