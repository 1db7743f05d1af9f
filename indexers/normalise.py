"""Pure functions turning what HDF5 files hold into plain JSON-ready values.

Strings come in every storage form (fixed-length bytes, variable-length ``str`` or
``bytes``, one-element arrays, object arrays, padded with NULs); times in the forms real
writers use. Nothing here touches a file.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import numpy as np

#: Separator used when a text field holds several strings.
TEXT_JOIN = "\n"

_TIME_RE = re.compile(
    r"""^(?P<date>\d{4}-\d{2}-\d{2}|\d{8})
        (?:[T\s_]+
           (?P<h>\d{2}):?(?P<m>\d{2})(?::?(?P<s>\d{2})(?:[.,](?P<frac>\d+))?)?
        )?
        \s*(?P<tz>Z|[+-]\d{2}(?::?\d{2})?|(?:UTC|GMT)(?:[+-]\d{2}(?::?\d{2})?)?)?$""",
    re.VERBOSE | re.IGNORECASE,
)
#: Forms of ``ctime()``, Java's ``Date.toString()`` and similar, tried after ISO.
_STRPTIME_FORMATS = (
    "%a %b %d %H:%M:%S %Y",
    "%a %b %d %H:%M:%S %Z %Y",
    "%a %b %d %H:%M:%S.%f %Y",
    "%d-%b-%Y %H:%M:%S",
    "%d %b %Y %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S.%f",
)
#: Epoch seconds outside this range are not taken as times (1990..2100).
_EPOCH_RANGE = (631152000.0, 4102444800.0)


def decode_bytes(raw: bytes) -> str:
    """Bytes as text: UTF-8 when valid, else Latin-1 (every byte maps to a character)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def clean_str(text: str) -> str:
    """Text that encodes as UTF-8: surrogate escapes (undecodable bytes) become ``\\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return text


def _resurrogate(text: str) -> str:
    """Undecodable bytes carried as surrogate escapes (h5py does so), decoded as bytes are."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return decode_bytes(text.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def name_text(name: str | bytes) -> str:
    """An HDF5 object or attribute name as text (h5py gives undecodable names as bytes)."""
    return decode_bytes(name) if isinstance(name, bytes) else _resurrogate(name)


def _strip(text: str) -> str:
    return clean_str(text.rstrip("\x00").strip())


def _texts(value: Any) -> list[str]:
    """Every string inside ``value`` (scalar, array or list), decoded and stripped."""
    if value is None:
        return []
    if isinstance(value, (bytes, np.bytes_)):
        return [_strip(decode_bytes(bytes(value)))]
    if isinstance(value, str):
        return [_strip(_resurrogate(value))]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "S" and value.ndim <= 1 and value.size > 1:
            # Some writers store one string as an array of single characters.
            if value.dtype.itemsize == 1:
                return [_strip(decode_bytes(value.tobytes()))]
        if (
            value.dtype.kind == "U"
            and value.ndim <= 1
            and value.size > 1
            and value.dtype.itemsize == 4
        ):
            return [_strip("".join(value.tolist()))]
        return [t for item in value.ravel().tolist() for t in _texts(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _texts(item)]
    if isinstance(value, np.generic):
        return _texts(value.item())
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, float) and not math.isfinite(value):
        return []
    return [clean_str(str(value))]


def to_text(value: Any) -> str | None:
    """Plain text whatever the storage; None for nothing (or only empty strings)."""
    if type(value) is np.ndarray and value.ndim == 0 and value.dtype.kind == "S":
        value = value.item()  # one fixed-length string (an attribute, say): bytes
    if isinstance(value, (bytes, np.bytes_)):  # the common case, without the lists
        return _strip(decode_bytes(bytes(value))) or None
    parts = [t for t in _texts(value) if t]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else TEXT_JOIN.join(parts)


def unwrap(value: Any) -> Any:
    """A one-element array (of any rank) as its element; numpy scalars as Python ones."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item() if value.dtype.kind != "O" else value.ravel()[0]
    if isinstance(value, np.generic):
        value = value.item()
    return value


def to_float(value: Any) -> float:
    """A finite number; ValueError with the reason otherwise."""
    value = unwrap(value)
    if isinstance(value, (bytes, str, np.bytes_)):
        text = to_text(value)
        if text is None:
            raise ValueError("empty text, not a number")
        try:
            value = float(text.split()[0])
        except ValueError:
            raise ValueError(f"not a number: {text[:40]!r}") from None
    if isinstance(value, np.ndarray):
        flat = value.ravel()
        if flat.size == 0:
            raise ValueError("empty array, not a number")
        if flat.dtype.kind in "biuf" and bool(np.all(flat == flat[0])):
            value = flat[0].item()
        else:
            raise ValueError(f"an array of {flat.size} values, not one number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"not a finite number: {result}")
    return result


def to_int(value: Any) -> int:
    number = to_float(value)
    if number != int(number):
        raise ValueError(f"not an integer: {number}")
    return int(number)


def to_bool(value: Any) -> bool:
    value = unwrap(value)
    if isinstance(value, (bytes, str, np.bytes_)):
        text = (to_text(value) or "").lower()
        if text in ("true", "yes", "1", "on", "y", "t"):
            return True
        if text in ("false", "no", "0", "off", "n", "f"):
            return False
        raise ValueError(f"not a boolean: {text[:40]!r}")
    if isinstance(value, (bool, int, float)):
        return bool(value)
    raise ValueError(f"not a boolean: {type(value).__name__}")


def to_json_value(value: Any, *, max_items: int = 64) -> Any:
    """A JSON-ready value: text decoded, numbers as Python numbers, small arrays as lists."""
    value = unwrap(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, str, np.bytes_)):
        return to_text(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SUO":
            texts = _texts(value)
            return texts[0] if len(texts) == 1 else texts[:max_items]
        if value.dtype.kind in "biuf" and value.size <= max_items:
            return [to_json_value(v) for v in value.ravel().tolist()]
        return None
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value[:max_items]]
    return to_text(value)


def _offset(text: str) -> dt.timezone:
    text = text.upper().removeprefix("UTC").removeprefix("GMT")
    if not text or text == "Z":
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError("offset out of range")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def parse_time(value: Any) -> dt.datetime | None:
    """A date/time from the forms real files use; None when it is not one.

    ISO 8601 with a ``T``, space or underscore separator, basic or extended format,
    fractional seconds of any length (``,`` or ``.``), zone ``Z``, ``UTC``, ``GMT`` or an
    offset with or without a colon, or none (left naive, as written); ``ctime()`` and
    Java ``Date`` strings; epoch seconds as numbers.
    """
    value = unwrap(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if _EPOCH_RANGE[0] <= float(value) <= _EPOCH_RANGE[1]:
            return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
        return None
    text = to_text(value)
    if text is None:
        return None
    match = _TIME_RE.match(text)
    if match:
        return _from_match(match)
    for fmt in _STRPTIME_FORMATS:
        parsed = _strptime(text, fmt)
        if parsed is not None:
            return parsed
    return None


def _from_match(match: re.Match[str]) -> dt.datetime | None:
    date = match["date"].replace("-", "")
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    try:
        tz = _offset(match["tz"]) if match["tz"] else None
        return dt.datetime(
            int(date[:4]),
            int(date[4:6]),
            int(date[6:8]),
            int(match["h"] or 0),
            int(match["m"] or 0),
            int(match["s"] or 0),
            int(frac),
            tzinfo=tz,
        )
    except ValueError:
        return None


def _strptime(text: str, fmt: str) -> dt.datetime | None:
    zone = None
    if "%Z" in fmt:
        # strptime's %Z knows only UTC/GMT and the local zone names; handle those two.
        parts = text.split()
        if len(parts) != 6 or parts[4].upper() not in ("UTC", "GMT"):
            return None
        text = " ".join(parts[:4] + parts[5:])
        fmt = fmt.replace(" %Z", "")
        zone = dt.UTC
    try:
        parsed = dt.datetime.strptime(text, fmt)
    except ValueError:
        return None
    return parsed.replace(tzinfo=zone) if zone else parsed


def iso_time(value: Any) -> str | None:
    """ISO 8601 text for a time in any of :func:`parse_time`'s forms.

    The original text is returned unchanged when it cannot be parsed (check with
    :func:`parse_time` to tell the two apart); None when there is no value.
    """
    parsed = parse_time(value)
    if parsed is not None:
        return parsed.isoformat()
    return to_text(value)


def duration_s(start: str | None, end: str | None) -> float | None:
    """Seconds from ``start`` to ``end`` (ISO texts), when both parse and are comparable."""
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None or (first.tzinfo is None) != (last.tzinfo is None):
        return None
    seconds = (last - first).total_seconds()
    return seconds if seconds >= 0 else None
