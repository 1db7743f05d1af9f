"""HDF5 paths to catalogue fields: the default NeXus fields and a site's own.

A mapping (:class:`~indexers.settings.FieldMapping`) names a dotted field and HDF5 paths
tried in order. Path segments match a member by name, by ``NX_class`` (``NXsource``) or
by wildcard (``*``, ``?``, ``[...]``); ``name@attr`` reads an attribute. Each field is
converted on its own: a field that fails records why in ``field_errors`` and the others
are unaffected.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from indexers.base import JSONDict
from indexers.normalise import (
    parse_time,
    to_bool,
    to_float,
    to_int,
    to_json_value,
    to_text,
)
from indexers.reader import H5_ERRORS, BudgetExceeded, Node, Reader, TooLarge
from indexers.settings import FieldMapping, IndexerSettings
from indexers.units import convert

#: At most this many objects match one path segment.
MAX_MATCHES = 64
_NX_CLASS = re.compile(r"^NX[a-z][a-z0-9_]*$")
_WILDCARD = re.compile(r"[*?\[]")


def _m(field: str, *paths: str, type: str = "text", units: str | None = None) -> FieldMapping:
    return FieldMapping.model_validate(
        {"field": field, "paths": paths, "type": type, "units": units}
    )


#: The default NeXus fields of every entry, in the same form a site writes its own.
DEFAULT_ENTRY_MAPPINGS: tuple[FieldMapping, ...] = (
    _m("title", "title"),
    _m("start_time", "start_time", type="time"),
    _m("end_time", "end_time", type="time"),
    _m("duration", "duration", type="float"),
    _m("definition", "definition", "definition_local"),
    _m("experiment_identifier", "experiment_identifier"),
    _m("experiment_description", "experiment_description"),
    _m("entry_identifier", "entry_identifier"),
    _m("collection_identifier", "collection_identifier"),
    _m("program_name", "program_name"),
    _m("program_version", "program_name@version"),
    _m("sample.name", "NXsample/name", "NXsample/short_title"),
    _m("sample.chemical_formula", "NXsample/chemical_formula"),
    _m("sample.description", "NXsample/description"),
    _m("sample.type", "NXsample/type"),
    _m("sample.temperature", "NXsample/temperature", type="float"),
    _m("instrument.name", "NXinstrument/name"),
    _m("instrument.short_name", "NXinstrument/name@short_name"),
    _m("instrument.source.name", "NXinstrument/NXsource/name"),
    _m("instrument.source.type", "NXinstrument/NXsource/type"),
    _m("instrument.source.probe", "NXinstrument/NXsource/probe"),
    _m("instrument.source.energy", "NXinstrument/NXsource/energy", type="float"),
    _m("instrument.source.current", "NXinstrument/NXsource/current", type="float"),
    _m("instrument.monochromator.energy", "NXinstrument/NXmonochromator/energy", type="float"),
    _m(
        "instrument.monochromator.wavelength",
        "NXinstrument/NXmonochromator/wavelength",
        type="float",
    ),
    _m(
        "instrument.beam.incident_energy",
        "NXinstrument/NXbeam/incident_energy",
        "NXsample/NXbeam/incident_energy",
        type="float",
    ),
    _m(
        "instrument.beam.incident_wavelength",
        "NXinstrument/NXbeam/incident_wavelength",
        "NXsample/NXbeam/incident_wavelength",
        type="float",
    ),
)


#: entry_mappings() of each settings object in use (kept, so that its id is not reused).
_ENTRY_MAPPINGS: dict[int, tuple[IndexerSettings, tuple[FieldMapping, ...]]] = {}
#: Settings objects remembered at most (a process has one or two).
_SETTINGS_KEPT = 64


def entry_mappings(settings: IndexerSettings) -> tuple[FieldMapping, ...]:
    """The entry-scoped mappings in force: defaults, replaced or extended by the site's
    (worked out once per settings object: every entry of every file asks)."""
    known = _ENTRY_MAPPINGS.get(id(settings))
    if known is not None and known[0] is settings:
        return known[1]
    site = [m for m in settings.mappings if m.scope == "entry"]
    replaced = {m.field for m in site}
    base = DEFAULT_ENTRY_MAPPINGS if settings.use_default_mappings else ()
    chosen = tuple(m for m in base if m.field not in replaced) + tuple(site)
    if len(_ENTRY_MAPPINGS) >= _SETTINGS_KEPT:
        _ENTRY_MAPPINGS.clear()
    _ENTRY_MAPPINGS[id(settings)] = (settings, chosen)
    return chosen


def file_mappings(settings: IndexerSettings) -> tuple[FieldMapping, ...]:
    return tuple(m for m in settings.mappings if m.scope == "file")


@dataclass(frozen=True, slots=True)
class PathPattern:
    segments: tuple[str, ...]
    attribute: str | None
    absolute: bool


@lru_cache(maxsize=1024)
def parse_path(text: str) -> PathPattern:
    """``/a/NXb/c*@attr`` -> segments ``a``, ``NXb``, ``c*`` and attribute ``attr``."""
    absolute = text.startswith("/")
    attribute = None
    body = text.strip("/")
    last = body.rsplit("/", 1)[-1]
    if "@" in last:
        head, _, attribute = body.rpartition("@")
        body = head.rstrip("/")
    segments = tuple(s for s in body.split("/") if s and s != ".")
    return PathPattern(segments, attribute or None, absolute)


@lru_cache(maxsize=1024)
def segment_kind(segment: str) -> str:
    if _WILDCARD.search(segment):
        return "wildcard"
    if _NX_CLASS.match(segment):
        return "class"
    return "name"


def matches_entry(segment: str, entry_name: str) -> bool:
    """Whether the first segment of an absolute entry-scoped path selects this entry."""
    kind = segment_kind(segment)
    if kind == "wildcard":
        return fnmatch.fnmatchcase(entry_name, segment)
    return segment == "NXentry" or segment == entry_name


#: A path segment and its kind (:func:`segment_kind`).
Step = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CompiledPath:
    """One of a mapping's paths, parsed once, each segment's kind worked out."""

    text: str
    attribute: str | None
    absolute: bool
    #: The first segment (which, in an absolute path, selects the entry), or None.
    first: str | None
    #: Every segment, and every segment but the first, with its kind.
    steps: tuple[Step, ...]
    tail: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class CompiledMapping:
    """A mapping's paths and dotted field, parsed once per mapping, not per entry."""

    paths: tuple[CompiledPath, ...]
    parents: tuple[str, ...]
    leaf: str


#: compile_mapping() of each mapping in use (kept, so that its id is not reused).
_COMPILED: dict[int, tuple[FieldMapping, CompiledMapping]] = {}
#: Mappings remembered at most (the defaults and a site's own: a few dozen).
_MAPPINGS_KEPT = 4096


def compile_mapping(mapping: FieldMapping) -> CompiledMapping:
    """The mapping's paths parsed and its field split, worked out once per mapping."""
    known = _COMPILED.get(id(mapping))
    if known is not None and known[0] is mapping:
        return known[1]
    paths = []
    for text in mapping.paths:
        pattern = parse_path(text)
        steps = tuple((segment, segment_kind(segment)) for segment in pattern.segments)
        first = pattern.segments[0] if pattern.segments else None
        paths.append(
            CompiledPath(text, pattern.attribute, pattern.absolute, first, steps, steps[1:])
        )
    *parents, leaf = mapping.field.split(".")
    compiled = CompiledMapping(tuple(paths), tuple(parents), leaf)
    if len(_COMPILED) >= _MAPPINGS_KEPT:
        _COMPILED.clear()
    _COMPILED[id(mapping)] = (mapping, compiled)
    return compiled


def resolve(reader: Reader, start: Node, segments: Iterable[str]) -> list[Node]:
    """Objects under ``start`` that the segments select (at most MAX_MATCHES each step)."""
    return resolve_steps(reader, start, [(segment, segment_kind(segment)) for segment in segments])


def resolve_steps(reader: Reader, start: Node, steps: Iterable[Step]) -> list[Node]:
    """:func:`resolve` with each segment's kind known."""
    nodes: list[Node] = [start]
    for segment, kind in steps:
        found: list[Node] = []
        for group in nodes:
            if not group.is_group:
                continue
            found.extend(_step(reader, group, segment, kind))
            if len(found) >= MAX_MATCHES:
                break
        nodes = found[:MAX_MATCHES]
        if not nodes:
            break
    return nodes


def _step(reader: Reader, group: Node, segment: str, kind: str) -> list[Node]:
    members = reader.listing(group)
    if kind == "name":
        link = members.get(segment)
        obj = None if link is None else reader.target(group, link)
        return [] if obj is None else [obj]
    memo = reader.steps
    memo_key = (group.key, segment)
    cached = memo.get(memo_key)
    if cached is not None:
        return cached
    result = []
    for name, link in members.items():
        if kind == "wildcard" and not fnmatch.fnmatchcase(name, segment):
            continue
        obj = reader.target(group, link)
        if obj is None:
            continue
        if kind == "class" and name != segment and reader.nx_class(obj) != segment:
            continue
        result.append(obj)
    memo[memo_key] = result
    return result


def groups_of_class(reader: Reader, group: Node | None, nx_class: str) -> list[Node]:
    """Direct members of ``group`` with this ``NX_class`` (soft/external links followed)."""
    if group is None or not group.is_group:
        return []
    return [
        obj
        for obj in _step(reader, group, nx_class, "class")
        if obj.is_group and reader.nx_class(obj) == nx_class
    ]


#: Mapping types whose value keeps the dataset's ``@units`` beside it.
_UNITS_KEPT = frozenset({"float", "int", "value"})


class FieldError(Exception):
    """Why one mapped field has no value."""


def read_field(
    reader: Reader, obj: Node, attribute: str | None, mapping: FieldMapping
) -> tuple[Any, str | None]:
    """(value, units) of one matched object for a mapping, converted; FieldError else."""
    units: str | None = None
    if attribute is not None:
        raw = reader.attr(obj, attribute)
        if raw is None:
            return None, None  # absent, like a missing dataset: not an error
    elif obj.is_dataset:
        if mapping.type in _UNITS_KEPT:
            # Only numbers keep their units: text, times and booleans never read them.
            units = reader.text_attr(obj, "units")
        if mapping.type == "shape":
            return list(obj.shape or ()), None
        try:
            raw = reader.read(obj)
        except TooLarge as exc:
            raise FieldError(f"not read: {exc}") from None
    else:
        raise FieldError("is a group, not a value")
    return convert_value(raw, units, mapping)


def convert_value(raw: Any, units: str | None, mapping: FieldMapping) -> tuple[Any, str | None]:
    """Apply the mapping's type and units to a raw value (pure)."""
    try:
        if mapping.type == "text":
            return to_text(raw), None
        if mapping.type == "time":
            parsed = parse_time(raw)
            if parsed is None:
                text = to_text(raw)
                if text is None:
                    return None, None
                raise FieldError(f"not a recognised time: {text[:60]!r}")
            return parsed.isoformat(), None
        if mapping.type == "bool":
            return to_bool(raw), None
        if mapping.type == "shape":
            raise FieldError("a shape needs a dataset")
        if mapping.type == "value":
            value = to_json_value(raw)
            if mapping.units and isinstance(value, (int, float)) and not isinstance(value, bool):
                return _with_units(float(value), units, mapping.units)
            return value, units
        number: float = to_float(raw) if mapping.type == "float" else float(to_int(raw))
        if mapping.units:
            value_f, units = _with_units(number, units, mapping.units)
            return (value_f if mapping.type == "float" else round(value_f)), units
        return (number if mapping.type == "float" else int(number)), units
    except ValueError as exc:
        raise FieldError(str(exc)) from None


def _with_units(value: float, source: str | None, target: str) -> tuple[float, str]:
    if source is None:
        return value, target  # no units in the file: taken to be the wanted ones
    return convert(value, source, target), target


def apply_mappings(
    reader: Reader,
    mappings: Iterable[FieldMapping],
    *,
    root: Node,
    entry_name: str | None,
    into: JSONDict,
    errors: dict[str, str],
) -> None:
    """Fill ``into`` with each mapping's field (dotted names nest); reasons in ``errors``.

    ``root`` is the entry group for entry-scoped mappings (``entry_name`` its name), the
    file for file-scoped ones.
    """
    for mapping in mappings:
        value: Any = None
        units: str | None = None
        errors.pop(mapping.field, None)
        compiled = compile_mapping(mapping)
        for text, attribute, steps in _candidates(compiled, entry_name):
            try:
                found = resolve_steps(reader, root, steps)
                if not found:
                    continue
                value, units = read_field(reader, found[0], attribute, mapping)
            except FieldError as exc:
                errors[mapping.field] = f"{text}: {exc}"
                continue
            except BudgetExceeded:
                raise
            except H5_ERRORS as exc:
                errors[mapping.field] = f"{text}: unreadable: {exc}"
                continue
            if value is not None:
                errors.pop(mapping.field, None)
                break
        if mapping.type == "time" and value is None and mapping.field in errors:
            # The original is kept when it cannot be parsed.
            value = _original_text(reader, root, compiled, entry_name)
        _set_parts(into, compiled.parents, compiled.leaf, value, units)


def _candidates(
    compiled: CompiledMapping, entry_name: str | None
) -> Iterator[tuple[str, str | None, tuple[Step, ...]]]:
    """(text, attribute, steps to resolve from the root given) of each of a mapping's
    paths: an absolute path's first segment selects the entry (paths naming another
    entry are skipped) and is then dropped."""
    for path in compiled.paths:
        steps = path.steps
        if path.absolute and entry_name is not None:
            if path.first is None or not matches_entry(path.first, entry_name):
                continue
            steps = path.tail
        yield path.text, path.attribute, steps


def _original_text(
    reader: Reader, root: Node, compiled: CompiledMapping, entry_name: str | None
) -> Any:
    for _text, attribute, steps in _candidates(compiled, entry_name):
        try:
            found = resolve_steps(reader, root, steps)
            if found:
                raw = reader.attr(found[0], attribute) if attribute else reader.read(found[0])
                return to_text(raw)
        except H5_ERRORS:
            continue
    return None


def set_dotted(into: JSONDict, field: str, value: Any, units: str | None = None) -> None:
    """``into["a"]["b"] = value`` for field ``a.b``; units beside as ``b_units``."""
    *parents, leaf = field.split(".")
    _set_parts(into, parents, leaf, value, units)


def _set_parts(
    into: JSONDict, parents: Iterable[str], leaf: str, value: Any, units: str | None
) -> None:
    target = into
    for parent in parents:
        child = target.get(parent)
        if not isinstance(child, dict):
            child = {}
            target[parent] = child
        target = child
    if value is None and leaf in target:
        return  # never overwrite a value with nothing
    target[leaf] = value
    if units is not None and value is not None:
        target[f"{leaf}_units"] = units
