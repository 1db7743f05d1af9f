"""The NeXus indexer: one record per ``NXentry``, plus the HDF5 summary and links.

Entries are the root members whose ``NX_class`` is ``NXentry``, whatever their name,
also when reached through a soft or external link (the same entry reached twice counts
once). Scalar fields come from the mapping (:mod:`indexers.mapping`), so a site can
extend or override them; the collections (subentries, users, detectors, NXdata, the
sample's other scalar fields) are read here. A file without entries is reported as
plain HDF5.
"""

from __future__ import annotations

import re

from catalogd.document import KIND_HDF5, KIND_NEXUS
from indexers.base import Deadline, IndexerOutput, JSONDict, Probe
from indexers.hdf5 import Hdf5Indexer, describe
from indexers.mapping import apply_mappings, entry_mappings, file_mappings, groups_of_class
from indexers.normalise import duration_s, name_text, to_json_value, to_text
from indexers.reader import (
    EXTERNAL,
    H5_ERRORS,
    HARD,
    SOFT,
    BudgetExceeded,
    Link,
    Node,
    Reader,
    TooLarge,
    dtype_name,
    resolve_file,
)
from indexers.settings import IndexerSettings

#: Keys every entry has (null when the file does not say), in this order.
ENTRY_KEYS = (
    "title",
    "start_time",
    "end_time",
    "duration",
    "definition",
    "experiment_identifier",
    "entry_identifier",
    "program_name",
    "program_version",
)
#: Fields of NXuser kept (``email`` only when ``keep_emails`` is set).
USER_FIELDS = ("name", "role", "affiliation", "facility_user_id", "ORCID", "orcid")
#: At most this many extra scalar sample fields, users, detectors and NXdata per entry.
MAX_SAMPLE_FIELDS = 32
MAX_COLLECTION = 32
#: At most this many linked data files are opened for the shape of one NXdata group.
MAX_DATA_LINKS = 64
#: Longest text kept for an extra sample field.
MAX_TEXT = 1000
_DATA_MEMBER = re.compile(r"^data_?\d+$")


class NexusIndexer(Hdf5Indexer):
    """HDF5 files with NeXus entries: kind ``nexus`` (``hdf5`` when there is none)."""

    name = "nexus"
    priority = 20

    def extract(self, probe: Probe, settings: IndexerSettings, deadline: Deadline) -> IndexerOutput:
        with Reader(probe.path, settings, deadline) as reader:
            entries = read_entries(reader)
            reader.visited = 0  # the summary has its own object budget
            metadata = describe(reader, probe)
            fields: JSONDict = {}
            errors: dict[str, str] = {}
            mappings = file_mappings(settings)
            if mappings:
                apply_mappings(
                    reader, mappings, root=reader.root, entry_name=None, into=fields, errors=errors
                )
                metadata["fields"] = fields
                if errors:
                    metadata["field_errors"] = errors
            if reader.warnings:
                metadata["warnings"] = list(reader.warnings)
        return IndexerOutput(
            kind=KIND_NEXUS if entries else KIND_HDF5, entries=tuple(entries), metadata=metadata
        )


def find_entries(reader: Reader) -> list[tuple[str, Node, Link]]:
    """(name, group, link) of each NXentry at the root, each object once."""
    found: list[tuple[str, Node, Link]] = []
    seen: set[int] = set()
    root = reader.root
    members = [link for link in reader.listing(root).values() if link.kind is not None]
    # Entries under their own name first; links to them (aliases) only when new.
    members.sort(key=lambda m: 0 if m.kind == HARD else 1)
    for link in members:
        obj = reader.target(root, link)
        if obj is None or not obj.is_group or reader.nx_class(obj) != "NXentry":
            continue
        key = obj.key
        if key in seen:
            continue
        seen.add(key)
        found.append((link.name, obj, link))
    return found


def read_entries(reader: Reader) -> list[JSONDict]:
    entries: list[JSONDict] = []
    try:
        found = find_entries(reader)
    except BudgetExceeded as exc:
        reader.warn(f"looking for entries stopped: {exc}")
        reader.visited = 0
        return entries
    for name, group, link in found:
        try:
            entries.append(read_entry(reader, name, group, link))
        except BudgetExceeded as exc:
            reader.warn(f"entry {name}: stopped reading: {exc}")
            entries.append({"name": name, **dict.fromkeys(ENTRY_KEYS), "truncated": True})
            reader.visited = 0
    return entries


def read_entry(reader: Reader, name: str, group: Node, link: Link | None = None) -> JSONDict:
    """The catalogue record of one NXentry."""
    entry: JSONDict = {"name": name, "path": reader.where(group), **dict.fromkeys(ENTRY_KEYS)}
    entry["sample"] = {}
    entry["instrument"] = {}
    if link is not None and link.kind == EXTERNAL:
        assert link.filename is not None
        entry["linked_from"] = resolve_file(reader.path, link.filename)
    elif link is not None and link.kind == SOFT:
        entry["linked_from"] = link.path
    errors: dict[str, str] = {}
    apply_mappings(
        reader,
        entry_mappings(reader.settings),
        root=group,
        entry_name=name,
        into=entry,
        errors=errors,
    )
    subentries = [_subentry(reader, sub) for sub in groups_of_class(reader, group, "NXsubentry")]
    definitions = [d for d in [entry["definition"], *(s["definition"] for s in subentries)] if d]
    if entry["definition"] is None and definitions:
        entry["definition"] = definitions[0]
    entry["definitions"] = list(dict.fromkeys(definitions))
    entry["subentries"] = subentries[:MAX_COLLECTION]
    if entry["duration"] is None:
        seconds = duration_s(entry["start_time"], entry["end_time"])
        if seconds is not None:
            entry["duration"] = seconds
            entry["duration_units"] = "s"
    samples = groups_of_class(reader, group, "NXsample")
    if samples:
        _sample_fields(reader, samples[0], entry["sample"])
    users = groups_of_class(reader, group, "NXuser")[:MAX_COLLECTION]
    entry["users"] = [_user(reader, user) for user in users]
    data = [_nxdata(reader, g) for g in groups_of_class(reader, group, "NXdata")[:MAX_COLLECTION]]
    entry["data"] = data
    detectors: list[JSONDict] = []
    for instrument in groups_of_class(reader, group, "NXinstrument"):
        for detector in groups_of_class(reader, instrument, "NXdetector"):
            if len(detectors) < MAX_COLLECTION:
                detectors.append(_detector(reader, detector))
    if len(detectors) == 1 and "data_shape" not in detectors[0]:
        signal = next((d for d in data if d.get("shape") is not None), None)
        if signal is not None:
            detectors[0]["data_shape"] = signal["shape"]
            detectors[0]["data_source"] = signal["path"]
    entry["instrument"]["detectors"] = detectors
    if errors:
        entry["field_errors"] = errors
    return entry


def _text_member(reader: Reader, group: Node, name: str) -> str | None:
    try:
        obj = reader.member(group, name)
        if obj is None or obj.is_group:
            return None
        return to_text(reader.read(obj))
    except TooLarge:
        return None
    except H5_ERRORS as exc:
        reader.warn(f"{reader.where(group)}/{name}: {exc}")
        return None


def _subentry(reader: Reader, group: Node) -> JSONDict:
    return {
        "name": name_text(reader.where(group).rsplit("/", 1)[-1]),
        "definition": _text_member(reader, group, "definition"),
        "title": _text_member(reader, group, "title"),
    }


def _user(reader: Reader, group: Node) -> JSONDict:
    user: JSONDict = {}
    for field in USER_FIELDS:
        value = _text_member(reader, group, field)
        if value is not None:
            user[field.lower()] = value
    if reader.settings.keep_emails:
        email = _text_member(reader, group, "email")
        if email is not None:
            user["email"] = email
    user.setdefault("name", None)
    return user


def _sample_fields(reader: Reader, group: Node, sample: JSONDict) -> None:
    """Every other small scalar dataset of the sample, with its units beside it."""
    added = 0
    for name, link in reader.listing(group).items():
        if link.kind is None:
            continue
        if name in sample or added >= MAX_SAMPLE_FIELDS or link.kind == EXTERNAL:
            continue
        obj = reader.target(group, link)
        if obj is None or obj.is_group:
            continue
        try:
            if obj.shape is None or (obj.size or 0) != 1:
                continue
            value = to_json_value(reader.read(obj))
        except (TooLarge, OSError, KeyError, RuntimeError, ValueError, TypeError):
            continue
        if value is None or isinstance(value, list):
            continue
        if isinstance(value, str):
            value = value[:MAX_TEXT]
        sample[name] = value
        units = reader.text_attr(obj, "units")
        if units is not None:
            sample[f"{name}_units"] = units
        added += 1


def _shape_of(obj: Node | None) -> tuple[list[int] | None, str | None]:
    if obj is None or obj.is_group:
        return None, None
    try:
        shape, _, dtype = obj.info()
        return (list(shape) if shape is not None else None), dtype_name(dtype)
    except H5_ERRORS:
        return None, None


def _detector(reader: Reader, group: Node) -> JSONDict:
    detector: JSONDict = {"name": name_text(reader.where(group).rsplit("/", 1)[-1])}
    detector["path"] = reader.where(group)
    for field in ("description", "type", "local_name"):
        value = _text_member(reader, group, field)
        if value is not None:
            detector[field] = value
    shape, dtype = _shape_of(reader.member(group, "data"))
    if shape is not None:
        detector["data_shape"] = shape
        detector["data_dtype"] = dtype
    return detector


def _nxdata(reader: Reader, group: Node) -> JSONDict:
    """An NXdata group: its signal's shape; NXmx-style ``data_000001``... summed on frames."""
    record: JSONDict = {
        "path": reader.where(group),
        "signal": reader.text_attr(group, "signal"),
    }
    signal = record["signal"]
    members: list[Link] = []
    for name, link in reader.listing(group).items():
        if link.kind is None:
            continue
        if (signal is not None and name == signal) or (signal is None and _DATA_MEMBER.match(name)):
            members.append(link)
        elif signal is None and name == "data" and not members:
            members.append(link)
    shapes: list[list[int]] = []
    dtype: str | None = None
    missing = 0
    for link in members[:MAX_DATA_LINKS]:
        shape, kind = _shape_of(reader.target(group, link))
        if shape is None:
            missing += 1
            continue
        shapes.append(shape)
        dtype = dtype or kind
    if shapes:
        if len(shapes) == 1:
            record["shape"] = shapes[0]
        elif all(len(s) == len(shapes[0]) and s[1:] == shapes[0][1:] for s in shapes):
            record["shape"] = [sum(s[0] for s in shapes), *shapes[0][1:]]
        record["dtype"] = dtype
    record["datasets"] = len(members)
    if missing or len(members) > MAX_DATA_LINKS:
        record["complete"] = False
        record["unreachable"] = missing
    return record
