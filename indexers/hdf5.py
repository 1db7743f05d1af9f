"""The plain HDF5 indexer: a bounded summary of any HDF5 file, and its links.

The summary counts groups, datasets and links, lists the first objects with shape and
dtype (never their data) and reads the root attributes. External links and virtual
datasets are recorded with their targets resolved relative to the file and whether each
target exists; a missing target is recorded, never an error. A file that links to data
files is a ``master``: ``data_files`` names every file it links to as a real path
(:func:`seen_from`), whether it exists yet or not (the first ``max_linked_files`` by
path), and ``data_file_count`` how many of them exist. The catalogue decides from a
stored master's ``data_files`` which files are its parts, whatever their names
(:mod:`catalogd.store.links`), so a search can show the measurement rather than its
parts. On its own, a data file named like a master's (``x_data_000001.h5`` beside
``x_master.h5``) that the master links to gets ``master`` set here too (what
``catalogd extract`` shows); the store's answer replaces it.

The summary walks the reader's index (:class:`indexers.reader.Reader`), so the objects
the NeXus extraction already opened are not opened again, and the reverse.
"""

from __future__ import annotations

import os
import re
from collections import deque

from catalogd.document import KIND_HDF5
from catalogd.errors import ExtractionError
from indexers.base import Deadline, IndexerOutput, JSONDict, Probe
from indexers.reader import (
    EXTERNAL,
    H5_ERRORS,
    HARD,
    SOFT,
    BudgetExceeded,
    Node,
    Reader,
    dtype_name,
    resolve_file,
)
from indexers.settings import IndexerSettings

#: A data file's name -> its master's name (Dectris/EIGER and the writers that copy it).
MASTER_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^(?P<stem>.+)_data_\d+(?P<ext>\.h5|\.hdf5|\.nxs|\.hdf)$"),
        r"\g<stem>_master\g<ext>",
    ),
)
#: At most this many links of each type are listed one by one.
MAX_LISTED_LINKS = 200
#: Links looked at when checking that a master links to a data file.
MASTER_CHECK_OBJECTS = 5000


class Hdf5Indexer:
    """Any HDF5 file (found by its signature, user block or not): kind ``hdf5``."""

    name = "hdf5"
    priority = 10

    def accepts(self, probe: Probe) -> bool:
        return probe.is_hdf5

    def extract(self, probe: Probe, settings: IndexerSettings, deadline: Deadline) -> IndexerOutput:
        with Reader(probe.path, settings, deadline) as reader:
            metadata = describe(reader, probe)
            if reader.warnings:
                metadata["warnings"] = list(reader.warnings)
        return IndexerOutput(kind=KIND_HDF5, metadata=metadata)


def describe(reader: Reader, probe: Probe) -> JSONDict:
    """The file-level metadata every HDF5 file gets: structure, links, master/data role."""
    structure, links, files = summarise(reader)
    structure["userblock_size"] = probe.hdf5_offset or 0
    structure["swmr"] = reader.swmr
    metadata: JSONDict = {"structure": structure, "links": links}
    itself = os.path.abspath(reader.path)
    linked = [f for f in links["files"] if f["path"] != itself]
    if linked:
        metadata["role"] = "master"
        metadata["linked_files"] = [f["path"] for f in linked]
        named = {
            seen_from(reader.path, path) if exists is not None else path: exists
            for path, exists in files.items()
        }
        named.pop(itself, None)
        metadata["data_files"] = sorted(named)[: reader.settings.max_linked_files]
        metadata["data_file_count"] = sum(1 for exists in named.values() if exists)
    else:
        master = find_master(reader.path, reader.settings, reader.deadline)
        if master is not None:
            metadata["role"] = "data"
            metadata["master"] = master
    return metadata


def seen_from(master: str, target: str) -> str:
    """``target`` as a real path (symbolic links and ``..`` resolved), named the way
    ``master`` is named: when a symbolic link above the master's directory (a data root
    that is a link, say) makes its real path differ, the target's real path is named
    through the same link, so it is the path the catalogue stores for that file."""
    real_target = os.path.realpath(target)
    shown = os.path.dirname(os.path.abspath(master)).split("/")
    real = os.path.realpath(os.path.dirname(os.path.abspath(master))).split("/")
    while len(shown) > 1 and len(real) > 1 and shown[-1] == real[-1]:
        shown.pop()
        real.pop()
    shown_prefix, real_prefix = "/".join(shown), "/".join(real)
    if real_prefix == shown_prefix:
        return real_target
    if real_target == real_prefix or real_target.startswith(real_prefix + "/"):
        return shown_prefix + real_target[len(real_prefix) :]
    return real_target


def summarise(reader: Reader) -> tuple[JSONDict, JSONDict, dict[str, bool | None]]:
    """A breadth-first walk of the file (hard links once, soft links not followed); the
    structure, the links, and every linked file (resolved) with whether it exists."""
    settings = reader.settings
    counts = {"groups": 1, "datasets": 0, "soft_links": 0, "external_links": 0, "virtual": 0}
    objects: list[JSONDict] = []
    external: list[JSONDict] = []
    virtual: list[JSONDict] = []
    files: dict[str, bool | None] = {}
    root = reader.root
    root_attrs, root_attr_count = reader.attributes(root)
    seen = {root.key}
    queue: deque[tuple[Node, str]] = deque([(root, "")])
    try:
        while queue:
            group, prefix = queue.popleft()
            for name, link in reader.listing(group).items():
                kind = link.kind
                if kind is None:
                    continue
                path = f"{prefix}/{name}"
                if kind == SOFT:
                    counts["soft_links"] += 1
                    continue
                if kind == EXTERNAL:
                    counts["external_links"] += 1
                    assert link.filename is not None
                    target = resolve_file(reader.path, link.filename)
                    exists = linked_file(reader, target, files)
                    if len(external) < MAX_LISTED_LINKS:
                        external.append(
                            {
                                "path": path,
                                "file": link.filename,
                                "target": link.path,
                                "resolved": target,
                                "exists": exists,
                            }
                        )
                    continue
                node = reader.target(group, link)
                if node is None:
                    reader.warn(f"{path}: unreadable")
                    continue
                if node.is_group:
                    key = node.key  # groups only: hard-link cycles go through groups
                    if key in seen:
                        continue
                    seen.add(key)
                    counts["groups"] += 1
                    queue.append((node, path))
                    if len(objects) < settings.max_summary_objects:
                        entry: JSONDict = {"path": path, "type": "group"}
                        nx_class = reader.nx_class(node)
                        if nx_class:
                            entry["nx_class"] = nx_class
                        objects.append(entry)
                else:
                    counts["datasets"] += 1
                    record = _dataset_record(reader, node, path, files, virtual)
                    if record.get("virtual"):
                        counts["virtual"] += 1
                    if len(objects) < settings.max_summary_objects:
                        objects.append(record)
    except BudgetExceeded as exc:
        reader.warn(f"structure summary stopped: {exc}")
    structure: JSONDict = {
        **counts,
        "objects": objects,
        "root_attributes": root_attrs,
        "root_attribute_count": root_attr_count,
        "truncated": reader.truncated,
    }
    listed = sorted(files.items())[: settings.max_linked_files]
    links: JSONDict = {
        "external": external,
        "virtual": virtual,
        "files": [{"path": path, "exists": exists} for path, exists in listed],
        "missing": sum(1 for exists in files.values() if exists is False),
    }
    return structure, links, files


def _dataset_record(
    reader: Reader,
    dataset: Node,
    path: str,
    files: dict[str, bool | None],
    virtual: list[JSONDict],
) -> JSONDict:
    record: JSONDict = {"path": path, "type": "dataset"}
    try:
        shape, maxshape, dtype = dataset.info()
        record["shape"] = list(shape) if shape is not None else None
        record["dtype"] = dtype_name(dtype)
        if maxshape is not None and None in maxshape:
            record["maxshape"] = [-1 if m is None else m for m in maxshape]
        is_virtual = dataset.is_virtual
    except H5_ERRORS as exc:
        reader.warn(f"{path}: {exc}")
        return record
    if is_virtual:
        record["virtual"] = True
        sources = _virtual_sources(reader, dataset, path, files)
        if len(virtual) < MAX_LISTED_LINKS:
            virtual.append({"path": path, "sources": sources})
    return record


def _virtual_sources(
    reader: Reader, dataset: Node, path: str, files: dict[str, bool | None]
) -> list[JSONDict]:
    try:
        mappings = dataset.virtual_sources()
    except H5_ERRORS as exc:
        reader.warn(f"{path}: virtual sources unreadable: {exc}")
        return []
    sources: dict[tuple[str, str], JSONDict] = {}
    for file_name, dset_name in mappings:
        target = resolve_file(reader.path, file_name)
        exists = linked_file(reader, target, files)
        key = (target, dset_name)
        if key not in sources and len(sources) < MAX_LISTED_LINKS:
            sources[key] = {
                "file": file_name,
                "dataset": dset_name,
                "resolved": target,
                "exists": exists,
            }
    return list(sources.values())


def linked_file(reader: Reader, target: str, files: dict[str, bool | None]) -> bool | None:
    """Whether the linked file ``target`` exists, recorded in ``files``; None (unknown,
    never looked at) outside the reader's link scope: a file's metadata tells nothing
    about files of another proposal, not even whether one exists."""
    if target not in files:
        files[target] = os.path.isfile(target) if reader.may_open(target) else None
    return files[target]


def find_master(path: str, settings: IndexerSettings, deadline: Deadline) -> str | None:
    """The master file of a detector data file, when its name says so and the master
    links to it; None otherwise (the scanner also learns it from the master's side)."""
    directory, name = os.path.split(os.path.abspath(path))
    for pattern, replacement in MASTER_PATTERNS:
        if not pattern.match(name):
            continue
        candidate = os.path.join(directory, pattern.sub(replacement, name))
        if os.path.isfile(candidate) and links_to(
            candidate, os.path.join(directory, name), settings, deadline
        ):
            return candidate
    return None


def links_to(master: str, data_file: str, settings: IndexerSettings, deadline: Deadline) -> bool:
    """Whether ``master`` has an external link (among its first MASTER_CHECK_OBJECTS
    links) or a virtual source naming ``data_file``."""
    if settings.max_objects < MASTER_CHECK_OBJECTS:
        settings = settings.model_copy(update={"max_objects": MASTER_CHECK_OBJECTS})
    try:
        reader = Reader(master, settings, deadline)
    except ExtractionError:
        return False
    links = 0
    with reader:
        seen = {reader.root.key}
        queue: deque[Node] = deque([reader.root])
        while queue:
            group = queue.popleft()
            for link in reader.listing(group).values():
                links += 1
                if link.kind == EXTERNAL:
                    assert link.filename is not None
                    if links <= MASTER_CHECK_OBJECTS and (
                        resolve_file(master, link.filename) == data_file
                    ):
                        return True
                    continue
                if link.kind != HARD:
                    continue
                node = reader.target(group, link)
                if node is None:
                    continue
                if node.is_group:
                    if node.key not in seen:
                        seen.add(node.key)
                        queue.append(node)
                    continue
                try:
                    if node.is_virtual and any(
                        resolve_file(master, file_name) == data_file
                        for file_name, _ in node.virtual_sources()
                    ):
                        return True
                except H5_ERRORS:
                    continue
    return False
