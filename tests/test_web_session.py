"""The web pages' login, cookie and CSRF rules, and their access filter, through the
application in process (the real browser tests are tests/test_web.py). The directory
is the small fake of tests/api_support.py: these are the application's own rules."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import httpx
import pytest
from api_support import (
    ALICE,
    Catalogue,
    Clock,
    FakeDirectory,
    TestClient,
    app_for,
    catalogue,
    client,
    users,
)

from api.web.chart import timeline
from api.web.session import SESSION_COOKIE, SessionSigner, load_key
from catalogd.errors import ConfigError

__all__ = ["catalogue", "users"]  # fixtures used below


def login_form(http: TestClient, next_: str = "/ui/search") -> str:
    page = http.get("/ui/login", params={"next": next_})
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def log_in(http: TestClient, user: str, password: str, **extra: str) -> httpx.Response:
    token = login_form(http)
    form = {"csrf": token, "username": user, "password": password, **extra}
    answer: httpx.Response = http.post("/ui/login", data=form, follow_redirects=False)
    return answer


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def http(catalogue: Catalogue, users: FakeDirectory, clock: Clock) -> TestClient:
    return client(app_for(catalogue, directory=users, clock=clock, login_max_failures=3))


def test_a_login_sets_a_signed_httponly_cookie_for_the_pages_only(
    http: TestClient, catalogue: Catalogue
) -> None:
    answer = log_in(http, "alice", "alice-pw")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/search"
    header = next(v for k, v in answer.headers.multi_items() if v.startswith(SESSION_COOKIE))
    assert "HttpOnly" in header and "SameSite=lax" in header and "Path=/ui" in header
    assert "alice-pw" not in header
    page = http.get("/ui/search")
    assert page.status_code == 200
    assert catalogue.doc("lysozyme").name in page.text
    assert catalogue.doc("thaumatin").name not in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    # the cookie is for the pages: the API still wants credentials
    assert http.get("/api/v1/search").status_code == 401


def test_no_session_leads_to_the_login_form_and_back(http: TestClient) -> None:
    answer = http.get("/ui/files/" + "0" * 32, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login?next=%2Fui%2Ffiles%2F")


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/api/v1/x"])
def test_login_never_redirects_off_the_pages(http: TestClient, target: str) -> None:
    answer = log_in(http, "alice", "alice-pw", next=target)
    assert answer.headers["location"] == "/ui/search"


def test_a_login_without_the_forms_token_or_from_another_site_is_refused(
    http: TestClient,
) -> None:
    form = {"username": "alice", "password": "alice-pw"}
    answer = http.post("/ui/login", data=form, follow_redirects=False)
    assert answer.status_code == 403 and SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    token = login_form(http)
    answer = http.post(
        "/ui/login",
        data={**form, "csrf": token},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert http.get("/ui/search", follow_redirects=False).status_code == 303


def test_a_forged_or_expired_cookie_is_no_session(http: TestClient, clock: Clock) -> None:
    log_in(http, "alice", "alice-pw")
    cookie = http.cookies[SESSION_COOKIE]
    payload, mac = cookie.split(".")
    forged = SessionSigner(b"k" * 32, max_age_s=60).make("staff", clock()).split(".")[0]
    for value in (f"{forged}.{mac}", f"{payload}.{mac[:-2]}xx", "garbage"):
        http.cookies.set(SESSION_COOKIE, value, path="/ui")
        assert http.get("/ui/search", follow_redirects=False).status_code == 303
    http.cookies.set(SESSION_COOKIE, cookie, path="/ui")
    assert http.get("/ui/search", follow_redirects=False).status_code == 200
    clock.advance(8 * 3600 + 1)  # session_max_age_s
    assert http.get("/ui/search", follow_redirects=False).status_code == 303


def test_logout_needs_the_sessions_token(http: TestClient) -> None:
    log_in(http, "alice", "alice-pw")
    assert http.post("/ui/logout", data={"csrf": "x"}).status_code == 403
    assert http.get("/ui/search", follow_redirects=False).status_code == 200
    page = http.get("/ui/search").text
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None
    answer = http.post("/ui/logout", data={"csrf": match.group(1)}, follow_redirects=False)
    assert answer.status_code == 303
    assert http.get("/ui/search", follow_redirects=False).status_code == 303


def test_failed_web_logins_count_like_the_apis(http: TestClient) -> None:
    statuses = [log_in(http, "alice", "wrong").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert http.get("/api/v1/search", headers=ALICE).status_code == 429  # one limit


def test_a_session_follows_the_directory_groups_of_now(
    http: TestClient, users: FakeDirectory, catalogue: Catalogue
) -> None:
    log_in(http, "alice", "alice-pw")
    assert catalogue.doc("lysozyme").name in http.get("/ui/search").text
    users.users["alice"] = ("alice-pw", frozenset())
    page = http.get("/ui/search")
    assert catalogue.doc("lysozyme").name not in page.text
    assert '<span id="total">0</span>' in page.text


def test_the_dashboard_is_for_auditors_only(http: TestClient) -> None:
    log_in(http, "alice", "alice-pw")
    page = http.get("/ui/violations")
    assert page.status_code == 403 and "thaumatin" not in page.text
    assert http.get("/ui/violations.csv").status_code == 403
    log_in(http, "audrey", "audrey-pw")
    page = http.get("/ui/violations")
    assert page.status_code == 200 and "secret_thaumatin.nxs" in page.text
    csv = http.get("/ui/violations.csv", params={"rule": "DP999"})
    assert csv.status_code == 200 and csv.text.count("\n") == 1  # the header only


def test_a_bad_search_says_why(http: TestClient) -> None:
    log_in(http, "alice", "alice-pw")
    page = http.get("/ui/search", params={"start_from": "yesterday"})
    assert page.status_code == 400 and "ISO 8601" in page.text
    page = http.get("/ui/search", params={"cursor": "not-a-cursor"})
    assert page.status_code == 400


def test_the_session_key_file_is_made_once_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "web-session.key"
    first = load_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key(path) == first and len(first) >= 32
    path.write_text("short")
    with pytest.raises(ConfigError, match="session_key_file"):
        load_key(path)
    assert load_key(None) != load_key(None)


def test_the_timeline_counts_open_and_resolved() -> None:
    now = dt.datetime(2026, 1, 11, tzinfo=dt.UTC)
    series = timeline(
        [
            ("2026-01-01T00:00:00+00:00", None),
            ("2026-01-01T00:00:00+00:00", "2026-01-06T00:00:00+00:00"),
        ],
        now,
        points=11,
    )
    assert [(p.open, p.resolved) for p in series[:5]] == [(2, 0)] * 5
    assert [(p.open, p.resolved) for p in series[5:]] == [(1, 1)] * 6
    assert timeline([], now) == []


def test_catalogued_text_is_escaped(http: TestClient, catalogue: Catalogue) -> None:
    doc = catalogue.doc("lysozyme")
    title = '<script>alert("x")</script>'
    entry = {**doc.entries[0], "title": title}
    catalogue.store.put([doc.with_changes(entries=(entry,))])
    catalogue.store.flush()
    log_in(http, "alice", "alice-pw")
    for url in ("/ui/search", f"/ui/files/{doc.id}"):
        page = http.get(url).text
        assert title not in page
        assert "&lt;script&gt;" in page
