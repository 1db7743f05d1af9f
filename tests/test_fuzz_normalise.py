"""Fuzzing the time normaliser and the value conversions (indexers/normalise.py).

Whatever a file holds where a time belongs (text of any kind, bytes in any encoding,
numbers of any size, arrays), :func:`iso_time` never raises, and what it returns is
either an ISO 8601 time :meth:`datetime.fromisoformat` reads back as the same instant,
or the original value as text. The other conversions either give their type or raise
ValueError (the reader reports it as a field error), never anything else.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability import Recorder, count_example

from indexers.normalise import (
    iso_time,
    parse_time,
    to_bool,
    to_float,
    to_int,
    to_json_value,
    to_text,
)

SHARED = [HealthCheck.function_scoped_fixture]

#: Text that looks like a time, with every part drawn independently (so often invalid).
time_like = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, tz: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{tz}",
    st.integers(0, 99999).map(lambda v: f"{v:04d}"),
    st.integers(0, 99).map(lambda v: f"{v:02d}"),
    st.integers(0, 99).map(lambda v: f"{v:02d}"),
    st.sampled_from(["T", " ", "_", "t", "  "]),
    st.integers(0, 99).map(lambda v: f"{v:02d}"),
    st.integers(0, 99).map(lambda v: f"{v:02d}"),
    st.integers(0, 99).map(lambda v: f"{v:02d}"),
    st.sampled_from(["", ".5", ",123456789", ".", ".0000000000001"]),
    st.sampled_from(["", "Z", "+01:00", "-0530", "+99:99", "UTC", "GMT+2", "+24", "utc"]),
)
texts = st.one_of(
    time_like,
    st.text(max_size=40),  # every code point, lone surrogates included
    st.text("0123456789-:T .,+Z", max_size=30),
    st.sampled_from(["Wed Nov 22 08:00:00 2017", "Wed Nov 22 08:00:00 UTC 2017",
                     "22-Nov-2017 08:00:00", "2017/11/22 08:00:00.5", "20171122", ""]),
)  # fmt: skip
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
scalars = st.one_of(texts, texts.map(lambda t: t.encode("utf-8", "surrogateescape")),
                    st.binary(max_size=40), numbers, st.none())  # fmt: skip
values = st.one_of(
    scalars,
    texts.map(lambda t: np.array([t.encode("utf-8", "surrogateescape")])),
    st.lists(st.binary(max_size=8), max_size=4).map(lambda v: np.array(v, dtype=object)),
    st.lists(st.floats(), max_size=4).map(np.array),
    st.binary(max_size=16).map(lambda b: np.frombuffer(b, dtype="S1")),
    numbers.map(lambda n: np.array(n) if not isinstance(n, int) or abs(n) < 2**63 else n),
)


def same_instant(a: dt.datetime, b: dt.datetime) -> bool:
    return a == b and (a.tzinfo is None) == (b.tzinfo is None)


@settings(max_examples=500, suppress_health_check=SHARED)
@given(value=values)
def test_iso_time_never_raises_and_is_iso_or_the_original(
    value: Any, reliability: Recorder
) -> None:
    count_example(reliability, "time normaliser (iso_time)", "text, bytes, numbers, arrays")
    out = iso_time(value)
    parsed = parse_time(value)
    if parsed is None:
        assert out == to_text(value)  # the original, as text (or None for nothing)
        return
    assert out is not None
    back = dt.datetime.fromisoformat(out)
    assert same_instant(back, parsed)
    # Normalising again changes nothing.
    assert iso_time(out) == out
    json.dumps(out)


@settings(max_examples=300, suppress_health_check=SHARED)
@given(value=values)
def test_conversions_give_their_type_or_a_value_error(value: Any, reliability: Recorder) -> None:
    count_example(reliability, "value conversions (to_float, to_int, ...)", "as for times")
    text = to_text(value)
    assert text is None or (isinstance(text, str) and text == text.strip() and text)
    if text is not None:
        text.encode("utf-8")  # valid UTF-8, whatever came in
    for convert, kind in ((to_float, float), (to_int, int), (to_bool, bool)):
        try:
            result = convert(value)
        except ValueError:
            continue
        assert isinstance(result, kind)
        if kind is float:
            assert math.isfinite(result)
    # Strict JSON (no NaN): what documents and extract lines are made of.
    json.dumps(to_json_value(value), allow_nan=False, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2017-11-22T08:00:00Z", "2017-11-22T08:00:00+00:00"),
        ("20171122 080000+0100", "2017-11-22T08:00:00+01:00"),
        ("Wed Nov 22 08:00:00 UTC 2017", "2017-11-22T08:00:00+00:00"),
        ("2017-13-40T08:00:00", "2017-13-40T08:00:00"),  # not a date: kept as written
    ],
)
def test_examples_the_fuzzing_is_built_around(text: str, iso: str) -> None:
    assert iso_time(text) == iso
