"""The API end to end with the real directory: :class:`api.ldap.LdapDirectory` against
the session's slapd (``tests/slapd_node.py``), in both group layouts.

The users and groups are those of ``tests/ldap_fixtures.py``: alice in proposal
20170251, bob in 20180042, carol in the biomax staff group (nested in both biomax
proposal groups in rfc2307bis; not nested in rfc2307, which has no nesting), dave an
auditor, and users whose names are LDAP filter syntax.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from api_support import (
    Catalogue,
    Clock,
    TestClient,
    basic,
    catalogue,
    client,
    ids,
    settings,
)
from slapd_node import SlapdNode

from api.app import create_app
from api.ldap import LdapDirectory

__all__ = ["catalogue"]  # fixtures used below

PORTAL_TOKEN = "portal-ldap-7e1c0d9b5a3f4e2d8c6b"


def ldap_client(
    catalogue: Catalogue, slapd: SlapdNode, layout: str, tmp_path: Path, **ldap: object
) -> TestClient:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'portal = "{hashlib.sha256(PORTAL_TOKEN.encode()).hexdigest()}"\n')
    config = settings(service_tokens_file=tokens).model_copy(
        update={"ldap": slapd.settings(layout, **ldap)}
    )
    directory = LdapDirectory(config.ldap)
    return client(create_app(config, catalogue.store, directory=directory, clock=Clock()))


@pytest.fixture(params=["rfc2307bis", "rfc2307"])
def http(
    request: pytest.FixtureRequest, catalogue: Catalogue, slapd: SlapdNode, tmp_path: Path
) -> TestClient:
    return ldap_client(catalogue, slapd, request.param, tmp_path)


def test_a_directory_login_sees_its_proposals_only(http: TestClient, catalogue: Catalogue) -> None:
    body = http.get("/api/v1/search", headers=basic("alice", "alice-pw")).json()
    assert catalogue.doc("lysozyme").id in ids(body)
    assert catalogue.doc("thaumatin").id not in ids(body)
    assert set(body["facets"]["proposal"]) == {"20170251"}
    bob = http.get("/api/v1/search", headers=basic("bob", "bob-pw")).json()
    assert ids(bob) == {catalogue.doc("thaumatin").id}


def test_a_wrong_directory_password_is_401(http: TestClient) -> None:
    for user, password in [("alice", "bob-pw"), ("alice", ""), ("mallory", "x")]:
        response = http.get("/api/v1/search", headers=basic(user, password))
        assert response.status_code == 401


@pytest.mark.parametrize(
    "user, password",
    [("*", "alice-pw"), ("a*", "ann-pw"), ("alice)(uid=*", "alice-pw"), ("al*", "alice-pw")],
)
def test_filter_syntax_in_a_user_name_logs_in_nobody_else(
    http: TestClient, user: str, password: str
) -> None:
    assert http.get("/api/v1/search", headers=basic(user, password)).status_code == 401


def test_a_user_named_like_a_wildcard_is_only_themself(http: TestClient) -> None:
    body = http.get("/api/v1/search", headers=basic("a*", "astar-pw")).json()
    assert body["total"] == 0  # 20230001-group only: none of alice's or ann's files


def test_auditors_come_from_the_directory(http: TestClient) -> None:
    assert http.get("/api/v1/violations", headers=basic("dave", "dave-pw")).status_code == 200
    assert http.get("/api/v1/violations", headers=basic("alice", "alice-pw")).status_code == 403


def test_a_service_token_gets_the_named_users_directory_groups(
    http: TestClient, catalogue: Catalogue
) -> None:
    headers = {"Authorization": f"Bearer {PORTAL_TOKEN}", "X-Catalogd-User": "bob"}
    assert ids(http.get("/api/v1/search", headers=headers).json()) == {
        catalogue.doc("thaumatin").id
    }
    headers["X-Catalogd-User"] = "b*"
    assert http.get("/api/v1/search", headers=headers).json()["total"] == 0


def test_nested_staff_groups_follow_the_directory_layout(
    catalogue: Catalogue, slapd: SlapdNode, tmp_path: Path
) -> None:
    carol = basic("carol", "carol-pw")
    nested = ldap_client(catalogue, slapd, "rfc2307bis", tmp_path)
    seen = ids(nested.get("/api/v1/search", params={"size": 100}, headers=carol).json())
    assert {catalogue.doc("lysozyme").id, catalogue.doc("thaumatin").id} <= seen
    assert catalogue.doc("stray").id in seen  # the beamline group's own stray file
    flat = ldap_client(catalogue, slapd, "rfc2307", tmp_path)
    seen = ids(flat.get("/api/v1/search", params={"size": 100}, headers=carol).json())
    assert seen == {catalogue.doc("stray").id}


def alice_logged_in(
    catalogue: Catalogue, slapd: SlapdNode, tmp_path: Path, **ldap: object
) -> tuple[TestClient, dict[str, str]]:
    """A client over the rfc2307bis layout with ``ldap`` settings, after alice's first
    search (answered), and alice's credentials."""
    http = ldap_client(catalogue, slapd, "rfc2307bis", tmp_path, **ldap)
    alice = basic("alice", "alice-pw")
    assert http.get("/api/v1/search", headers=alice).status_code == 200
    return http, alice


def test_a_directory_outage_fails_closed(
    catalogue: Catalogue, slapd: SlapdNode, tmp_path: Path
) -> None:
    http, alice = alice_logged_in(catalogue, slapd, tmp_path, cache_ttl_s=0.0)
    assert http.get("/readyz").json()["checks"]["directory"] == "ok"
    with slapd.down():
        response = http.get("/api/v1/search", headers=alice)
        assert response.status_code == 503
        assert response.json() == {"detail": "the directory is unavailable; try again later"}
        assert slapd.url not in response.text
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["directory"] == "unavailable"
    assert http.get("/api/v1/search", headers=alice).status_code == 200
    assert http.get("/readyz").status_code == 200


def test_a_kept_login_still_meets_the_failed_login_limit(
    catalogue: Catalogue, slapd: SlapdNode, tmp_path: Path
) -> None:
    http, alice = alice_logged_in(catalogue, slapd, tmp_path, bind_cache_ttl_s=60.0)
    limit = settings().api.login_max_failures
    for _ in range(limit):  # a wrong password is never answered from the kept check
        assert http.get("/api/v1/search", headers=basic("alice", "guess")).status_code == 401
    assert http.get("/api/v1/search", headers=alice).status_code == 429
