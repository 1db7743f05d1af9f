"""Nothing leaks: for every caller, the API shows exactly the documents the caller's
effective groups may see, through the SQLite store and the Elasticsearch store alike.

One random catalogue per store kind and module (a fixed seed: the same files every run),
written to disk and classified by the real layout, so each document's access groups come
from its path exactly as the scanner gives them. It spans every user type (``proprietary``
included), several beamlines and proposals, files where the layout expects directories
(a beamline's stray files: the beamline group's; above a beamline or outside the layout:
nobody's), names that are not UTF-8, and datasets (masters naming their data files, and
one master naming a file of another proposal, which must not make that file its part).

Hypothesis then varies the caller and the question. A caller is a user of a directory
that answers from memory (:class:`MemoryDirectory`): random direct memberships, the
site's nesting (a beamline staff group is a member of its non-proprietary proposal
groups) and random extra nesting, resolved transitively with a cycle guard. A question
is a random mix of free text, filters, sort, page size and collapse. The expectation is
computed apart from the store's access filter: the operator's unfiltered search for the
same question, cut down to documents whose access groups meet the caller's effective
groups. Checked, over every page (following ``next_cursor``): the items, the total, the
facets (values and counts), the master paths shown on data files, and ``files/{id}``
(404 with the body of an id that does not exist for every document the caller may not
see, the document for every one they may).

The fixed real-directory case: the same catalogue's LDAP proposals, every user of
``tests/ldap_fixtures.py``, through :class:`api.ldap.LdapDirectory` against the session's
slapd, in both group layouts, each user's visible set checked against the effective
groups written out by hand in :data:`ldap_fixtures.EXPECTED`.
"""

from __future__ import annotations

import os
import posixpath
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ldap_fixtures
import pytest
from api_support import Clock, TestClient, basic, client, settings
from es_node import shared_node
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from slapd_node import SlapdNode

from api.app import create_app
from api.ldap import LdapDirectory
from catalogd.config import Settings
from catalogd.document import KIND_HDF5, KIND_NEXUS, DocumentBuilder, FileDocument, display_path
from catalogd.identity import NameCache
from catalogd.layout import DEFAULT_STRICT_USER_TYPES
from catalogd.store.base import DEFAULT_FACETS, MAX_PAGE_SIZE, SearchQuery, Store
from catalogd.store.elasticsearch import ElasticsearchStore
from catalogd.store.sqlite import SQLiteStore

JSONDict = dict[str, Any]
SEED = 20171122
NOW = 1781524800.0
PASSWORD = "pw-of-every-generated-user"
STORE_KINDS = ("sqlite", "elasticsearch")
#: (user type, beamline, proposal): the proposals of the LDAP fixtures first, then others.
PROPOSALS: tuple[tuple[str, str, str], ...] = (
    ("visitor", "biomax", "20170251"),
    ("visitor", "biomax", "20180042"),
    ("proprietary", "biomax", "20190007"),
    ("visitor", "biomax", "20170300"),
    ("visitor", "nanomax", "20200012"),
    ("staff", "biomax", "20220001"),
    ("visitor", "balder", "20230001"),
    ("visitor", "balder", "20230002"),
    ("visitor", "balder", "20230003"),
    ("visitor", "balder", "20230004"),
    ("proprietary", "nanomax", "20240100"),
    ("staff", "nanomax", "20240200"),
    ("visitor", "nanomax", "20240300"),
    ("proprietary", "balder", "20240400"),
    # one proposal number under two beamlines: both share its group, as the layout says
    ("visitor", "nanomax", "20170251"),
)
BEAMLINES = ("biomax", "nanomax", "balder")
WORDS = (
    "lysozyme",
    "insulin",
    "thaumatin",
    "ferritin",
    "myoglobin",
    "secret",
    "rotation",
    "grid",
    "Café",
    "Straße",
    "helix",
)
EXTRA_GROUPS = ("data-auditors", "catalogd-admins", "unrelated", "users")


# -- the catalogue ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Corpus:
    root: Path
    docs: dict[str, FileDocument]

    def visible(self, groups: frozenset[str]) -> set[str]:
        """The ids ``groups`` may see: access groups from the path, met by the groups."""
        return {i for i, doc in self.docs.items() if groups & set(doc.access_groups)}

    @property
    def proposal_groups(self) -> tuple[str, ...]:
        return tuple(sorted({f"{p}-group" for _, _, p in PROPOSALS}))

    def directories(self) -> list[str]:
        """Every directory holding a document, and their ancestors up to the root."""
        found: set[str] = set()
        for doc in self.docs.values():
            parent = posixpath.dirname(doc.path)
            while parent.startswith(str(self.root)):
                found.add(parent)
                parent = posixpath.dirname(parent)
        return sorted(found)


def _title(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(1, 3))) + f" scan {rng.randint(1, 99)}"


def build_corpus(base: Path) -> Corpus:
    """The random (seeded) tree, written to disk, and its documents as the scanner builds
    them (the real layout gives level, layout fields and access groups)."""
    rng = random.Random(SEED)
    root = base / "data"
    layout = Settings().layout_for(str(root), str(root))
    builder = DocumentBuilder(layout, NameCache(), lambda: NOW - 3600)
    docs: dict[str, FileDocument] = {}

    def add(relative: str | bytes, **changes: Any) -> FileDocument:
        raw = os.fsencode(root) + b"/" + os.fsencode(relative)
        os.makedirs(os.path.dirname(raw), exist_ok=True)
        with open(raw, "wb") as fh:
            fh.write(b"x" * rng.randint(1, 64))
        doc = builder.build(os.fsdecode(raw), os.lstat(raw))
        if changes:
            doc = doc.with_changes(**changes)
        docs[doc.id] = doc
        return doc

    for user_type, beamline, proposal in PROPOSALS:
        for _ in range(rng.randint(1, 2)):
            day = rng.randint(1, 28)
            visit = f"{proposal[:4]}{rng.randint(1, 12):02d}{day:02d}{rng.randint(0, 23):02d}"
            for area in ("raw", "process"):
                directory = f"{user_type}/{beamline}/{proposal}/{visit}/{area}"
                for n in range(rng.randint(1, 4)):
                    if rng.random() < 0.6:
                        title = _title(rng)
                        entry = {
                            "name": "entry",
                            "title": title,
                            "start_time": f"{visit[:4]}-{visit[4:6]}-{visit[6:8]}T08:00:00",
                            "definition": "NXmx",
                            "sample": {"name": rng.choice(WORDS)},
                        }
                        name = f"{directory}/{rng.choice(WORDS)}_{n:04d}.nxs"
                        add(name, kind=KIND_NEXUS, entries=(entry,))
                    else:
                        add(f"{directory}/notes_{n}.txt")
                if area == "raw" and rng.random() < 0.5:
                    data = [
                        add(f"{directory}/dataset_data_{k:06d}.h5", kind=KIND_HDF5)
                        for k in range(1, 3)
                    ]
                    add(
                        f"{directory}/dataset_master.h5",
                        kind=KIND_NEXUS,
                        entries=({"name": "entry", "title": _title(rng)},),
                        metadata={"role": "master", "data_files": [d.path for d in data]},
                    )
        add(f"{user_type}/{beamline}/{proposal}/README_{proposal}.txt")  # at proposal level
    # A master that names a file of another proposal: that file is not made its part.
    victim = next(d for d in docs.values() if d.proposal == "20180042" and d.area == "raw")
    add(
        "visitor/biomax/20170251/2017010100/raw/greedy_master.h5",
        kind=KIND_NEXUS,
        entries=({"name": "entry", "title": "greedy master"},),
        metadata={"role": "master", "data_files": [victim.path]},
    )
    for beamline in BEAMLINES:  # files where the layout expects directories
        add(f"visitor/{beamline}/stray_{beamline}.txt")
        add(f"proprietary/{beamline}/stray_secret.txt")
    add("visitor/orphan.txt")  # above a beamline: nobody's
    add("root_file.txt")
    add("guest/biomax/20170251/2017112208/raw/outside_layout.nxs")  # unknown user type
    add(b"visitor/biomax/20170251/2017112208/raw/caf\xe9_latin1.h5")  # not UTF-8
    add(b"visitor/biomax/20180042/2018030112/raw/secr\xe9t_latin1.h5")
    return Corpus(root=root, docs=docs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("leaks"))


def open_filled(kind: str, corpus: Corpus, directory: Path) -> Store:
    store: Store
    if kind == "sqlite":
        store = SQLiteStore(str(directory / "catalog.db"))
    else:
        node = shared_node()  # started on first use, once per session
        store = ElasticsearchStore.from_url(node.store_url(node.unique_prefix()))
    store.put(corpus.docs.values())
    store.flush()
    return store


@pytest.fixture(scope="module", params=STORE_KINDS)
def filled(
    request: pytest.FixtureRequest, corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    store = open_filled(request.param, corpus, tmp_path_factory.mktemp("store"))
    try:
        yield store
    finally:
        store.close()
        if isinstance(store, ElasticsearchStore):
            shared_node().drop(store.prefix)


# -- the directory ----------------------------------------------------------------------------
@dataclass
class MemoryDirectory:
    """A directory answering from memory: users' direct groups and group nesting (child
    group -> the groups it is a member of), resolved transitively with a cycle guard."""

    direct: dict[str, frozenset[str]] = field(default_factory=dict)
    parents: dict[str, frozenset[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authenticate(self, user: str, password: str) -> bool:
        return password == PASSWORD and user in self.direct

    def groups_of(self, user: str) -> frozenset[str]:
        with self._lock:
            seen: set[str] = set()
            todo = list(self.direct.get(user, frozenset()))
            while todo:
                group = todo.pop()
                if group not in seen:
                    seen.add(group)
                    todo.extend(self.parents.get(group, frozenset()))
            return frozenset(seen)

    def ping(self) -> None:
        return None


def site_nesting() -> dict[str, set[str]]:
    """Each beamline's staff group is a member of its proposal groups, except where the
    user type is strict (``proprietary``)."""
    parents: dict[str, set[str]] = {}
    for user_type, beamline, proposal in PROPOSALS:
        if user_type not in DEFAULT_STRICT_USER_TYPES:
            parents.setdefault(beamline, set()).add(f"{proposal}-group")
    return parents


@dataclass(frozen=True)
class Caller:
    name: str
    direct: frozenset[str]
    extra_nesting: tuple[tuple[str, str], ...]

    def install(self, directory: MemoryDirectory) -> frozenset[str]:
        """Make this caller the directory's user; their effective groups."""
        parents = site_nesting()
        for child, parent in self.extra_nesting:
            parents.setdefault(child, set()).add(parent)
        with directory._lock:
            directory.parents = {k: frozenset(v) for k, v in parents.items()}
            directory.direct = {self.name: self.direct}
        return directory.groups_of(self.name)


def _universe() -> list[str]:
    return sorted({f"{p}-group" for _, _, p in PROPOSALS} | set(BEAMLINES) | set(EXTRA_GROUPS))


GROUPS = _universe()
callers = st.builds(
    Caller,
    name=st.sampled_from(["alice", "bob", "carol", "x" * 40, "ünïcode"]),
    direct=st.frozensets(st.sampled_from(GROUPS), max_size=4),
    extra_nesting=st.lists(
        st.tuples(st.sampled_from(GROUPS), st.sampled_from(GROUPS)), max_size=3
    ).map(tuple),
)


# -- the questions ----------------------------------------------------------------------------
@st.composite
def questions(draw: st.DrawFn, corpus: Corpus) -> JSONDict:
    """Query parameters of /api/v1/search: free text, filters, order, page size."""
    word = draw(st.sampled_from(WORDS))
    text = draw(
        st.sampled_from(
            [
                None,
                word,
                word[: draw(st.integers(1, len(word)))],  # partial words
                word.upper(),
                f"{word[:4]} scan",
                "scan",
                "20170251",
                "notes",
                "stray",
                "secr",
                "data",
                "latin1",
            ]
        )
    )
    params: JSONDict = {
        "q": text,
        "beamline": draw(st.sampled_from([None, *BEAMLINES, "nosuchbeamline"])),
        "proposal": draw(st.sampled_from([None, *sorted({p for _, _, p in PROPOSALS})])),
        "user_type": draw(st.sampled_from([None, "visitor", "staff", "proprietary", "guest"])),
        "kind": draw(st.sampled_from([None, "nexus", "hdf5", "other"])),
        "path_prefix": draw(st.sampled_from([None, *corpus.directories()])),
        "sort": draw(st.sampled_from(["path", "-path", "size", "-mtime", "start_time"])),
        "size": draw(st.sampled_from([1, 3, 7, 25, MAX_PAGE_SIZE])),
        "collapse": draw(st.booleans()),
    }
    # Most questions leave most filters out, so that callers see something.
    for name in ("beamline", "proposal", "user_type", "kind", "path_prefix"):
        if draw(st.integers(0, 3)) != 0:
            params[name] = None
    return {k: v for k, v in params.items() if v is not None}


def unfiltered(store: Store, params: JSONDict) -> list[FileDocument]:
    """The operator's view of the question (no access filter), every page."""
    query = SearchQuery(
        text=params.get("q"),
        beamline=params.get("beamline"),
        proposal=params.get("proposal"),
        user_type=params.get("user_type"),
        kind=params.get("kind"),
        path_prefix=params.get("path_prefix"),
        collapse=params.get("collapse", True),
        size=MAX_PAGE_SIZE,
    )
    found: list[FileDocument] = []
    while True:
        result = store.search(query)
        found += result.items
        if result.next_cursor is None:
            return found
        query = replace(query, cursor=result.next_cursor)


def all_pages(http: TestClient, headers: dict[str, str], params: JSONDict) -> list[JSONDict]:
    pages: list[JSONDict] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get("/api/v1/search", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page: JSONDict = response.json()
        pages.append(page)
        assert len(page["items"]) <= params.get("size", 50)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= len(PROPOSALS) * 200, "the cursor never ends"


def expected_facets(docs: list[FileDocument]) -> dict[str, dict[str, int]]:
    facets: dict[str, dict[str, int]] = {}
    for name in DEFAULT_FACETS:
        counts = Counter(
            display_path(getattr(d, name)) for d in docs if getattr(d, name) is not None
        )
        facets[name] = dict(counts)
    return facets


def absent_body(http: TestClient, headers: dict[str, str]) -> JSONDict:
    response = http.get(f"/api/v1/files/{'0' * 32}", headers=headers)
    assert response.status_code == 404
    body: JSONDict = response.json()
    return body


def check_caller_sees_exactly_their_share(
    http: TestClient,
    store: Store,
    corpus: Corpus,
    headers: dict[str, str],
    groups: frozenset[str],
    params: JSONDict,
) -> None:
    """The whole check for one caller and one question; see the module docstring."""
    visible = corpus.visible(groups)
    expected = [d for d in unfiltered(store, params) if d.id in visible]
    pages = all_pages(http, headers, params)
    shown = [item["id"] for page in pages for item in page["items"]]
    assert len(shown) == len(set(shown)), "a document came twice"
    assert set(shown) <= visible, "a hit outside the caller's rights"
    assert set(shown) == {d.id for d in expected}, "a visible match was not found"
    visible_paths = {display_path(corpus.docs[i].path) for i in visible}
    for page in pages:
        assert page["total"] == len(expected)
        assert page["facets"] == expected_facets(expected)
        for item in page["items"]:
            assert item["path"] == display_path(corpus.docs[item["id"]].path)
            if item["master"] is not None:  # a data file names only a master one may see
                assert item["master"] in visible_paths


def check_files_endpoint(
    http: TestClient, corpus: Corpus, headers: dict[str, str], visible: set[str], ids: list[str]
) -> None:
    absent = absent_body(http, headers)
    for doc_id in ids:
        response = http.get(f"/api/v1/files/{doc_id}", headers=headers)
        if doc_id in visible:
            assert response.status_code == 200, response.text
            assert response.json()["id"] == doc_id
        else:
            assert response.status_code == 404
            assert response.json() == absent
            assert response.headers.get("content-length") == str(len(response.content))
            assert corpus.docs[doc_id].name not in response.text


# -- the property -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def memory_directory() -> MemoryDirectory:
    return MemoryDirectory()


@pytest.fixture(scope="module")
def http(filled: Store, memory_directory: MemoryDirectory) -> TestClient:
    return client(create_app(settings(), filled, directory=memory_directory, clock=Clock()))


@given(data=st.data(), caller=callers)
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_caller_sees_exactly_what_their_groups_allow(
    http: TestClient,
    filled: Store,
    corpus: Corpus,
    memory_directory: MemoryDirectory,
    caller: Caller,
    data: st.DataObject,
) -> None:
    groups = caller.install(memory_directory)
    headers = basic(caller.name, PASSWORD)
    params = data.draw(questions(corpus), label="question")
    check_caller_sees_exactly_their_share(http, filled, corpus, headers, groups, params)
    all_ids = sorted(corpus.docs)
    probes = data.draw(st.lists(st.sampled_from(all_ids), min_size=1, max_size=8), label="ids")
    check_files_endpoint(http, corpus, headers, corpus.visible(groups), probes)


def test_the_catalogue_exercises_every_kind_of_visibility(corpus: Corpus) -> None:
    """The corpus holds what the property needs to mean something: files of each user
    type, files nobody may see, beamline-group files, datasets, and a proprietary
    proposal that the beamline's nested staff may not see."""
    docs = list(corpus.docs.values())
    assert len(docs) > 150
    assert {d.user_type for d in docs} >= {"visitor", "staff", "proprietary"}
    assert any(d.access_groups == () for d in docs)
    assert any(d.access_groups == ("biomax",) for d in docs)
    assert sum(1 for d in docs if d.metadata.get("role") == "master") >= 3
    nesting = {group: frozenset(parents) for group, parents in site_nesting().items()}
    staff = MemoryDirectory(direct={"s": frozenset({"biomax"})}, parents=nesting)
    seen = corpus.visible(staff.groups_of("s"))
    assert any(corpus.docs[i].proposal == "20170251" for i in seen)
    assert not any(corpus.docs[i].proposal == "20190007" for i in seen)


def test_every_file_is_answered_for_its_own_groups_and_no_one_elses(
    http: TestClient, corpus: Corpus, memory_directory: MemoryDirectory
) -> None:
    """Exhaustively, for a proposal group of two beamlines, a proprietary one, a staff one
    and a beamline group, each alone: files/{id} over the whole catalogue."""
    for group in ["20170251-group", "20190007-group", "20240200-group", "biomax"]:
        caller = Caller(name="alice", direct=frozenset({group}), extra_nesting=())
        caller.install(memory_directory)
        memory_directory.parents = {}  # the group alone, no nesting
        headers = basic("alice", PASSWORD)
        visible = corpus.visible(frozenset({group}))
        assert visible, group
        check_files_endpoint(http, corpus, headers, visible, sorted(corpus.docs))


def test_a_caller_in_thousands_of_groups_sees_exactly_their_share(
    http: TestClient, filled: Store, corpus: Corpus, memory_directory: MemoryDirectory
) -> None:
    """Thousands of groups (beyond what a store binds one by one), with and without a
    filter that makes the store check each candidate instead of building the set."""
    many = frozenset({f"other-{n}-group" for n in range(3000)} | {"20180042-group", "bl"})
    caller = Caller(name="bob", direct=many, extra_nesting=())
    groups = caller.install(memory_directory)
    headers = basic("bob", PASSWORD)
    visit_file = next(
        d.path for d in corpus.docs.values() if d.proposal == "20180042" and d.area == "process"
    )
    for params in (
        {"size": 25},
        {"proposal": "20180042", "size": 3},
        {"proposal": "20170251"},
        {"beamline": "biomax", "q": "secr", "collapse": False},
        {"path_prefix": str(corpus.root / "visitor" / "biomax" / "20180042")},
        {"path_prefix": posixpath.dirname(visit_file)},  # fewer files than bob sees
        {"proposal": "20230003"},  # a small proposal that is not bob's
    ):
        check_caller_sees_exactly_their_share(http, filled, corpus, headers, groups, params)
    check_files_endpoint(http, corpus, headers, corpus.visible(groups), sorted(corpus.docs))


# -- the real directory -----------------------------------------------------------------------
@pytest.mark.parametrize("layout", ldap_fixtures.LAYOUTS)
def test_real_directory_users_see_exactly_their_effective_groups_share(
    filled: Store, corpus: Corpus, slapd: SlapdNode, layout: str
) -> None:
    config = settings().model_copy(update={"ldap": slapd.settings(layout)})
    http = client(create_app(config, filled, directory=LdapDirectory(config.ldap), clock=Clock()))
    everything: JSONDict = {"size": MAX_PAGE_SIZE, "collapse": False}
    for user in ldap_fixtures.USERS:
        groups = ldap_fixtures.EXPECTED[layout][user.name]
        headers = basic(user.name, user.password)
        check_caller_sees_exactly_their_share(http, filled, corpus, headers, groups, everything)
        check_caller_sees_exactly_their_share(
            http, filled, corpus, headers, groups, {"q": "scan", "size": 7}
        )
        invisible = sorted(set(corpus.docs) - corpus.visible(groups))[:15]
        check_files_endpoint(http, corpus, headers, corpus.visible(groups), invisible)
    carol = corpus.visible(ldap_fixtures.EXPECTED[layout]["carol"])
    proposals = {corpus.docs[i].proposal for i in carol}
    assert "20190007" not in proposals  # proprietary: the staff group is not nested in it
    assert ("20170251" in proposals) == (layout == "rfc2307bis")
