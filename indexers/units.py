"""Unit conversion for the quantities catalogue fields hold (pure, no dependencies).

Only the units NeXus files commonly carry are known; anything else fails with a reason,
so a mapped field fails alone rather than holding a wrong number.
"""

from __future__ import annotations

# unit -> (dimension, factor to the SI unit, offset added after scaling)
_UNITS: dict[str, tuple[str, float, float]] = {}


def _add(dimension: str, factor: float, *names: str, offset: float = 0.0) -> None:
    for name in names:
        _UNITS[name] = (dimension, factor, offset)


_add("energy", 1.0, "J", "joule")
_add("energy", 1.602176634e-19, "eV", "electronvolt")
_add("energy", 1.602176634e-16, "keV", "kiloelectronvolt")
_add("energy", 1.602176634e-13, "MeV")
_add("energy", 1.602176634e-10, "GeV")
_add("length", 1.0, "m", "metre", "meter", "metres", "meters")
_add("length", 1e-2, "cm")
_add("length", 1e-3, "mm", "millimetre", "millimeter")
_add("length", 1e-6, "um", "µm", "μm", "micron", "microns", "micrometre", "micrometer")
_add("length", 1e-9, "nm", "nanometre", "nanometer")
_add("length", 1e-10, "A", "Å", "Ang", "angstrom", "angstroms", "Angstrom", "Angstroms")
_add("length", 1e-12, "pm")
_add("time", 1.0, "s", "sec", "second", "seconds")
_add("time", 1e-3, "ms")
_add("time", 1e-6, "us", "µs", "μs")
_add("time", 1e-9, "ns")
_add("time", 60.0, "min", "minute", "minutes")
_add("time", 3600.0, "h", "hour", "hours")
_add("temperature", 1.0, "K", "kelvin", "Kelvin")
_add("temperature", 1.0, "C", "degC", "°C", "celsius", "Celsius", "deg C", offset=273.15)
_add("pressure", 1.0, "Pa")
_add("pressure", 1e2, "hPa", "mbar")
_add("pressure", 1e3, "kPa")
_add("pressure", 1e6, "MPa")
_add("pressure", 1e9, "GPa")
_add("pressure", 1e5, "bar")
_add("pressure", 101325.0, "atm")
_add("current", 1.0, "A_current")
_add("current", 1e-3, "mA")
_add("angle", 1.0, "rad", "radian", "radians")
_add("angle", 3.141592653589793 / 180.0, "deg", "degree", "degrees", "°")


def known(unit: str) -> bool:
    return unit.strip() in _UNITS


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit``; ValueError when impossible."""
    source, target = from_unit.strip(), to_unit.strip()
    if source == target:
        return value
    if source not in _UNITS:
        raise ValueError(f"unknown units {source!r}")
    if target not in _UNITS:
        raise ValueError(f"unknown units {target!r}")
    dim_s, factor_s, offset_s = _UNITS[source]
    dim_t, factor_t, offset_t = _UNITS[target]
    if dim_s != dim_t:
        raise ValueError(f"cannot convert {source!r} ({dim_s}) to {target!r} ({dim_t})")
    si = value * factor_s + offset_s
    return (si - offset_t) / factor_t
