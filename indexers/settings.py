"""``[indexers]``: how metadata is pulled out of files, and the bounds on doing it.

The CLI validates these once and hands them to :class:`indexers.registry.Registry`;
nothing here reads the environment. ``IndexerSettings()`` alone is a working setup.

A site adds catalogue fields with ``[[indexers.mappings]]`` tables::

    [[indexers.mappings]]
    field = "scan_command"            # dotted: "sample.pressure" puts it in the sample
    paths = ["scan_command", "/NXentry/NXcollection/scan_command"]

    [[indexers.mappings]]
    field = "sample.pressure"
    paths = ["NXsample/pressure", "NXsample/*/pressure"]
    type = "float"
    units = "kPa"

Paths without a leading ``/`` are relative to each ``NXentry``; an absolute path whose
first segment is ``NXentry`` (or ``*``, or the entry's name) also selects the entry. A
segment such as ``NXsource`` matches children of that ``NX_class``; ``*``, ``?`` and
``[...]`` are wildcards; ``name@attr`` reads an attribute. ``scope = "file"`` resolves
paths from the root and puts the value in the file's ``metadata.fields``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Arrays larger than this are never read: only their shape and dtype are recorded.
MAX_ARRAY_BYTES = 64 * 1024
#: Wall-clock bound on one file, in seconds (enforced by killing the reader process).
TIMEOUT_S = 30.0
#: Address-space bound on the reader process, in MiB (0: no bound).
MAX_MEMORY_MB = 4096
#: At most this many objects (groups, datasets, links) are visited per file.
MAX_OBJECTS = 20_000
#: At most this many attributes are read per object.
MAX_ATTRIBUTES = 64
#: At most this many objects are listed, with shape and dtype, in the structure summary.
MAX_SUMMARY_OBJECTS = 200
#: At most this many distinct linked files are recorded (and checked for existence).
MAX_LINKED_FILES = 1000
#: Retries when a file changes under the reader (still being written).
RETRIES = 2
RETRY_DELAY_S = 0.2

FieldType = Literal["text", "float", "int", "bool", "time", "shape", "value"]

#: Suffixes that claim HDF5 content: such a file that is not HDF5 is an error.
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nxs", ".nx5", ".nx", ".cxi", ".mxh5")


class FieldMapping(BaseModel):
    """One catalogue field taken from the first of ``paths`` that is found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(description="Dotted name of the field in the entry (or file).")
    paths: tuple[str, ...] = Field(description="HDF5 paths tried in order.")
    type: FieldType = Field(default="text", description="Conversion applied to the value.")
    units: str | None = Field(
        default=None, description="Convert to these units (float fields); kept beside."
    )
    scope: Literal["entry", "file"] = "entry"

    @field_validator("field")
    @classmethod
    def _field_name(cls, value: str) -> str:
        parts = value.split(".")
        if not value or any(not p or not p.replace("_", "a").isalnum() for p in parts):
            raise ValueError(f"not a dotted field name: {value!r}")
        return value

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> FieldMapping:
        if not self.paths or any(not p.strip("/") for p in self.paths):
            raise ValueError(f"field {self.field!r}: paths must be non-empty HDF5 paths")
        if self.units is not None and self.type not in ("float", "int", "value"):
            raise ValueError(f"field {self.field!r}: units only apply to numbers")
        return self


class IndexerSettings(BaseModel):
    """``[indexers]`` section of the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: tuple[str, ...] | None = Field(
        default=None, description="Names of the indexers to use (default: every one installed)."
    )
    isolation: Literal["process", "inline"] = Field(
        default="process",
        description="'process' reads files in a worker process that is killed at the time "
        "bound; 'inline' reads in the caller (tests, debugging: only cooperative bounds).",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Worker processes reading files in parallel (default: min(4, CPUs)). "
        "Processes, not threads: h5py serialises threads behind one lock.",
    )
    timeout_s: float = Field(default=TIMEOUT_S, gt=0, description="Time bound per file.")
    max_memory_mb: int = Field(
        default=MAX_MEMORY_MB, ge=0, description="Address-space bound of the reader (0: none)."
    )
    max_array_bytes: int = Field(default=MAX_ARRAY_BYTES, ge=0)
    max_objects: int = Field(default=MAX_OBJECTS, ge=1)
    max_attributes: int = Field(default=MAX_ATTRIBUTES, ge=0)
    max_summary_objects: int = Field(default=MAX_SUMMARY_OBJECTS, ge=0)
    max_linked_files: int = Field(default=MAX_LINKED_FILES, ge=0)
    retries: int = Field(default=RETRIES, ge=0, le=10)
    retry_delay_s: float = Field(default=RETRY_DELAY_S, ge=0)
    follow_external_links: bool = Field(
        default=True,
        description="Open linked files (read-only) for entries and detector data shapes.",
    )
    link_root: str | None = Field(
        default=None,
        description="External links are followed only to files whose real path lies below "
        "this directory (links elsewhere are recorded, never opened). catalogd run and scan "
        "set it to the data root; None: anywhere.",
    )
    link_scope_depth: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="With link_root: external links are followed only to files in the "
        "linking file's own directory this many levels below link_root, and only those are "
        "checked for existence; a file less deep follows none. catalogd run, scan and "
        "extract set it, when unset, to the [layout] level of the proposal (3 by default: a "
        "file links only inside its own proposal). 0 or None: anywhere below link_root.",
    )
    keep_emails: bool = Field(default=False, description="Keep NXuser e-mail addresses.")
    hdf5_suffixes: tuple[str, ...] = Field(
        default=HDF5_SUFFIXES,
        description="A file with one of these suffixes that is not HDF5 is reported as an error.",
    )
    mappings: tuple[FieldMapping, ...] = Field(
        default=(), description="Site fields, added to (or overriding) the default mapping."
    )
    use_default_mappings: bool = True

    @field_validator("hdf5_suffixes")
    @classmethod
    def _suffixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in value)
