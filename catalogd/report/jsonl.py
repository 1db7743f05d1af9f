"""JSON Lines: one compact object per line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO


def write_jsonl(records: Iterable[dict[str, Any]], stream: TextIO) -> None:
    for rec in records:
        stream.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
