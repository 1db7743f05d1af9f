"""The report writers: every format stays valid whatever the names in the tree."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest

from catalogd.report import FIELDS, FORMATS, record, write_report
from catalogd.violations import Violation

BAD = os.fsdecode(b'/data/visitor/bl/p1/v/raw/<b>\xff"name,1.h5')


def violation(path: str = BAD, rule: str = "DP005", **extra: object) -> Violation:
    return Violation(
        path=path,
        rule=rule,
        severity="critical",
        expected="none of 0007",
        actual="0644",
        message="mode 0644 has forbidden bits 0004",
        user_type="visitor",
        beamline="bl",
        proposal="p1",
        visit="v",
        **extra,  # type: ignore[arg-type]
    )


def test_record_is_the_contract_with_escaped_names() -> None:
    data = record(violation())
    assert tuple(k for k in data if k != "path_b64") == FIELDS
    assert data["path"] == '/data/visitor/bl/p1/v/raw/<b>\\xff"name,1.h5'
    assert os.fsdecode(__import__("base64").b64decode(data["path_b64"])) == BAD
    assert "path_b64" not in record(violation("/data/ok"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_writes_valid_text(fmt: str) -> None:
    out = io.StringIO()
    n = write_report(
        [violation(), violation("/data/visitor/x", "DP002")], fmt, out, history=fmt == "csv"
    )
    assert n == 2
    text = out.getvalue()
    text.encode("utf-8")  # no lone surrogates anywhere
    if fmt == "json":
        rows = [json.loads(line) for line in text.splitlines()]
        assert [r["rule"] for r in rows] == ["DP005", "DP002"]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows[0]["path"].endswith('\\xff"name,1.h5') and rows[0]["first_seen"] == ""
    elif fmt == "html":
        assert "<b>" not in text
        assert "&lt;b&gt;" in text and "Proposal p1" in text and "Beamline bl" in text
    else:
        assert "DP002" in text and "2 violations" in text


def test_history_fields_are_iso_times() -> None:
    data = record(violation(first_seen=0.0, last_seen=60.0, resolved_at=None), history=True)
    assert data["first_seen"] == "1970-01-01T00:00:00+00:00"
    assert data["last_seen"] == "1970-01-01T00:01:00+00:00"
    assert data["resolved_at"] is None


def test_empty_reports() -> None:
    for fmt in FORMATS:
        out = io.StringIO()
        assert write_report([], fmt, out) == 0
    with pytest.raises(ValueError):
        write_report([], "xml", io.StringIO())
