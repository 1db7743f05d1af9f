"""The API's request and response models: what goes over the wire, and nothing more.

Request models (query parameters) validate what a caller may ask; response models say
exactly what a caller is told, so the OpenAPI description is accurate and no internal
field (access groups, inode, uid) leaks by accident. Items are built with
:func:`catalogd.document.rendered`, the rendering of ``catalogd search --json``:
paths as text with ``\\xNN`` for bytes that are not UTF-8 and their exact bytes in
``path_b64``, times as ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as dt
import stat
from typing import Any, Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from catalogd.document import FileDocument, display_path, rendered
from catalogd.store.base import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

SortOrder = Literal[
    "path",
    "mtime",
    "size",
    "start_time",
    "indexed_at",
    "-path",
    "-mtime",
    "-size",
    "-start_time",
    "-indexed_at",
]
Kind = Literal["nexus", "hdf5", "other"]
#: Longest free-text query and filter value accepted.
MAX_QUERY_LENGTH = 1000
MAX_PATH_LENGTH = 4096
#: Text parameters may hold anything but NUL (refused by ``SearchParams._printable`` with
#: its own message); the pattern says so in the OpenAPI description.
NO_NUL: JsonDict = {"pattern": r"^[^\x00]*$"}


# -- requests -------------------------------------------------------------------------------
class SearchParams(BaseModel):
    """``GET /api/v1/search`` query parameters."""

    model_config = ConfigDict(extra="forbid")

    q: str | None = Field(
        default=None,
        max_length=MAX_QUERY_LENGTH,
        json_schema_extra=NO_NUL,
        description="Free text: every term must occur (partial words match, any case) in "
        "a file's name, path, proposal, titles or samples.",
    )
    beamline: str | None = Field(default=None, max_length=255, json_schema_extra=NO_NUL)
    proposal: str | None = Field(default=None, max_length=255, json_schema_extra=NO_NUL)
    visit: str | None = Field(default=None, max_length=255, json_schema_extra=NO_NUL)
    user_type: str | None = Field(default=None, max_length=255, json_schema_extra=NO_NUL)
    kind: Kind | None = None
    path_prefix: str | None = Field(
        default=None,
        max_length=MAX_PATH_LENGTH,
        pattern=r"^/[^\x00]*$",
        description="Only files at or below this absolute directory (or this file).",
    )
    start_from: str | None = Field(
        default=None, description="Measurement start on or after (ISO 8601 date or time)."
    )
    start_to: str | None = Field(
        default=None,
        description="Measurement start on or before (ISO 8601 date or time; a date "
        "includes the whole day).",
    )
    sort: SortOrder = "path"
    size: int = Field(default=DEFAULT_PAGE_SIZE, ge=0, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(
        default=None, max_length=8192, description="next_cursor of the previous page."
    )
    collapse: bool = Field(
        default=True,
        description="Leave out detector data files whose master file is in the catalogue.",
    )

    @field_validator("start_from", "start_to")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        # Normalised to the extended form the catalogue holds (2017-11-22T08:00:00),
        # since start times are compared as text.
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("must be an ISO 8601 date or date and time") from None

    @field_validator("q", "beamline", "proposal", "visit", "user_type", "path_prefix")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class ViolationParams(BaseModel):
    """``GET /api/v1/violations`` query parameters."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["open", "resolved", "all"] = "open"
    path_prefix: str | None = Field(default=None, max_length=MAX_PATH_LENGTH, pattern=r"^/")
    format: Literal["json", "csv"] = "json"


# -- responses ------------------------------------------------------------------------------
class FileItem(BaseModel):
    """One file, as a caller allowed to see it is told about it."""

    id: str = Field(description="The document id (32 hex digits).")
    path: str = Field(description="The path as text; bytes that are not UTF-8 as \\xNN.")
    path_b64: str | None = Field(
        default=None, description="The exact path bytes, base64, when it is not UTF-8."
    )
    name: str
    size: int
    mtime: str | None = Field(description="Modification time, ISO 8601 (UTC).")
    owner: str | None
    group: str | None
    mode_octal: str = Field(description="Permission bits with setuid, setgid and sticky.")
    file_type: Literal["file", "directory", "symlink", "other"]
    level: str
    user_type: str | None = None
    beamline: str | None = None
    proposal: str | None = None
    visit: str | None = None
    visit_date: str | None = None
    area: str | None = None
    inner_path: str | None = None
    kind: str
    title: str | None = None
    start_time: str | None = None
    entries: list[dict[str, Any]] = Field(description="NeXus entries, as catalogd extract.")
    role: str | None = Field(default=None, description="HDF5 role: master or data.")
    master: str | None = Field(default=None, description="A data file's master file.")
    error: str | None = Field(default=None, description="Why metadata could not be read.")
    indexed_at: str | None = Field(description="When the file became searchable (ISO 8601).")

    @classmethod
    def of(cls, doc: FileDocument) -> FileItem:
        data = rendered(doc, _RENDERED)
        for name in _DISPLAYED:
            if data[name] is not None:
                data[name] = display_path(data[name])
        metadata = doc.metadata if isinstance(doc.metadata, dict) else {}
        master = metadata.get("master")
        role = metadata.get("role")
        data["file_type"] = _file_type(doc.mode)
        data["master"] = display_path(master) if isinstance(master, str) else None
        data["role"] = role if isinstance(role, str) else None
        return cls.model_validate(data)


#: FileItem's fields that are the document's, rendered as to_json renders them (only
#: these: rendering all of to_json's took half of building an item); those of the
#: layout shown as paths are (their undecodable bytes as \\xNN).
_RENDERED = tuple(
    name for name in FileItem.model_fields if name not in ("file_type", "master", "role")
)
_DISPLAYED = ("user_type", "beamline", "proposal", "visit", "area")


def json_response(model: BaseModel) -> Response:
    """``model`` as the JSON answer FastAPI's ``response_model`` sends for it (the same
    bytes: pydantic's serialiser), without its second validation of a model already
    validated, which FastAPI runs in the thread pool for a sync route: one hand-off to a
    thread and back per answer saved."""
    return Response(model.model_dump_json(by_alias=True), media_type="application/json")


class SearchResponse(BaseModel):
    total: int = Field(description="Files matching, among those the caller may see.")
    items: list[FileItem]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: last.")
    facets: dict[str, dict[str, int]] = Field(
        description="Facet -> value -> count, over every match the caller may see."
    )


class ViolationItem(BaseModel):
    path: str
    path_b64: str | None = None
    rule: str
    severity: str
    expected: str | None
    actual: str | None
    message: str | None
    user_type: str | None
    beamline: str | None
    proposal: str | None
    visit: str | None
    first_seen: str | None
    last_seen: str | None
    resolved_at: str | None


class ViolationsResponse(BaseModel):
    total: int
    items: list[ViolationItem]


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["ok", "unavailable", "not configured", "not checked"]]


def _file_type(mode: int) -> Literal["file", "directory", "symlink", "other"]:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"
