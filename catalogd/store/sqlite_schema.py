"""The SQLite store's schema and migrations, how values become columns, and its errors.

The schema version is SQLite's ``PRAGMA user_version``: ``MIGRATIONS[i]`` takes a
database at version ``i`` to ``i + 1``, each step in its own transaction, so a failed
step leaves the database at the version before it. A database newer than the code is
refused rather than guessed at.

:data:`ERROR_MAP` says what each ``sqlite3`` exception becomes; the SQLite modules
translate every one of them at their edge, so none leaves the package.

Column encodings (see :func:`enc_text`): a path is a BLOB of its exact bytes
(:func:`os.fsencode`); other strings are TEXT, or, when they carry lone surrogates (names
that are not valid UTF-8), a BLOB of their UTF-8 bytes with ``surrogatepass``, so every
value round trips and equality stays exact. JSON columns escape non-ASCII text.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from catalogd.document import KIND_OTHER, FileDocument, display_path
from catalogd.errors import StoreError, StoreUnavailable
from catalogd.store import links
from catalogd.violations import Violation

#: Every sqlite3 exception class, and what it becomes (a test checks none is missing).
ERROR_MAP: dict[type[Exception], type[StoreError]] = {
    sqlite3.Warning: StoreError,
    sqlite3.Error: StoreError,
    sqlite3.InterfaceError: StoreError,
    sqlite3.DatabaseError: StoreError,
    sqlite3.DataError: StoreError,
    sqlite3.OperationalError: StoreUnavailable,  # locked, I/O error, disk full, cannot open
    sqlite3.IntegrityError: StoreError,
    sqlite3.InternalError: StoreError,
    sqlite3.ProgrammingError: StoreError,
    sqlite3.NotSupportedError: StoreError,
}
SQLITE_ERRORS = (sqlite3.Error, sqlite3.Warning)


def translate_error(exc: Exception, where: str) -> StoreError:
    """The StoreError for a sqlite3 exception, naming the store."""
    target = next((ERROR_MAP[c] for c in type(exc).__mro__ if c in ERROR_MAP), StoreError)
    name = getattr(exc, "sqlite_errorname", None)
    return target(f"SQLite store {where}: {exc}" + (f" ({name})" if name else ""))


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Raise sqlite3's exceptions as StoreError."""
    try:
        yield
    except SQLITE_ERRORS as exc:
        raise translate_error(exc, where) from exc


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema's history."""

    description: str
    statements: tuple[str, ...]

    def apply(self, conn: sqlite3.Connection) -> None:
        for statement in self.statements:
            conn.execute(statement)


_DOCUMENTS = Migration(
    "documents, their access groups and a trigram full-text index",
    (
        """CREATE TABLE docs (
            file_id INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            path BLOB NOT NULL,          -- os.fsencode(path): the exact bytes
            path_text TEXT NOT NULL,     -- display_path(path): sorting, ranges
            name TEXT, size INTEGER, mtime REAL, ctime REAL, inode INTEGER, dev INTEGER,
            uid INTEGER, gid INTEGER, owner TEXT, group_name TEXT, mode INTEGER, level TEXT,
            user_type TEXT, beamline TEXT, proposal TEXT, visit TEXT, visit_date TEXT,
            area TEXT, inner_path TEXT,
            access_groups TEXT NOT NULL, -- JSON array, as given
            kind TEXT, entries TEXT NOT NULL, metadata TEXT NOT NULL, error TEXT,
            indexed_at REAL,
            start_time TEXT,             -- measurement start, NULL when unknown
            start_key TEXT NOT NULL      -- start_time or '': the sort value
        )""",
        # Every index costs insert time (measured: 5-10% each), so only those that narrow
        # a query: the path order and subtree ranges (on the text, see sqlite_query),
        # beamline, proposal (and visit within it), and the measurement start, whose sort
        # has many ties. user_type and kind have a handful of values each: scanning wins.
        "CREATE INDEX docs_path_text ON docs(path_text)",
        "CREATE INDEX docs_beamline ON docs(beamline)",
        "CREATE INDEX docs_proposal ON docs(proposal, visit)",
        "CREATE INDEX docs_start ON docs(start_key, id)",
        """CREATE TABLE doc_groups (
            file_id INTEGER NOT NULL,
            grp TEXT NOT NULL,
            PRIMARY KEY (file_id, grp)
        ) WITHOUT ROWID""",
        "CREATE INDEX doc_groups_grp ON doc_groups(grp)",
        # rowid = docs.file_id; text = fts_text(doc.search_text()). No ranking, so no
        # column sizes (columnsize=0: measured 10% faster inserts).
        "CREATE VIRTUAL TABLE docs_fts USING fts5("
        "text, tokenize='trigram case_sensitive 1', columnsize=0)",
    ),
)

_VIOLATIONS = Migration(
    "policy violations with their history",
    (
        """CREATE TABLE violations (
            violation_id INTEGER PRIMARY KEY,
            path BLOB NOT NULL, rule TEXT NOT NULL, severity TEXT, expected TEXT,
            actual TEXT, message TEXT, user_type TEXT, beamline TEXT, proposal TEXT,
            visit TEXT, first_seen REAL, last_seen REAL, resolved_at REAL
        )""",
        "CREATE INDEX violations_open ON violations(path, rule) WHERE resolved_at IS NULL",
        "CREATE INDEX violations_path ON violations(path)",
    ),
)

_LINKS = Migration(
    "the data files each master names (datasets)",
    (
        # One row per (master, named path); a file's master is found by a join on its
        # path when it is read (DOC_SELECT), so neither side's order of arrival matters.
        # Masters stored before this version have no rows until they are extracted again.
        """CREATE TABLE doc_links (
            master_id INTEGER NOT NULL,  -- docs.file_id of the master
            data_path BLOB NOT NULL,     -- os.fsencode(path) of the named file
            PRIMARY KEY (master_id, data_path)
        ) WITHOUT ROWID""",
        "CREATE INDEX doc_links_data ON doc_links(data_path)",
    ),
)

#: The schema's history, oldest first; append, never edit a released step.
MIGRATIONS: tuple[Migration, ...] = (_DOCUMENTS, _VIOLATIONS, _LINKS)
SCHEMA_VERSION = len(MIGRATIONS)


# -- the first load into an empty catalogue --------------------------------------------
#: While this table exists, a bulk load is under way (:func:`begin_bulk`): the secondary
#: indexes below are not there, and the full text of new documents waits in it (rowid =
#: docs.file_id) instead of the trigram index. Its presence is the whole state, so a
#: load cut short (a crash) is finished by the next open (:func:`end_bulk`), and every
#: writer, of any process, routes the full text by it.
BULK_PENDING = "docs_fts_pending"
#: The indexes a bulk load builds after the load, with the migrations' own statements:
#: those of the documents and their groups, and of the violations.
BULK_INDEXES: tuple[tuple[str, str, str], ...] = tuple(
    (statement.split()[2], statement.split(" ON ")[1].split("(")[0], statement)
    for migration in MIGRATIONS
    for statement in migration.statements
    if statement.startswith("CREATE INDEX ")
    and statement.split(" ON ")[1].startswith(("docs(", "doc_groups(", "violations("))
)


#: FTS5's own default of 'hashsize', and the one for the end of a bulk load.
FTS_HASH_B = 1 << 20
BULK_FTS_HASH_B = 64 << 20


def bulk_pending(conn: sqlite3.Connection) -> bool:
    """Whether a bulk load is under way (or was cut short) in this database."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (BULK_PENDING,)
    ).fetchone()
    return found is not None


def begin_bulk(conn: sqlite3.Connection) -> bool:
    """Start a bulk load, inside the caller's transaction, when the catalogue holds no
    document: drop the secondary indexes (those of the violations too when there are
    none) and create :data:`BULK_PENDING`. Returns whether a load is now under way."""
    if bulk_pending(conn):
        return True
    if conn.execute("SELECT 1 FROM docs LIMIT 1").fetchone() is not None:
        return False
    no_violations = conn.execute("SELECT 1 FROM violations LIMIT 1").fetchone() is None
    conn.execute(f"CREATE TABLE {BULK_PENDING} (file_id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
    for name, table, _ in BULK_INDEXES:
        if table != "violations" or no_violations:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
    return True


def end_bulk(conn: sqlite3.Connection) -> int:
    """Finish a bulk load, inside the caller's transaction: the pending full text into
    the trigram index in one statement, the indexes built, :data:`BULK_PENDING` dropped.
    Returns the documents it indexed (0 when no load was under way)."""
    if not bulk_pending(conn):
        return 0
    # FTS5 writes its pending terms out as a segment whenever they exceed 'hashsize'
    # (1 MiB by default), and merges those segments: one large buffer for this one
    # statement (measured, 100,000 paths: 1.33-1.51 s -> 0.77 s), then the default again.
    set_hash = "INSERT INTO docs_fts (docs_fts, rank) VALUES ('hashsize', ?)"
    conn.execute(set_hash, (BULK_FTS_HASH_B,))
    moved = conn.execute(
        f"INSERT INTO docs_fts (rowid, text) SELECT file_id, text FROM {BULK_PENDING}"
    ).rowcount
    conn.execute(set_hash, (FTS_HASH_B,))
    for _, _, statement in BULK_INDEXES:
        conn.execute(statement.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))
    conn.execute(f"DROP TABLE {BULK_PENDING}")
    return int(moved)


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(
    conn: sqlite3.Connection, where: str, migrations: Sequence[Migration] | None = None
) -> int:
    """Bring the database up to date; return its version. ``conn`` is in autocommit mode.

    Raises StoreError when the database is newer than ``migrations`` (default:
    :data:`MIGRATIONS`) knows. Safe against another process migrating at the same time.
    """
    steps = MIGRATIONS if migrations is None else migrations
    target = len(steps)
    version = user_version(conn)
    while version != target:
        if version > target:
            raise StoreError(
                f"the SQLite store {where} has schema version {version}, newer than this "
                f"catalogd knows (up to {target}): upgrade catalogd, or use another store"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = user_version(conn)  # another process may have moved it meanwhile
            if version < target:
                steps[version].apply(conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version


# -- value encodings -------------------------------------------------------------------
TextValue = str | bytes | None


def enc_text(value: str | None) -> TextValue:
    """A string as a column value: TEXT, or BLOB (UTF-8, surrogatepass) if not valid."""
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")
    return value


def dec_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return str(value)


def enc_path(path: str) -> bytes:
    """The exact bytes of a file system path; StoreError if ``path`` cannot be one."""
    try:
        return os.fsencode(path)
    except UnicodeEncodeError as exc:
        raise StoreError(f"cannot store {path!r}: it is not a file system name") from exc


def fts_text(text: str) -> str:
    """What the full-text index holds for ``text``, and what a term is looked up as.

    Lower-cased as Python does it, then one character per UTF-8 byte (surrogatepass):
    UTF-8 is self-synchronising, so ``a in b`` exactly when ``fts_text(a) in fts_text(b)``
    and the index agrees with ``term.lower() in text.lower()`` for every string. NUL
    becomes ``\xff`` (a byte UTF-8 never has): the trigram tokenizer stops at a NUL, so
    text after one would not be found.
    """
    return text.lower().encode("utf-8", "surrogatepass").decode("latin-1").replace("\x00", "\xff")


_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def _enc_u64(value: int) -> int:
    """An unsigned 64-bit number (inode, device) as SQLite's signed INTEGER."""
    return value - _U64 if value > _I64_MAX else value


def dec_u64(value: int) -> int:
    return value + _U64 if value < 0 else value


_JSON = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps builds one per call


def _json(value: Any) -> str:
    return _JSON.encode(value)


#: The JSON of access-group tuples seen (a tree has few distinct ones); bounded.
_GROUPS_JSON: dict[tuple[str, ...], str] = {}
_GROUPS_JSON_MAX = 10_000


def _groups_json(groups: tuple[str, ...]) -> str:
    """``_json(list(groups))``, computed once per distinct tuple."""
    try:
        return _GROUPS_JSON[groups]
    except KeyError:
        pass
    except TypeError:  # not hashable: not a tuple of strings; let the encoder say why
        return _json(list(groups))
    text = _json(list(groups))
    if len(_GROUPS_JSON) >= _GROUPS_JSON_MAX:
        _GROUPS_JSON.clear()
    _GROUPS_JSON[groups] = text
    return text


# -- documents ---------------------------------------------------------------------------
#: Column order of docs after file_id; also the SELECT list that row_doc reads.
DOC_COLUMNS = (
    "id", "path", "path_text", "name", "size", "mtime", "ctime", "inode", "dev", "uid",
    "gid", "owner", "group_name", "mode", "level", "user_type", "beamline", "proposal",
    "visit", "visit_date", "area", "inner_path", "access_groups", "kind", "entries",
    "metadata", "error", "indexed_at", "start_time", "start_key",
)  # fmt: skip
#: The masters that claim ``d`` (see catalogd.store.links.claims): they name its path,
#: have its access groups and visit date, and ``d`` is no master itself.
CLAIMS = (
    "FROM doc_links l JOIN docs m ON m.file_id = l.master_id "
    "WHERE l.data_path = d.path AND m.file_id != d.file_id "
    "AND m.access_groups = d.access_groups AND m.visit_date IS d.visit_date "
    "AND NOT EXISTS (SELECT 1 FROM doc_links x WHERE x.master_id = d.file_id)"
)
#: DOC_COLUMNS, then the path of the master ``d`` belongs to (the first by path) or NULL.
DOC_SELECT = (
    ", ".join(f"d.{name}" for name in DOC_COLUMNS)
    + f", (SELECT m.path {CLAIMS} ORDER BY m.path LIMIT 1)"
)


#: A document ready for the writer: ``(id, columns, full text, group rows, links)``,
#: links being, for a master, the paths of the files it names. A plain tuple: the
#: scan's walking children send rows back, and a tuple pickles with no Python call on
#: either side.
DocRow = tuple[str, tuple[object, ...], str, tuple[TextValue, ...], tuple[bytes, ...]]


def doc_row(doc: FileDocument) -> DocRow:
    try:
        start = doc.start_time
        columns = (
            doc.id, enc_path(doc.path), display_path(doc.path), enc_text(doc.name),
            doc.size, doc.mtime, doc.ctime, _enc_u64(doc.inode), _enc_u64(doc.dev),
            doc.uid, doc.gid, enc_text(doc.owner), enc_text(doc.group), doc.mode,
            enc_text(doc.level), enc_text(doc.user_type), enc_text(doc.beamline),
            enc_text(doc.proposal), enc_text(doc.visit), enc_text(doc.visit_date),
            enc_text(doc.area), enc_text(doc.inner_path), _groups_json(doc.access_groups),
            enc_text(doc.kind), _json(list(doc.entries)) if doc.entries else "[]",
            _json(doc.metadata) if doc.metadata else "{}",
            enc_text(doc.error), doc.indexed_at, enc_text(start), enc_text(start or ""),
        )  # fmt: skip
        groups = tuple(enc_text(g) for g in dict.fromkeys(doc.access_groups))
        named = tuple(enc_path(p) for p in links.data_files(doc))
        return (doc.id, columns, fts_text(doc.search_text()), groups, named)
    except (TypeError, ValueError) as exc:  # not JSON, not a file system name
        raise StoreError(f"cannot store the document for {doc.path!r}: {exc}") from exc


class PlainRows:
    """:func:`doc_row` of the documents without metadata of the files of one directory
    inside a visit (those the indexers do not read), from their stat facts, with what
    the files share encoded once: the same rows as ``doc_row`` of the documents
    :meth:`catalogd.pipeline.Documents.from_file_stat` builds, without building them
    (measured with the plain tuple rows, on the 100,000-file clean tree: the scan's user
    CPU 6.7-7.5 -> 4.9-5.3 s). ``inner`` is the directory's inner path with a trailing slash,
    ``fields`` its layout fields but the inner path, ``groups`` the files' access groups.
    """

    __slots__ = ("inner", "tail", "groups_json", "groups", "text_tail")

    def __init__(self, inner: str, fields: dict[str, Any], groups: tuple[str, ...]) -> None:
        self.inner = inner
        self.tail = tuple(
            enc_text(fields[name])
            for name in ("user_type", "beamline", "proposal", "visit", "visit_date", "area")
        )
        self.groups_json = _groups_json(groups)
        self.groups = tuple(enc_text(g) for g in dict.fromkeys(groups))
        proposal = fields["proposal"]
        self.text_tail = "\n" + fts_text(proposal) if proposal else ""

    def row(
        self,
        fs: tuple[str, int, int, int, int, int, int, int, float, float],
        owner: str | None,
        group: str | None,
        indexed_at: float,
    ) -> DocRow | None:
        """The row of the file ``fs`` (a FileStat) in this directory, or None when its
        path is not plain ASCII (then :func:`doc_row` of its document says)."""
        path, mode, ino, dev, _, uid, gid, size, mtime, ctime = fs
        if not path.isascii():
            return None
        name = path[path.rindex("/") + 1 :]
        raw = path.encode()
        doc_id = hashlib.blake2b(raw, digest_size=16).hexdigest()
        columns = (
            doc_id, raw, path, name, size, mtime, ctime, _enc_u64(ino), _enc_u64(dev), uid,
            gid, enc_text(owner), enc_text(group), mode, "inside", *self.tail,
            self.inner + name, self.groups_json, KIND_OTHER, "[]", "{}", None, indexed_at,
            None, "",
        )  # fmt: skip
        return (doc_id, columns, path.lower() + self.text_tail, self.groups, ())


def row_doc(row: Sequence[Any]) -> FileDocument:
    """The document of a row that begins with DOC_SELECT's columns (its master included)."""
    (
        doc_id, path, _path_text, name, size, mtime, ctime, inode, dev, uid, gid, owner,
        group, mode, level, user_type, beamline, proposal, visit, visit_date, area,
        inner_path, access_groups, kind, entries, metadata, error, indexed_at, _, _,
        master,
    ) = row[: len(DOC_COLUMNS) + 1]  # fmt: skip
    doc = FileDocument(
        id=doc_id,
        path=os.fsdecode(path),
        name=dec_text(name),  # type: ignore[arg-type]
        size=size,
        mtime=mtime,
        ctime=ctime,
        inode=dec_u64(inode),
        dev=dec_u64(dev),
        uid=uid,
        gid=gid,
        owner=dec_text(owner),
        group=dec_text(group),
        mode=mode,
        level=dec_text(level),  # type: ignore[arg-type]
        user_type=dec_text(user_type),
        beamline=dec_text(beamline),
        proposal=dec_text(proposal),
        visit=dec_text(visit),
        visit_date=dec_text(visit_date),
        area=dec_text(area),
        inner_path=dec_text(inner_path),
        access_groups=tuple(json.loads(access_groups)),
        kind=dec_text(kind),  # type: ignore[arg-type]
        entries=tuple(json.loads(entries)),
        metadata=json.loads(metadata),
        error=dec_text(error),
        indexed_at=indexed_at,
    )
    return links.with_master(doc, None if master is None else os.fsdecode(master))


# -- violations --------------------------------------------------------------------------
VIOLATION_FIELDS = (
    "severity", "expected", "actual", "message", "user_type", "beamline", "proposal", "visit",
)  # fmt: skip
VIOLATION_SELECT = (
    "path, rule, " + ", ".join(VIOLATION_FIELDS) + ", first_seen, last_seen, resolved_at"
)


def violation_values(v: Violation) -> tuple[TextValue, ...]:
    """The columns of VIOLATION_FIELDS for ``v``."""
    return tuple(enc_text(getattr(v, name)) for name in VIOLATION_FIELDS)


#: A finding as the writer records it: path and rule (the record's key, encoded), the
#: columns of VIOLATION_FIELDS, and its resolved_at.
ViolationRow = tuple[object, ...]


def violation_row(v: Violation) -> ViolationRow:
    """The :data:`ViolationRow` of ``v``; StoreError when its path cannot be stored."""
    path = v.path.encode() if v.path.isascii() else enc_path(v.path)
    return (path, enc_text(v.rule), *violation_values(v), v.resolved_at)


def row_violation(row: Sequence[Any]) -> Violation:
    path, rule, *texts, first_seen, last_seen, resolved_at = row
    fields: dict[str, Any] = dict(zip(VIOLATION_FIELDS, map(dec_text, texts), strict=True))
    return Violation(
        path=os.fsdecode(path),
        rule=dec_text(rule),  # type: ignore[arg-type]
        first_seen=first_seen,
        last_seen=last_seen,
        resolved_at=resolved_at,
        **fields,
    )
