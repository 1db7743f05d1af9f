"""Pure normalisation: text in every storage form, times in the forms real files use."""

from __future__ import annotations

import datetime as dt
from typing import Any

import h5py
import numpy as np
import pytest

from indexers.mapping import FieldError, convert_value, parse_path, segment_kind, set_dotted
from indexers.normalise import (
    clean_str,
    duration_s,
    iso_time,
    name_text,
    parse_time,
    to_bool,
    to_float,
    to_int,
    to_json_value,
    to_text,
    unwrap,
)
from indexers.settings import FieldMapping
from indexers.units import convert

VLEN = h5py.string_dtype("utf-8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"hello", "hello"),
        (np.bytes_(b"hello"), "hello"),
        ("hello", "hello"),
        (b"hello\x00\x00\x00", "hello"),
        ("hello\x00", "hello"),
        (np.array(b"hello"), "hello"),
        (np.array([b"hello"]), "hello"),
        (np.array([[b"hello"]]), "hello"),
        (np.array(["hello"], dtype=VLEN), "hello"),
        (np.array([b"hello"], dtype=object), "hello"),
        (np.array(["hello"], dtype=object), "hello"),
        (np.array([b"h", b"e", b"l", b"l", b"o"], dtype="S1"), "hello"),
        (np.array(list("hello"), dtype="U1"), "hello"),
        ("  padded title \n", "padded title"),
        ("Température".encode(), "Température"),
        ("Température".encode("latin-1"), "Température"),
        ("ab\udcff\udcfe", "abÿþ"),  # h5py's surrogate escapes of undecodable bytes
        (np.array([b"a", b"b"], dtype="S2"), "a\nb"),
        (np.array([b"one", b"two"]), "one\ntwo"),
        (b"", None),
        (np.array([], dtype="S1"), None),
        (b"\x00\x00", None),
        (None, None),
        (3, "3"),
        (np.float32(1.5), "1.5"),
        (True, "true"),
        (float("nan"), None),
    ],
)
def test_to_text_every_storage_form(value: Any, expected: str | None) -> None:
    assert to_text(value) == expected


def test_to_text_result_always_encodes() -> None:
    for value in ("\ud800 lone", b"\xff\xfe\xfd", "ok \udcff"):
        text = to_text(value)
        assert text is not None
        text.encode("utf-8")


def test_clean_str_and_name_text() -> None:
    assert clean_str("plain") == "plain"
    assert clean_str("caf\udce9") == "caf\\xe9"
    assert name_text(b"caf\xe9") == "café"
    assert name_text(b"caf\xc3\xa9") == "café"
    assert name_text("entry") == "entry"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.array([7]), 7),
        (np.array([[2.5]]), 2.5),
        (np.int64(4), 4),
        (np.array(b"x"), b"x"),
        ([1, 2], [1, 2]),
    ],
)
def test_unwrap(value: Any, expected: Any) -> None:
    assert unwrap(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (295, 295.0),
        (np.float32(12.5), 12.5),
        (np.array([3.0]), 3.0),
        (np.array([4.0, 4.0, 4.0]), 4.0),
        (b"12.4", 12.4),
        ("12.4 keV", 12.4),
        (np.array([b"7"]), 7.0),
    ],
)
def test_to_float(value: Any, expected: float) -> None:
    assert to_float(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (np.array([1.0, 2.0]), "array of 2 values"),
        ("warm", "not a number"),
        (float("inf"), "not a finite"),
        (True, "not a number"),
        (np.array([]), "empty"),
        (b"", "empty text"),
    ],
)
def test_to_float_reasons(value: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        to_float(value)


def test_to_int_and_bool() -> None:
    assert to_int(np.array([3])) == 3
    with pytest.raises(ValueError, match="not an integer"):
        to_int(2.5)
    assert to_bool(b"true") is True
    assert to_bool("No") is False
    assert to_bool(np.int8(1)) is True
    with pytest.raises(ValueError):
        to_bool("maybe")


def test_to_json_value() -> None:
    assert to_json_value(np.array([1, 2, 3], dtype="i4")) == [1, 2, 3]
    assert to_json_value(np.arange(100)) is None
    assert to_json_value(np.float64("nan")) is None
    assert to_json_value(np.array([b"ab", b"cd"])) == ["ab", "cd"]
    assert to_json_value(np.bytes_(b"x\x00")) == "x"


UTC = dt.UTC
PLUS1 = dt.timezone(dt.timedelta(hours=1))
MINUS530 = dt.timezone(-dt.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-05-01T12:34:56", "2023-05-01T12:34:56"),
        ("2023-05-01 12:34:56", "2023-05-01T12:34:56"),
        ("2023-05-01T12:34:56Z", "2023-05-01T12:34:56+00:00"),
        ("2023-05-01T12:34:56z", "2023-05-01T12:34:56+00:00"),
        ("2023-05-01T12:34:56+01:00", "2023-05-01T12:34:56+01:00"),
        ("2023-05-01T12:34:56+0100", "2023-05-01T12:34:56+01:00"),
        ("2023-05-01T12:34:56+01", "2023-05-01T12:34:56+01:00"),
        ("2023-05-01T12:34:56-05:30", "2023-05-01T12:34:56-05:30"),
        ("2023-05-01T12:34:56.5", "2023-05-01T12:34:56.500000"),
        ("2023-05-01T12:34:56.123456789", "2023-05-01T12:34:56.123456"),
        ("2023-05-01T12:34:56,25Z", "2023-05-01T12:34:56.250000+00:00"),
        ("2023-05-01 12:34:56.153+01:00", "2023-05-01T12:34:56.153000+01:00"),
        ("2023-05-01T12:34", "2023-05-01T12:34:00"),
        ("2023-05-01", "2023-05-01T00:00:00"),
        ("20230501T123456Z", "2023-05-01T12:34:56+00:00"),
        ("2023-05-01T12:34:56 UTC", "2023-05-01T12:34:56+00:00"),
        ("2023-05-01 12:34:56 GMT", "2023-05-01T12:34:56+00:00"),
        ("  2023-05-01T12:34:56\x00\x00", "2023-05-01T12:34:56"),
        ("Mon May  1 12:34:56 2023", "2023-05-01T12:34:56"),
        ("Mon May 01 12:34:56 UTC 2023", "2023-05-01T12:34:56+00:00"),
        ("01-May-2023 12:34:56", "2023-05-01T12:34:56"),
        ("2023/05/01 12:34:56", "2023-05-01T12:34:56"),
    ],
)
def test_iso_time_forms(text: str, expected: str) -> None:
    assert iso_time(text) == expected
    assert iso_time(text.encode()) == expected
    assert iso_time(np.array([text.encode()])) == expected
    assert iso_time(np.array([text], dtype=VLEN)) == expected


def test_parse_time_zones_are_real() -> None:
    parsed = parse_time("2023-05-01T12:34:56-05:30")
    assert parsed is not None and parsed.utcoffset() == MINUS530.utcoffset(None)
    assert parse_time("2023-05-01T12:34:56+01:00") == dt.datetime(
        2023, 5, 1, 11, 34, 56, tzinfo=UTC
    )


def test_epoch_seconds() -> None:
    assert iso_time(1682944496.0) == "2023-05-01T12:34:56+00:00"
    assert parse_time(42) is None  # not plausibly a time


@pytest.mark.parametrize(
    "text",
    ["yesterday", "2023-13-01T00:00:00", "2023-02-30", "2023-05-01T25:00:00", "12:34", "N/A"],
)
def test_unparseable_time_kept(text: str) -> None:
    assert parse_time(text) is None
    assert iso_time(text) == text


def test_iso_time_nothing() -> None:
    assert iso_time(None) is None
    assert iso_time(b"") is None


def test_duration() -> None:
    assert duration_s("2023-05-01T12:00:00+01:00", "2023-05-01T11:30:00Z") == 1800.0
    assert duration_s("2023-05-01T12:00:00", "2023-05-01T12:00:10") == 10.0
    assert duration_s("2023-05-01T12:00:00Z", "2023-05-01T12:00:10") is None  # naive vs aware
    assert duration_s("2023-05-01T12:00:10", "2023-05-01T12:00:00") is None
    assert duration_s(None, "2023-05-01T12:00:00") is None


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (12.4, "keV", "eV", 12400.0),
        (1.0, "Angstrom", "nm", 0.1),
        (22.0, "degC", "K", 295.15),
        (300.0, "K", "C", 26.85),
        (1.0, "bar", "kPa", 100.0),
        (500.0, "ms", "s", 0.5),
        (12.398419843320026, "keV", "J", 1.9864458571489286e-15),
    ],
)
def test_units(value: float, source: str, target: str, expected: float) -> None:
    assert convert(value, source, target) == pytest.approx(expected)


def test_units_refused() -> None:
    with pytest.raises(ValueError, match="cannot convert"):
        convert(1.0, "keV", "mm")
    with pytest.raises(ValueError, match="unknown units"):
        convert(1.0, "furlongs", "m")


def test_convert_value_by_type() -> None:
    def mapping(**kw: Any) -> FieldMapping:
        return FieldMapping.model_validate({"field": "f", "paths": ["x"], **kw})

    assert convert_value(b"abc\x00", None, mapping()) == ("abc", None)
    assert convert_value(b"295", "K", mapping(type="float")) == (295.0, "K")
    assert convert_value(22.0, "degC", mapping(type="float", units="K")) == (
        pytest.approx(295.15),
        "K",
    )
    assert convert_value(12.4, None, mapping(type="float", units="keV")) == (12.4, "keV")
    assert convert_value(np.array([5]), None, mapping(type="int")) == (5, None)
    assert convert_value(b"2023-05-01 12:00:00", None, mapping(type="time")) == (
        "2023-05-01T12:00:00",
        None,
    )
    with pytest.raises(FieldError, match="not a recognised time"):
        convert_value(b"soon", None, mapping(type="time"))
    with pytest.raises(FieldError, match="cannot convert"):
        convert_value(1.0, "mm", mapping(type="float", units="K"))


def test_path_syntax() -> None:
    assert parse_path("/NXentry/NXinstrument/NXsource/name") == parse_path(
        "/NXentry/NXinstrument/NXsource/name/"
    )
    pattern = parse_path("/entry/program_name@version")
    assert pattern.segments == ("entry", "program_name") and pattern.attribute == "version"
    assert pattern.absolute
    relative = parse_path("NXsample/temp*")
    assert not relative.absolute and relative.attribute is None
    assert [segment_kind(s) for s in ("NXsample", "temp*", "sample", "entry[12]")] == [
        "class",
        "wildcard",
        "name",
        "wildcard",
    ]


def test_set_dotted_keeps_units_beside() -> None:
    target: dict[str, Any] = {}
    set_dotted(target, "sample.temperature", 295.0, "K")
    set_dotted(target, "title", "t")
    set_dotted(target, "title", None)
    assert target == {"sample": {"temperature": 295.0, "temperature_units": "K"}, "title": "t"}


def test_mapping_validation() -> None:
    with pytest.raises(ValueError):
        FieldMapping.model_validate({"field": "bad name", "paths": ["x"]})
    with pytest.raises(ValueError):
        FieldMapping.model_validate({"field": "x", "paths": []})
    with pytest.raises(ValueError):
        FieldMapping.model_validate({"field": "x", "paths": ["a"], "type": "text", "units": "K"})
    one = FieldMapping.model_validate({"field": "x", "paths": "a/b"})
    assert one.paths == ("a/b",)
