"""Auditors' reports of policy violations: JSON Lines, CSV, a terminal table, HTML.

Every writer takes the same records (:func:`record`), in which every text is valid
UTF-8: names that are not are shown with ``\\xNN`` escapes (their exact bytes are in
``path_b64``), so no name can break a JSON or CSV reader.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from typing import Any, TextIO

from catalogd.document import display_path, is_text_path, utc_iso
from catalogd.violations import Violation

FORMATS = ("json", "csv", "table", "html")
#: The fields of ``catalogd audit --format json``, in order (a fixed contract).
FIELDS = (
    "path",
    "rule",
    "severity",
    "expected",
    "actual",
    "message",
    "user_type",
    "beamline",
    "proposal",
    "visit",
)
#: Added by ``catalogd violations``, which reads the stored history.
HISTORY_FIELDS = ("first_seen", "last_seen", "resolved_at")

Record = dict[str, Any]


def _text(value: str | None) -> str | None:
    return None if value is None else display_path(value)


def record(violation: Violation, *, history: bool = False) -> Record:
    """One violation as report data: the contract's fields (plus its history)."""
    data: Record = {name: _text(getattr(violation, name)) for name in FIELDS}
    if not is_text_path(violation.path):
        data["path_b64"] = base64.b64encode(os.fsencode(violation.path)).decode("ascii")
    if history:
        for name in HISTORY_FIELDS:
            data[name] = utc_iso(getattr(violation, name))
    return data


def write_report(
    violations: Iterable[Violation],
    fmt: str,
    stream: TextIO,
    *,
    history: bool = False,
    title: str = "Data policy violations",
    color: bool = False,
) -> int:
    """Write ``violations`` in ``fmt``; returns how many were written."""
    records = [record(v, history=history) for v in violations]
    fields = FIELDS + (HISTORY_FIELDS if history else ())
    if fmt == "json":
        from catalogd.report.jsonl import write_jsonl

        write_jsonl(records, stream)
    elif fmt == "csv":
        from catalogd.report.csvfile import write_csv

        write_csv(records, fields, stream)
    elif fmt == "table":
        from catalogd.report.table import write_table

        write_table(records, fields, stream, title=title, color=color)
    elif fmt == "html":
        from catalogd.report.html import write_html

        write_html(records, fields, stream, title=title)
    else:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {FORMATS}")
    return len(records)
