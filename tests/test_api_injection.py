"""Injection: nothing a client sends is taken as syntax, and nothing widens what it sees.

* **LDAP filters.** User names made of filter and DN syntax (``*``, ``)(uid=*``, ``\\00``,
  escaped wildcards, DNs) sent in HTTP Basic against the real slapd, in both group
  layouts, with every real user's password: none logs in. Named by a service token as
  the end user, none gets a group (the answer is empty), while the real users whose
  names are such syntax (``a*``, ``o(k)``, ``b\\s``) get their own share and no more.
* **Query syntax in ``q``.** Elasticsearch query-string syntax, wildcards, field
  names (``access_groups:x``), JSON fragments, SQL and FTS5 syntax: taken as literal text
  by both stores (the hits are exactly the caller's files whose search text holds every
  term, computed here in Python), never a 5xx, never another caller's file.
* **Parameters.** Unknown parameters (``groups=``, ``access_groups=``, ...) are refused,
  never honoured; filter values made of query syntax select nothing extra.
* **Ids.** Path traversal, url-encoded, very long, non-ASCII and wildcard ids in
  ``files/{id}``: 404 with the same body as an id that does not exist.

The catalogue is the random one of :mod:`test_api_leaks` (access groups from the path).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import ldap_fixtures
import pytest
from api_support import Clock, TestClient, basic, client, settings
from slapd_node import SlapdNode
from test_api_leaks import PASSWORD, Corpus, MemoryDirectory, corpus, filled

from api.app import create_app
from api.ldap import LdapDirectory
from catalogd.store.base import MAX_PAGE_SIZE, Store

__all__ = ["corpus", "filled"]  # the module-scoped fixtures, shared with test_api_leaks

JSONDict = dict[str, Any]
PORTAL_TOKEN = "portal-injection-3b9f2c7d1e5a4086"
NOT_FOUND = {"detail": "Not Found"}
#: alice's groups in the memory directory (the proposal also runs on a second beamline).
ALICE_GROUPS = frozenset({"20170251-group"})

LDAP_NAMES = [
    "*",
    "**",
    "*)(uid=*",
    "*)(|(uid=*",
    "alice)(uid=*",
    "alice)(|(uid=*))",
    "*)(objectClass=*",
    "alice*",
    "al*",
    "*lice",
    "a*)(uid=alice",
    "\\2a",
    "a\\2a",
    "alice\\00",
    "alice\x00",
    "alice\x00)(uid=*",
    "(uid=alice)",
    "alice)",
    "(alice",
    "uid=alice,ou=people,ou=rfc2307bis,dc=example,dc=org",
    "alice,ou=people,ou=rfc2307bis,dc=example,dc=org",
    "cn=catalogd,ou=services,dc=example,dc=org",
    "alice\\",
    "o(k",
    "o(k)*",
    "b\\5cs",
    "b*",
    "nobody-in-groups)(uid=*",
]


# -- LDAP filter syntax in user names ---------------------------------------------------------
@pytest.fixture(params=ldap_fixtures.LAYOUTS)
def ldap_http(
    request: pytest.FixtureRequest, filled: Store, slapd: SlapdNode, tmp_path: Path
) -> TestClient:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'portal = "{hashlib.sha256(PORTAL_TOKEN.encode()).hexdigest()}"\n')
    config = settings(service_tokens_file=tokens, login_max_failures=100_000).model_copy(
        update={"ldap": slapd.settings(request.param)}
    )
    return client(create_app(config, filled, directory=LdapDirectory(config.ldap), clock=Clock()))


def test_filter_syntax_in_a_basic_user_name_never_logs_in(ldap_http: TestClient) -> None:
    passwords = sorted(set(ldap_fixtures.PASSWORDS.values()) | {ldap_fixtures.SERVICE_PASSWORD})
    for name in LDAP_NAMES:
        for password in passwords:
            response = ldap_http.get("/api/v1/search", headers=basic(name, password))
            assert response.status_code == 401, (name, password, response.text)


def test_filter_syntax_as_a_service_tokens_user_gets_no_groups(
    ldap_http: TestClient, corpus: Corpus
) -> None:
    for name in [n for n in LDAP_NAMES if "\x00" not in n]:
        headers = {"Authorization": f"Bearer {PORTAL_TOKEN}", "X-Catalogd-User": name}
        response = ldap_http.get("/api/v1/search", headers=headers)
        if response.status_code == 401:  # refused outright: also no bypass
            continue
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        assert (body["total"], body["items"]) == (0, []), name
        assert all(counts == {} for counts in body["facets"].values()), name


@pytest.mark.parametrize("name", ["a*", "o(k)", "b\\s"])
def test_users_named_like_filter_syntax_get_their_own_groups_only(
    ldap_http: TestClient, corpus: Corpus, name: str
) -> None:
    groups = ldap_fixtures.EXPECTED["rfc2307bis"][name]  # the same in both layouts
    expected = corpus.visible(groups)
    assert expected  # each has a proposal of its own in the catalogue
    for headers in (
        basic(name, ldap_fixtures.PASSWORDS[name]),
        {"Authorization": f"Bearer {PORTAL_TOKEN}", "X-Catalogd-User": name},
    ):
        body = ldap_http.get(
            "/api/v1/search", params={"size": MAX_PAGE_SIZE, "collapse": False}, headers=headers
        ).json()
        assert {item["id"] for item in body["items"]} == expected
        assert body["total"] == len(expected)


# -- query syntax in q ------------------------------------------------------------------------
QUERIES = [
    "*",
    "?",
    "_",
    "%",
    "%%",
    "a*",
    "lyso*",
    "*lyso",
    "lyso?yme",
    "l_sozyme",
    "notes_",
    "_otes",
    "notes%",
    "lys%",
    "access_groups:20180042-group",
    "access_groups:*",
    "access_groups:x",
    "proposal:20180042",
    "proposal:*",
    "_id:*",
    "*:*",
    "beamline:biomax AND proposal:20180042",
    "lysozyme OR thaumatin",
    "NOT lysozyme",
    "-lysozyme",
    "+secret",
    "secret~2",
    "/.*/",
    "/secr.t/",
    "lysozyme^10",
    "[* TO *]",
    "{* TO *}",
    "path_key:/*",
    '{"match_all": {}}',
    '{"query":{"match_all":{}}}',
    '{"bool":{"should":[{"match_all":{}}]}}',
    '" OR 1=1 --',
    "' OR '1'='1",
    "'; DROP TABLE docs; --",
    "1) OR (1=1",
    "x' UNION SELECT path FROM docs --",
    "NEAR(lysozyme secret)",
    "NEAR(",
    "lysozyme NEAR secret",
    "text:secret",
    "docs_fts:secret",
    '"secret"',
    '""',
    '"',
    "^lyso",
    "\\",
    "\\*",
    "\\\\",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "&&",
    "||",
    "!",
    ">=",
    "..",
    "../",
    "%2A",
    "\t*\n",
    "Café",
    "CAFÉ",
    "straße",
    "ß",
    "é",
    "🙂",
    "\u202e",
    "x" * 1000,
    "lyso " * 200,
]


def literal_matches(corpus: Corpus, visible: set[str], q: str) -> set[str]:
    """The visible documents whose search text holds every whitespace-separated term of
    ``q`` (any case): the contract's free text, nothing else."""
    terms = [t.lower() for t in q.split()]
    return {
        doc_id
        for doc_id in visible
        if all(term in corpus.docs[doc_id].search_text().lower() for term in terms)
    }


@pytest.fixture(scope="module")
def alice_http(filled: Store) -> TestClient:
    directory = MemoryDirectory(direct={"alice": ALICE_GROUPS, "carol": frozenset()})
    return client(create_app(settings(), filled, directory=directory, clock=Clock()))


ALICE = basic("alice", PASSWORD)
CAROL = basic("carol", PASSWORD)


@pytest.mark.parametrize("q", QUERIES)
def test_query_syntax_in_q_is_literal_text(
    alice_http: TestClient, corpus: Corpus, filled: Store, q: str
) -> None:
    visible = corpus.visible(ALICE_GROUPS)
    params = {"q": q, "size": MAX_PAGE_SIZE, "collapse": False}
    response = alice_http.get("/api/v1/search", params=params, headers=ALICE)
    assert response.status_code == 200, response.text
    body = response.json()
    found = {item["id"] for item in body["items"]}
    assert found <= visible
    assert found == literal_matches(corpus, visible, q)
    assert body["total"] == len(found)
    nobody = alice_http.get("/api/v1/search", params=params, headers=CAROL).json()
    assert (nobody["total"], nobody["items"]) == (0, [])


def test_the_literal_check_can_tell_a_wildcard_from_text(corpus: Corpus) -> None:
    """The oracle is not vacuous: alice has files, and ``*`` or ``%`` match none of them
    while ``notes_`` matches the notes files only."""
    visible = corpus.visible(ALICE_GROUPS)
    assert len(visible) > 10
    assert literal_matches(corpus, visible, "*") == set()
    assert literal_matches(corpus, visible, "%") == set()
    assert literal_matches(corpus, visible, "lyso*") == set()
    assert 0 < len(literal_matches(corpus, visible, "notes_")) < len(visible)


def test_a_query_too_long_or_with_nul_is_refused_not_failed(alice_http: TestClient) -> None:
    for q in ("x" * 1001, "lyso\x00zyme", "\x00"):
        response = alice_http.get("/api/v1/search", params={"q": q}, headers=ALICE)
        assert response.status_code == 422, response.text


def test_a_parameter_given_twice_is_refused_not_read_as_one_value(
    alice_http: TestClient,
) -> None:
    """``?proposal=mine&proposal=theirs`` is ambiguous: refused, whichever the caller
    may see, with the parameter named (schemathesis found it answered 200 before)."""
    for query in (
        [("q", "lysozyme"), ("q", "thaumatin")],
        [("proposal", "20170251"), ("proposal", "20180042")],
        [("size", "1"), ("size", "2")],
    ):
        response = alice_http.get("/api/v1/search", params=query, headers=ALICE)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["query", query[0][0]]
    response = alice_http.get(
        "/api/v1/violations", params=[("state", "open"), ("state", "all")], headers=ALICE
    )
    assert response.status_code == 422, response.text
    one = alice_http.get("/api/v1/search", params=[("q", "lysozyme")], headers=ALICE)
    assert one.status_code == 200, one.text


# -- unknown parameters and filter values -----------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        {"groups": "20180042-group"},
        {"access_groups": "20180042-group"},
        {"access_groups": "*"},
        {"group": "biomax"},
        {"user": "root"},
        {"principal": "admin"},
        {"roles": "admin"},
        {"admin": "true"},
        {"all": "true"},
        {"public_before": "2100-01-01"},
        {"facets": "access_groups"},
        {"X-Catalogd-User": "bob"},
    ],
)
def test_unknown_parameters_are_refused_never_honoured(
    alice_http: TestClient, corpus: Corpus, extra: dict[str, str]
) -> None:
    for headers in (ALICE, CAROL):
        response = alice_http.get(
            "/api/v1/search", params={"size": MAX_PAGE_SIZE, **extra}, headers=headers
        )
        assert response.status_code == 422, response.text
        assert "20180042" not in response.text or "20180042" in str(extra)


@pytest.mark.parametrize(
    ("filters", "finds_any"),
    [
        ({"proposal": "*"}, False),
        ({"proposal": "20170251' OR '1'='1"}, False),
        ({"proposal": "20180042"}, False),  # bob's
        ({"proposal": "20170251"}, True),
        ({"beamline": 'biomax" OR 1=1 --'}, False),
        ({"beamline": "*"}, False),
        ({"user_type": "visitor OR proprietary"}, False),
        ({"visit": "%"}, False),
        ({"visit": "_%"}, False),
        ({"path_prefix": "/"}, True),
        ({"path_prefix": "/*"}, False),
        ({"path_prefix": "/%"}, False),
        ({"path_prefix": "/../../"}, False),  # taken as it is: no path has it
        ({"proposal": ["20170251", "20180042"]}, None),
        ({"q": ["lyso", "thaum"]}, None),
    ],
)
def test_filter_values_made_of_syntax_select_nothing_extra(
    alice_http: TestClient, corpus: Corpus, filters: dict[str, Any], finds_any: bool | None
) -> None:
    visible = corpus.visible(ALICE_GROUPS)
    response = alice_http.get(
        "/api/v1/search",
        params={"size": MAX_PAGE_SIZE, "collapse": False, **filters},
        headers=ALICE,
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        return
    body = response.json()
    found = {item["id"] for item in body["items"]}
    assert found <= visible
    assert body["total"] == len(found)
    assert set(body["facets"]["proposal"]) <= {"20170251"}
    if finds_any is not None:
        assert bool(found) == finds_any


# -- odd ids ----------------------------------------------------------------------------------
def odd_ids(corpus: Corpus) -> list[str]:
    mine = sorted(corpus.visible(ALICE_GROUPS))[0]
    theirs = sorted(set(corpus.docs) - corpus.visible(ALICE_GROUPS))[0]
    return [
        "0" * 32,
        theirs,
        theirs.upper(),
        theirs + "0",
        theirs[:-1],
        theirs + "%00",
        theirs + "%0a",
        theirs + "%20",
        " " + theirs,
        "*",
        "%2A",
        theirs[:-1] + "*",
        "..",
        "%2e%2e",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%252F..%252Fetc%252Fpasswd",
        "....//....//etc/passwd",
        "..\\..\\etc\\passwd",
        f"{mine}%2F..%2F{theirs}",
        f"{mine}/../{theirs}",
        "é" * 32,
        "%C3%A9" * 32,
        "🙂",
        "%FF%FE",
        "a" * 10_000,
        "0" * 5000,
        f"{theirs};{mine}",
        f"{theirs},{mine}",
        f"{theirs}%7C{mine}",
        "null",
        "undefined",
        "-1",
        "%00",
    ]


def test_odd_ids_are_404_like_an_absent_one(alice_http: TestClient, corpus: Corpus) -> None:
    for doc_id in odd_ids(corpus):
        response = alice_http.get(f"/api/v1/files/{doc_id}", headers=ALICE)
        assert response.status_code == 404, (doc_id, response.status_code, response.text)
        assert response.json() == NOT_FOUND, doc_id


def test_the_same_ids_are_401_without_credentials(alice_http: TestClient, corpus: Corpus) -> None:
    """Nothing about an id is answered before the caller is known (no 404 vs 401
    difference between existing and absent ids)."""
    mine = sorted(corpus.visible(ALICE_GROUPS))[0]
    for doc_id in (mine, "0" * 32, sorted(corpus.docs)[-1]):
        response = alice_http.get(f"/api/v1/files/{doc_id}")
        assert response.status_code == 401
        assert response.json() == {"detail": "authentication required"}
    assert PASSWORD not in response.text
