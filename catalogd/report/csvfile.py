"""CSV with a header row (RFC 4180 quoting); missing values are empty cells."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def write_csv(records: Iterable[dict[str, Any]], fields: Sequence[str], stream: TextIO) -> None:
    writer = csv.DictWriter(
        stream, fieldnames=list(fields) + ["path_b64"], extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for rec in records:
        writer.writerow({k: ("" if v is None else v) for k, v in rec.items()})
