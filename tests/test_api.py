"""The search API's endpoints, through FastAPI's test client, over a real SQLite store
filled from a real tree: what each caller is shown, and what nobody is told."""

from __future__ import annotations

import base64
import csv
import io
import os

import pytest
from api_support import (
    ALICE,
    AUDREY,
    BOB,
    CAROL,
    LATIN1_NAME,
    NOW,
    STAFF,
    Catalogue,
    Clock,
    FakeDirectory,
    TestClient,
    app_for,
    basic,
    catalogue,
    client,
    ids,
    iter_pages,
    users,
)

from api.context import embargo_cutoff
from api.models import SearchResponse
from catalogd.document import display_path
from catalogd.store.query import encode_cursor

__all__ = ["catalogue", "users"]  # fixtures used below

# The files alice (proposal 20170251) may see, collapsed: the insulin data file is part
# of its master's dataset.
ALICE_FILES = {"lysozyme", "notes", "master", "latin1"}


@pytest.fixture
def http(catalogue: Catalogue, users: FakeDirectory) -> TestClient:
    return client(app_for(catalogue, directory=users))


def doc_ids(catalogue: Catalogue, *names: str) -> set[str]:
    return {catalogue.doc(name).id for name in names}


# -- search: who sees what ------------------------------------------------------------------
def test_a_caller_sees_exactly_the_files_of_their_proposals(
    http: TestClient, catalogue: Catalogue
) -> None:
    body = http.get("/api/v1/search", headers=ALICE).json()
    assert ids(body) == doc_ids(catalogue, *ALICE_FILES)
    assert body["total"] == len(ALICE_FILES)
    assert body["next_cursor"] is None
    assert body["facets"]["proposal"] == {"20170251": len(ALICE_FILES)}
    assert body["facets"]["user_type"] == {"visitor": len(ALICE_FILES)}

    body = http.get("/api/v1/search", headers=BOB).json()
    assert ids(body) == doc_ids(catalogue, "thaumatin")
    assert body["facets"]["proposal"] == {"20180042": 1}


def test_a_caller_without_groups_sees_nothing_not_even_counts(http: TestClient) -> None:
    body = http.get("/api/v1/search", headers=CAROL).json()
    assert body["total"] == 0 and body["items"] == []
    assert all(counts == {} for counts in body["facets"].values())


def test_nested_beamline_staff_see_visitor_proposals_but_not_proprietary_ones(
    http: TestClient, catalogue: Catalogue
) -> None:
    body = http.get("/api/v1/search", params={"size": 100}, headers=STAFF).json()
    assert ids(body) == doc_ids(catalogue, *ALICE_FILES, "thaumatin", "stray")
    assert catalogue.doc("pharma").id not in ids(body)


def test_searching_for_someone_elses_words_finds_nothing(
    http: TestClient, catalogue: Catalogue
) -> None:
    body = http.get("/api/v1/search", params={"q": "thaum"}, headers=ALICE).json()
    assert body == {
        "total": 0,
        "items": [],
        "next_cursor": None,
        "facets": {name: {} for name in ("beamline", "kind", "proposal", "user_type")},
    }
    found = http.get("/api/v1/search", params={"q": "THAUM secr"}, headers=BOB).json()
    assert ids(found) == doc_ids(catalogue, "thaumatin")


def test_free_text_matches_partial_words_in_titles_and_samples(
    http: TestClient, catalogue: Catalogue
) -> None:
    body = http.get("/api/v1/search", params={"q": "lysoz rotat"}, headers=ALICE).json()
    assert ids(body) == doc_ids(catalogue, "lysozyme")
    body = http.get("/api/v1/search", params={"q": "insulin"}, headers=ALICE).json()
    assert ids(body) == doc_ids(catalogue, "master")


def test_filters_narrow_the_visible_files(http: TestClient, catalogue: Catalogue) -> None:
    def found(**params: object) -> set[str]:
        response = http.get("/api/v1/search", params=params, headers=STAFF)
        assert response.status_code == 200, response.text
        return ids(response.json())

    assert found(proposal="20180042") == doc_ids(catalogue, "thaumatin")
    assert found(kind="nexus") == doc_ids(catalogue, "lysozyme", "master", "thaumatin")
    assert found(visit="2017112208", kind="other") == doc_ids(catalogue, "notes", "latin1")
    raw = str(catalogue.root / "visitor/biomax/20170251/2017112208/raw")
    assert found(path_prefix=raw) == doc_ids(catalogue, "lysozyme", "master", "latin1")
    assert found(start_from="2017-11-23", start_to="2018-12-31") == doc_ids(
        catalogue, "master", "thaumatin"
    )
    assert found(beamline="biomax", user_type="proprietary") == set()
    # A date as the upper bound includes that day (lysozyme started at 08:15 on it).
    assert found(start_to="2017-11-22") == doc_ids(catalogue, "lysozyme")
    assert found(start_from="2017-11-22", start_to="2017-11-22T08:00:00") == set()
    assert found(start_from="20171123", start_to="20181231T235959") == doc_ids(
        catalogue, "master", "thaumatin"
    )


def test_collapse_shows_a_dataset_once_and_can_be_turned_off(
    http: TestClient, catalogue: Catalogue
) -> None:
    body = http.get("/api/v1/search", params={"collapse": "false"}, headers=ALICE).json()
    assert ids(body) == doc_ids(catalogue, *ALICE_FILES, "data")
    data = next(i for i in body["items"] if i["id"] == catalogue.doc("data").id)
    assert data["role"] == "data"
    assert data["master"] == catalogue.doc("master").path


def test_pages_follow_the_cursor_in_the_chosen_order(
    http: TestClient, catalogue: Catalogue
) -> None:
    pages = list(iter_pages(http, STAFF, size=2, sort="-size", collapse="false"))
    items = [item for page in pages for item in page["items"]]
    assert len(pages) == 4
    assert all(page["total"] == 7 for page in pages)
    assert [i["id"] for i in items] == [
        doc.id
        for doc in sorted(
            (catalogue.doc(n) for n in (*ALICE_FILES, "data", "thaumatin", "stray")),
            key=lambda d: (d.size, d.id),
            reverse=True,
        )
    ]


def test_a_cursor_that_is_not_one_is_a_clear_400(http: TestClient, catalogue: Catalogue) -> None:
    for cursor in ("not-a-cursor", "e30", encode_cursor(12, catalogue.doc("notes").id)):
        response = http.get("/api/v1/search", params={"cursor": cursor}, headers=ALICE)
        assert response.status_code == 400
        assert "invalid cursor" in response.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"size": "1001"},
        {"size": "-1"},
        {"sort": "owner"},
        {"kind": "pdf"},
        {"path_prefix": "data/visitor"},
        {"start_from": "last tuesday"},
        {"q": "x" * 1001},
        {"collapse": "perhaps"},
        {"groups": "20180042-group"},  # unknown parameters are refused, not ignored
    ],
)
def test_invalid_parameters_are_refused_with_422(http: TestClient, params: dict[str, str]) -> None:
    response = http.get("/api/v1/search", params=params, headers=BOB)
    assert response.status_code == 422
    assert response.json()["detail"]


# -- one file -------------------------------------------------------------------------------
def test_a_visible_file_is_described_for_a_portal(http: TestClient, catalogue: Catalogue) -> None:
    doc = catalogue.doc("lysozyme")
    response = http.get(f"/api/v1/files/{doc.id}", headers=ALICE)
    assert response.status_code == 200
    item = response.json()
    assert item["id"] == doc.id
    assert item["path"] == doc.path and item["path_b64"] is None
    assert item["name"] == "lysozyme_0001.nxs"
    assert item["size"] == doc.size
    assert item["mode_octal"] == f"{os.lstat(doc.path).st_mode & 0o7777:04o}"
    assert item["file_type"] == "file"
    assert (item["user_type"], item["beamline"], item["proposal"], item["visit"]) == (
        "visitor",
        "biomax",
        "20170251",
        "2017112208",
    )
    assert item["visit_date"] == "2017-11-22" and item["area"] == "raw"
    assert item["kind"] == "nexus" and item["title"] == "Lysozyme rotation scan"
    assert item["start_time"] == "2017-11-22T08:15:00+00:00"
    assert item["entries"][0]["sample"] == {"name": "lysozyme"}
    assert item["indexed_at"] == "2026-06-15T11:00:00+00:00"
    assert "access_groups" not in item and "uid" not in item and "inode" not in item


def test_a_path_that_is_not_utf8_comes_as_text_and_exact_bytes(
    http: TestClient, catalogue: Catalogue
) -> None:
    doc = catalogue.doc("latin1")
    item = http.get(f"/api/v1/files/{doc.id}", headers=ALICE).json()
    assert item["path"].endswith("/caf\\xe9.h5")
    assert item["name"] == "caf\\xe9.h5"
    assert base64.b64decode(item["path_b64"]) == os.fsencode(doc.path)
    assert base64.b64decode(item["path_b64"]).endswith(b"/" + LATIN1_NAME)


def test_an_invisible_file_is_indistinguishable_from_an_absent_one(
    http: TestClient, catalogue: Catalogue
) -> None:
    hidden = http.get(f"/api/v1/files/{catalogue.doc('thaumatin').id}", headers=ALICE)
    absent = http.get(f"/api/v1/files/{'0' * 32}", headers=ALICE)
    unrouted = http.get("/api/v1/files/a/b", headers=ALICE)
    assert hidden.status_code == absent.status_code == unrouted.status_code == 404
    assert hidden.content == absent.content == unrouted.content
    assert hidden.headers["content-type"] == absent.headers["content-type"]
    # ... while bob, whose proposal it is, gets it.
    assert (
        http.get(f"/api/v1/files/{catalogue.doc('thaumatin').id}", headers=BOB).status_code == 200
    )


@pytest.mark.parametrize(
    "doc_id",
    ["..%2F..%2Fetc%2Fpasswd", "..", "%2e%2e", "x" * 32, "' OR 1=1 --", "*", "A" * 32],
)
def test_ids_that_are_not_document_ids_are_404_too(
    http: TestClient, catalogue: Catalogue, doc_id: str
) -> None:
    absent = http.get(f"/api/v1/files/{'0' * 32}", headers=STAFF)
    response = http.get(f"/api/v1/files/{doc_id}", headers=STAFF)
    assert response.status_code == 404
    assert response.content == absent.content
    upper = catalogue.doc("lysozyme").id.upper()  # ids are lower-case hex, exactly
    assert http.get(f"/api/v1/files/{upper}", headers=STAFF).content == absent.content


# -- the embargo ----------------------------------------------------------------------------
def test_the_embargo_makes_old_visits_visible_to_every_caller(
    catalogue: Catalogue, users: FakeDirectory
) -> None:
    clock = Clock()
    http = client(app_for(catalogue, directory=users, clock=clock, embargo_years=10))
    old = catalogue.doc("old")
    body = http.get("/api/v1/search", headers=CAROL).json()
    assert ids(body) == {old.id} and body["total"] == 1
    assert http.get(f"/api/v1/files/{old.id}", headers=CAROL).status_code == 200
    assert ids(http.get("/api/v1/search", headers=ALICE).json()) == doc_ids(
        catalogue, *ALICE_FILES, "old"
    )
    clock.now = NOW - 7 * 365 * 86400  # in 2019 the 2010 visit was not ten years old
    assert http.get("/api/v1/search", headers=CAROL).json()["total"] == 0
    assert http.get(f"/api/v1/files/{old.id}", headers=CAROL).status_code == 404


def test_without_the_embargo_old_visits_stay_private(
    http: TestClient, catalogue: Catalogue
) -> None:
    assert http.get("/api/v1/search", headers=CAROL).json()["total"] == 0
    assert http.get(f"/api/v1/files/{catalogue.doc('old').id}", headers=CAROL).status_code == 404


def test_embargo_cutoff_counts_years_back_from_today() -> None:
    assert embargo_cutoff(NOW, 0) is None
    assert embargo_cutoff(NOW, 10) == "2016-06-15"
    leap_day = 1709208000.0  # 2024-02-29 12:00 UTC
    assert embargo_cutoff(leap_day, 1) == "2023-02-28"
    assert embargo_cutoff(leap_day, 4) == "2020-02-29"


# -- violations -----------------------------------------------------------------------------
def test_auditors_read_violations_as_json_and_csv(http: TestClient, catalogue: Catalogue) -> None:
    response = http.get("/api/v1/violations", headers=AUDREY)
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 1
    (item,) = body["items"]
    assert item["path"] == catalogue.doc("thaumatin").path
    assert (item["rule"], item["severity"], item["proposal"]) == ("DP003", "error", "20180042")
    assert item["first_seen"] == "2026-06-15T11:59:00+00:00" and item["resolved_at"] is None

    response = http.get("/api/v1/violations", params={"format": "csv"}, headers=AUDREY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["path"], r["rule"], r["actual"]) for r in rows] == [
        (catalogue.doc("thaumatin").path, "DP003", "group users")
    ]
    resolved = http.get("/api/v1/violations", params={"state": "resolved"}, headers=AUDREY)
    assert resolved.json() == {"total": 0, "items": []}


def test_admins_read_violations_too(http: TestClient) -> None:
    response = http.get("/api/v1/violations", headers=basic("root-like", "admin-pw"))
    assert response.status_code == 200 and response.json()["total"] == 1


@pytest.mark.parametrize(
    "params", [{}, {"format": "csv"}, {"path_prefix": "/nowhere"}, {"state": "all"}]
)
def test_others_get_the_same_403_whatever_they_ask(
    http: TestClient, params: dict[str, str]
) -> None:
    for headers in (ALICE, BOB, STAFF, CAROL):
        response = http.get("/api/v1/violations", params=params, headers=headers)
        assert response.status_code == 403
        assert response.json() == {"detail": "auditors only"}


# -- failures -------------------------------------------------------------------------------
def test_no_credentials_is_401_with_a_challenge(http: TestClient) -> None:
    for path in ("/api/v1/search", f"/api/v1/files/{'0' * 32}", "/api/v1/violations"):
        response = http.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Basic realm="catalogd"')


def test_a_store_that_fails_is_a_generic_503(http: TestClient, catalogue: Catalogue) -> None:
    catalogue.store.close()
    for path in ("/api/v1/search", f"/api/v1/files/{catalogue.doc('lysozyme').id}"):
        response = http.get(path, headers=ALICE)
        assert response.status_code == 503
        assert response.json() == {"detail": "the catalogue is unavailable; try again later"}
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"store": "unavailable", "directory": "ok"},
    }
    assert str(catalogue.root) not in ready.text and "sqlite" not in ready.text.lower()


def test_a_directory_that_fails_is_a_generic_503_never_an_empty_view(
    http: TestClient, users: FakeDirectory
) -> None:
    users.down = True
    response = http.get("/api/v1/search", headers=ALICE)
    assert response.status_code == 503
    assert response.json() == {"detail": "the directory is unavailable; try again later"}
    ready = http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["directory"] == "unavailable"
    assert "ldap://" not in ready.text


def test_without_a_directory_catalogue_requests_fail_closed(catalogue: Catalogue) -> None:
    http = client(app_for(catalogue, directory=None))
    assert http.get("/api/v1/search", headers=ALICE).status_code == 503
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok", "directory": "not configured"}


# -- operations -----------------------------------------------------------------------------
def test_health_and_readiness(http: TestClient) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "directory": "ok"}}


def test_metrics_count_requests_by_route_template_never_by_id(
    http: TestClient, catalogue: Catalogue
) -> None:
    hidden = catalogue.doc("thaumatin").id
    http.get(f"/api/v1/files/{hidden}", headers=ALICE)
    http.get("/api/v1/search", headers=ALICE)
    http.get("/api/v1/search", headers=basic("alice", "wrong"))
    http.get("/no/such/path")
    text = http.get("/metrics").text
    assert (
        'catalogd_api_requests_total{method="GET",route="/api/v1/files/{doc_id}",status="404"} 1.0'
        in text
    )
    assert (
        'catalogd_api_requests_total{method="GET",route="/api/v1/search",status="200"} 1.0' in text
    )
    assert (
        'catalogd_api_requests_total{method="GET",route="/api/v1/search",status="401"} 1.0' in text
    )
    assert 'route="unmatched",status="404"' in text
    assert 'catalogd_api_auth_failures_total{method="basic"} 1.0' in text
    assert hidden not in text and "/no/such/path" not in text


def test_metrics_of_two_applications_do_not_mix(catalogue: Catalogue, users: FakeDirectory) -> None:
    first = client(app_for(catalogue, directory=users))
    second = client(app_for(catalogue, directory=users))
    first.get("/api/v1/search", headers=ALICE)
    assert 'route="/api/v1/search"' not in second.get("/metrics").text


def test_openapi_describes_the_endpoints_and_credentials(http: TestClient) -> None:
    spec = http.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/api/v1/search", "/api/v1/files/{doc_id}", "/api/v1/violations"} <= set(paths)
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
    search = paths["/api/v1/search"]["get"]
    assert {"q", "beamline", "cursor", "collapse", "start_from"} <= {
        p["name"] for p in search["parameters"]
    }
    assert {"400", "401", "422", "429", "503"} <= set(search["responses"])
    assert search["security"] == [{"HTTPBasic": []}, {"HTTPBearer": []}]
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBasic", "HTTPBearer"}
    item = spec["components"]["schemas"]["FileItem"]["properties"]
    assert "access_groups" not in item and {"path", "path_b64", "indexed_at"} <= set(item)


def put_copy(catalogue: Catalogue, digit: str, path: bytes, **changes: bytes) -> None:
    """A copy of the lysozyme file's document at ``path`` (its id ``digit`` x 32), with
    ``changes`` of its layout fields (as bytes), in the store and searchable."""
    fields = {name: os.fsdecode(value) for name, value in changes.items()}
    doc = catalogue.doc("lysozyme").with_changes(
        id=digit * 32, path=os.fsdecode(path), name=os.fsdecode(path.rsplit(b"/", 1)[1]), **fields
    )
    catalogue.store.put([doc])
    catalogue.store.flush()


def test_display_of_facet_values_that_are_not_utf8(http: TestClient, catalogue: Catalogue) -> None:
    # A proposal directory whose name is not UTF-8 still gives a valid JSON answer.
    put_copy(catalogue, "f", b"/data/visitor/biomax/2017\xff/x.nxs", proposal=b"2017\xff")
    body = http.get("/api/v1/search", headers=ALICE).json()
    assert body["facets"]["proposal"][display_path(os.fsdecode(b"2017\xff"))] == 1
    item = http.get(f"/api/v1/files/{'f' * 32}", headers=ALICE).json()
    assert item["proposal"] == "2017\\xff"


def test_answers_are_exactly_their_documented_models(
    http: TestClient, catalogue: Catalogue
) -> None:
    # The answers are sent as their models' JSON without FastAPI's second validation
    # (api.models.json_response): each must be byte for byte what validating it against
    # its schema and serialising it gives, for every kind of file, a path that is not
    # UTF-8 included.
    put_copy(catalogue, "e", b"/data/visitor/biomax/20170251/2017112208/raw/\xfe.nxs")
    for headers in (ALICE, STAFF):
        response = http.get("/api/v1/search", params={"collapse": "false"}, headers=headers)
        assert response.headers["content-type"] == "application/json"
        validated = SearchResponse.model_validate_json(response.content)
        assert validated.items and response.content == validated.model_dump_json().encode()
        for item in validated.items:
            single = http.get(f"/api/v1/files/{item.id}", headers=headers)
            assert single.content == item.model_dump_json().encode()
