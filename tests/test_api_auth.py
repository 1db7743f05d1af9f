"""Authentication: Basic logins, service tokens acting for a named user, the throttle on
failed logins, and roles; through the application, plus unit tests of the pure parts."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from api_support import (
    ALICE,
    AUDREY,
    Catalogue,
    Clock,
    FakeDirectory,
    TestClient,
    app_for,
    basic,
    catalogue,
    client,
    ids,
    users,
)

from api.throttle import LoginThrottle, Throttled
from api.tokens import ServiceTokens
from catalogd.errors import ConfigError

__all__ = ["catalogue", "users"]  # fixtures used below

PORTAL_TOKEN = "portal-5f2b8c1e9d3a47e6b0c4a1f8e2d7c9b3"


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "service-tokens.toml"
    digest = hashlib.sha256(PORTAL_TOKEN.encode()).hexdigest()
    path.write_text(f'data-portal = "{digest}"\nother = "{"0" * 64}"\n', encoding="utf-8")
    return path


@pytest.fixture
def http(catalogue: Catalogue, users: FakeDirectory, tokens_file: Path) -> TestClient:
    return client(app_for(catalogue, directory=users, service_tokens_file=tokens_file))


def portal(user: str | None, token: str = PORTAL_TOKEN) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if user is not None:
        headers["X-Catalogd-User"] = user
    return headers


# -- Basic ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        basic("alice", "wrong"),
        basic("mallory", "alice-pw"),
        basic("alice", ""),
        basic("", "alice-pw"),
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"alice:\xff").decode()},
        {"Authorization": "Digest username=alice"},
        {"Authorization": "Bearer"},
    ],
)
def test_wrong_or_malformed_credentials_are_401(http: TestClient, headers: dict[str, str]) -> None:
    response = http.get("/api/v1/search", headers=headers)
    assert response.status_code == 401
    assert "Basic" in response.headers["www-authenticate"]
    assert "Bearer" in response.headers["www-authenticate"]
    assert "alice-pw" not in response.text


def test_a_wrong_user_and_a_wrong_password_look_the_same(http: TestClient) -> None:
    wrong_user = http.get("/api/v1/search", headers=basic("mallory", "x"))
    wrong_password = http.get("/api/v1/search", headers=basic("alice", "x"))
    assert wrong_user.content == wrong_password.content
    assert wrong_user.json() == {"detail": "wrong user name or password"}


def test_an_empty_password_never_reaches_the_directory(
    http: TestClient, users: FakeDirectory
) -> None:
    assert http.get("/api/v1/search", headers=basic("alice", "")).status_code == 401
    assert users.authentications == []


def test_a_correct_login_sees_its_groups(http: TestClient, catalogue: Catalogue) -> None:
    response = http.get("/api/v1/search", headers=ALICE)
    assert response.status_code == 200
    assert catalogue.doc("lysozyme").id in ids(response.json())


def test_the_user_header_cannot_change_who_a_basic_caller_is(
    http: TestClient, users: FakeDirectory
) -> None:
    response = http.get("/api/v1/search", headers={**ALICE, "X-Catalogd-User": "bob"})
    assert response.status_code == 401
    assert "service token" in response.json()["detail"]
    assert "bob" not in users.lookups


# -- service tokens -------------------------------------------------------------------------
def test_a_service_token_acts_with_the_named_users_groups(
    http: TestClient, catalogue: Catalogue, users: FakeDirectory
) -> None:
    as_alice = http.get("/api/v1/search", headers=portal("alice")).json()
    as_bob = http.get("/api/v1/search", headers=portal("bob")).json()
    assert catalogue.doc("lysozyme").id in ids(as_alice)
    assert catalogue.doc("thaumatin").id not in ids(as_alice)
    assert ids(as_bob) == {catalogue.doc("thaumatin").id}
    assert users.lookups == ["alice", "bob"]
    assert users.authentications == []  # the portal vouches; no password is checked
    thaumatin = catalogue.doc("thaumatin").id
    assert http.get(f"/api/v1/files/{thaumatin}", headers=portal("alice")).status_code == 404
    assert http.get(f"/api/v1/files/{thaumatin}", headers=portal("bob")).status_code == 200


def test_a_service_token_for_an_unknown_user_sees_nothing(http: TestClient) -> None:
    body = http.get("/api/v1/search", headers=portal("nobody-here")).json()
    assert body["total"] == 0 and body["items"] == []


def test_a_service_token_acting_for_an_auditor_gets_the_auditor_role(http: TestClient) -> None:
    assert http.get("/api/v1/violations", headers=portal("audrey")).status_code == 200
    assert http.get("/api/v1/violations", headers=portal("alice")).status_code == 403


@pytest.mark.parametrize("user", [None, "", "   "])
def test_a_service_token_without_a_named_user_is_401(
    http: TestClient, users: FakeDirectory, user: str | None
) -> None:
    response = http.get("/api/v1/search", headers=portal(user))
    assert response.status_code == 401
    assert "X-Catalogd-User" in response.json()["detail"]
    assert users.lookups == []


@pytest.mark.parametrize(
    "token", [PORTAL_TOKEN[:-1], PORTAL_TOKEN + "x", PORTAL_TOKEN.upper(), "0" * 64]
)
def test_a_wrong_service_token_is_401(http: TestClient, users: FakeDirectory, token: str) -> None:
    response = http.get("/api/v1/search", headers=portal("alice", token))
    assert response.status_code == 401
    assert users.lookups == []


def test_a_named_user_too_long_is_refused(http: TestClient) -> None:
    assert http.get("/api/v1/search", headers=portal("a" * 300)).status_code == 422


def test_service_tokens_match_by_digest_in_constant_time() -> None:
    digest = hashlib.sha256(b"s3cret-token").hexdigest()
    tokens = ServiceTokens((("portal", bytes.fromhex(digest)),))
    assert tokens.match("s3cret-token") == "portal"
    assert tokens.match("s3cret-token ") is None
    assert tokens.match("") is None
    assert ServiceTokens().match("s3cret-token") is None


@pytest.mark.parametrize(
    "content, problem",
    [
        ('portal = "abc"\n', "64 hex digits"),
        ("portal = 12\n", "64 hex digits"),
        ("portal = \n", "not valid TOML"),
    ],
)
def test_a_bad_tokens_file_is_a_configuration_error(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=problem):
        ServiceTokens.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        ServiceTokens.load(tmp_path / "missing.toml")


def test_the_token_secret_is_never_in_the_configuration_or_metrics(
    http: TestClient, tokens_file: Path
) -> None:
    http.get("/api/v1/search", headers=portal("alice"))
    http.get("/api/v1/search", headers=portal("alice", "guess"))
    assert PORTAL_TOKEN not in tokens_file.read_text()
    assert PORTAL_TOKEN not in http.get("/metrics").text


# -- the throttle ---------------------------------------------------------------------------
def test_failed_logins_from_one_address_are_throttled(
    catalogue: Catalogue, users: FakeDirectory
) -> None:
    clock = Clock()
    app = app_for(catalogue, directory=users, clock=clock, login_max_failures=3, login_window_s=60)
    attacker, neighbour = client(app, "198.51.100.7"), client(app, "198.51.100.8")
    for _ in range(3):
        assert attacker.get("/api/v1/search", headers=basic("alice", "guess")).status_code == 401
    tried = len(users.authentications)

    refused = attacker.get("/api/v1/search", headers=ALICE)  # even the right password
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert len(users.authentications) == tried  # refused before the directory is asked
    assert neighbour.get("/api/v1/search", headers=ALICE).status_code == 200

    clock.advance(30)
    assert attacker.get("/api/v1/search", headers=ALICE).headers["retry-after"] == "30"
    clock.advance(30)
    assert attacker.get("/api/v1/search", headers=ALICE).status_code == 200
    assert "catalogd_api_logins_throttled_total 2.0" in attacker.get("/metrics").text


def test_a_success_does_not_wipe_earlier_failures(
    catalogue: Catalogue, users: FakeDirectory
) -> None:
    app = app_for(catalogue, directory=users, login_max_failures=2, login_window_s=60)
    http = client(app)
    assert http.get("/api/v1/search", headers=basic("alice", "guess")).status_code == 401
    assert http.get("/api/v1/search", headers=basic("carol", "carol-pw")).status_code == 200
    assert http.get("/api/v1/search", headers=basic("alice", "guess")).status_code == 401
    assert http.get("/api/v1/search", headers=ALICE).status_code == 429


def test_requests_without_credentials_do_not_count_as_failures(
    catalogue: Catalogue, users: FakeDirectory
) -> None:
    http = client(app_for(catalogue, directory=users, login_max_failures=1))
    for _ in range(5):
        assert http.get("/api/v1/search").status_code == 401
    assert http.get("/api/v1/search", headers=ALICE).status_code == 200


def test_throttle_window_slides() -> None:
    clock = Clock(1000.0)
    throttle = LoginThrottle(max_failures=2, window_s=10, clock=clock)
    throttle.failed("a")
    clock.advance(5)
    throttle.failed("a")
    with pytest.raises(Throttled) as caught:
        throttle.check("a")
    assert caught.value.retry_after == 5
    throttle.check("b")
    clock.advance(5)  # the first failure has aged out
    throttle.check("a")
    throttle.failed("a")
    with pytest.raises(Throttled):
        throttle.check("a")


def test_throttle_memory_is_bounded() -> None:
    clock = Clock(0.0)
    throttle = LoginThrottle(max_failures=1, window_s=100, clock=clock, max_sources=3)
    for source in ("a", "b", "c", "d"):
        throttle.failed(source)
    throttle.check("a")  # forgotten: the least recently failing source
    for source in ("b", "c", "d"):
        with pytest.raises(Throttled):
            throttle.check(source)


# -- roles ----------------------------------------------------------------------------------
def test_roles_come_from_the_configured_groups(catalogue: Catalogue, users: FakeDirectory) -> None:
    http = client(app_for(catalogue, directory=users, auditor_groups=("20170251-group",)))
    assert http.get("/api/v1/violations", headers=ALICE).status_code == 200
    assert http.get("/api/v1/violations", headers=AUDREY).status_code == 403
