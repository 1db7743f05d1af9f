"""OpenID Connect bearer tokens against a real issuer: a local HTTP server (in a thread)
publishing a discovery document and a JWKS of RSA keys made with ``cryptography``.

Each attack a token verifier must resist gets its own token: expired, another issuer,
another audience, ``alg: none``, HS256 "signed" with the issuer's public key, a key the
issuer does not publish; and key rotation must work without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from api_support import (
    Catalogue,
    FakeDirectory,
    TestClient,
    app_for,
    catalogue,
    client,
    ids,
    users,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from catalogd.config import load_settings
from catalogd.errors import ConfigError

__all__ = ["catalogue", "users"]  # fixtures used below

AUDIENCE = "catalogd"


class Issuer:
    """An OpenID provider's public side: discovery and JWKS, with request counts."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {"key-1": new_key()}
        self.requests: Counter[str] = Counter()
        self.discovery_issuer: str | None = None
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                issuer.requests[self.path] += 1
                if self.path == "/realms/lab/.well-known/openid-configuration":
                    body: Any = {
                        "issuer": issuer.discovery_issuer or issuer.url,
                        "jwks_uri": issuer.base + "/realms/lab/certs",
                    }
                elif self.path == "/realms/lab/certs":
                    body = {"keys": [jwk(kid, key) for kid, key in issuer.keys.items()]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base + "/realms/lab"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def token(
        self, kid: str = "key-1", *, key: rsa.RSAPrivateKey | None = None, **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "f3a9-0001",
            "preferred_username": "alice",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        signing_key = key if key is not None else self.keys[kid]
        return jwt.encode(payload, signing_key, algorithm="RS256", headers={"kid": kid})

    @property
    def jwks_fetches(self) -> int:
        return self.requests["/realms/lab/certs"]


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(kid: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    data: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "alg": "RS256", "use": "sig"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_token(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    try:
        yield running
    finally:
        running.stop()


def oidc_client(
    catalogue: Catalogue, users: FakeDirectory, issuer: Issuer, **api: Any
) -> TestClient:
    settings: dict[str, Any] = {"oidc_issuer": issuer.url, "oidc_audience": AUDIENCE, **api}
    return client(app_for(catalogue, directory=users, **settings))


@pytest.fixture
def http(catalogue: Catalogue, users: FakeDirectory, issuer: Issuer) -> TestClient:
    return oidc_client(catalogue, users, issuer)


def search(http: TestClient, token: str) -> Any:
    return http.get("/api/v1/search", headers=bearer(token))


# -- accepted -------------------------------------------------------------------------------
def test_a_valid_token_names_the_user_whose_directory_groups_apply(
    http: TestClient, issuer: Issuer, catalogue: Catalogue, users: FakeDirectory
) -> None:
    # The token claims bob's group: claims are never used for access.
    response = search(http, issuer.token(groups=["20180042-group"], roles=["admin"]))
    assert response.status_code == 200, response.text
    found = ids(response.json())
    assert catalogue.doc("lysozyme").id in found
    assert catalogue.doc("thaumatin").id not in found
    assert users.lookups == ["alice"]
    assert issuer.requests["/realms/lab/.well-known/openid-configuration"] == 1


def test_keys_are_cached_between_requests(http: TestClient, issuer: Issuer) -> None:
    for _ in range(3):
        assert search(http, issuer.token()).status_code == 200
    assert issuer.jwks_fetches == 1
    assert issuer.requests["/realms/lab/.well-known/openid-configuration"] == 1


def test_a_configured_jwks_url_skips_discovery(
    catalogue: Catalogue, users: FakeDirectory, issuer: Issuer
) -> None:
    http = oidc_client(catalogue, users, issuer, oidc_jwks_url=issuer.base + "/realms/lab/certs")
    assert search(http, issuer.token()).status_code == 200
    assert issuer.requests["/realms/lab/.well-known/openid-configuration"] == 0


def test_another_username_claim_can_be_configured(
    catalogue: Catalogue, users: FakeDirectory, issuer: Issuer
) -> None:
    http = oidc_client(catalogue, users, issuer, oidc_username_claim="uid")
    assert search(http, issuer.token(uid="bob")).status_code == 200
    assert users.lookups == ["bob"]
    assert search(http, issuer.token()).status_code == 401  # no uid claim


# -- refused --------------------------------------------------------------------------------
def test_an_expired_token_is_refused(http: TestClient, issuer: Issuer) -> None:
    now = int(time.time())
    response = search(http, issuer.token(iat=now - 3600, exp=now - 600))
    assert response.status_code == 401
    assert response.json() == {"detail": "the token has expired"}
    assert "Bearer" in response.headers["www-authenticate"]


def test_leeway_allows_a_little_clock_skew(http: TestClient, issuer: Issuer) -> None:
    now = int(time.time())
    assert search(http, issuer.token(iat=now - 600, exp=now - 5)).status_code == 200


def test_a_token_of_another_issuer_is_refused(http: TestClient, issuer: Issuer) -> None:
    response = search(http, issuer.token(iss="https://evil.example.org/realms/lab"))
    assert response.status_code == 401
    assert response.json() == {"detail": "the token was issued by another issuer"}


def test_a_token_for_another_audience_is_refused(http: TestClient, issuer: Issuer) -> None:
    response = search(http, issuer.token(aud="data-portal"))
    assert response.status_code == 401
    assert response.json() == {"detail": "the token is meant for another audience"}


@pytest.mark.parametrize("missing", ["exp", "aud", "iss"])
def test_a_token_without_a_required_claim_is_refused(
    http: TestClient, issuer: Issuer, missing: str
) -> None:
    without: dict[str, Any] = {missing: None}
    assert search(http, issuer.token(**without)).status_code == 401


def test_alg_none_is_refused(http: TestClient, issuer: Issuer, users: FakeDirectory) -> None:
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    for alg in ("none", "None", "NONE"):
        token = unsigned_token({"alg": alg, "kid": "key-1", "typ": "JWT"}, claims) + "."
        response = search(http, token)
        assert response.status_code == 401
        assert "not accepted" in response.json()["detail"]
    assert users.lookups == []


def test_hs256_signed_with_the_public_key_is_refused(
    http: TestClient, issuer: Issuer, users: FakeDirectory
) -> None:
    # The algorithm-confusion attack: the issuer's public key (anyone can fetch it)
    # used as an HMAC secret.
    public_pem = (
        issuer.keys["key-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    signing_input = unsigned_token({"alg": "HS256", "kid": "key-1", "typ": "JWT"}, claims)
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    response = search(http, signing_input + "." + b64url(signature))
    assert response.status_code == 401
    assert users.lookups == []


def test_a_token_signed_by_a_key_the_issuer_does_not_publish_is_refused(
    http: TestClient, issuer: Issuer
) -> None:
    forged = issuer.token("key-1", key=new_key())  # the published kid, another key
    response = search(http, forged)
    assert response.status_code == 401
    assert response.json() == {"detail": "the token's signature or claims are not valid"}


def test_a_tampered_token_is_refused(http: TestClient, issuer: Issuer) -> None:
    header, payload, signature = issuer.token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["preferred_username"] = "bob"
    tampered = ".".join([header, b64url(json.dumps(claims).encode()), signature])
    assert search(http, tampered).status_code == 401


@pytest.mark.parametrize("token", ["a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", "...", "x" * 5000])
def test_garbage_bearer_tokens_are_401(http: TestClient, token: str) -> None:
    assert search(http, token).status_code == 401


# -- keys changing --------------------------------------------------------------------------
def test_a_rotated_key_is_fetched_once_and_accepted(
    catalogue: Catalogue, users: FakeDirectory, issuer: Issuer
) -> None:
    http = oidc_client(catalogue, users, issuer, oidc_jwks_cooldown_s=0)
    assert search(http, issuer.token()).status_code == 200
    assert issuer.jwks_fetches == 1
    issuer.keys = {"key-2": new_key()}  # the issuer rotates: key-1 withdrawn
    assert search(http, issuer.token("key-2")).status_code == 200
    assert issuer.jwks_fetches == 2
    assert search(http, issuer.token("key-2")).status_code == 200
    assert issuer.jwks_fetches == 2  # cached again
    response = search(http, issuer.token("key-9", key=new_key()))
    assert response.status_code == 401
    assert response.json() == {"detail": "the token is signed by a key the issuer does not publish"}
    assert issuer.jwks_fetches == 3  # one refetch for the unknown kid, no more


def test_unknown_kids_cannot_make_the_server_hammer_the_issuer(
    http: TestClient, issuer: Issuer
) -> None:
    assert search(http, issuer.token()).status_code == 200
    for n in range(5):
        assert search(http, issuer.token(f"made-up-{n}", key=new_key())).status_code == 401
    assert issuer.jwks_fetches == 1  # within the cooldown, unknown kids refetch nothing


def test_an_unreachable_issuer_is_a_generic_503(
    catalogue: Catalogue, users: FakeDirectory, issuer: Issuer
) -> None:
    http = oidc_client(catalogue, users, issuer)
    token = issuer.token()
    issuer.stop()
    response = search(http, token)
    assert response.status_code == 503
    assert response.json() == {"detail": "the token issuer's keys are unavailable; try again later"}
    assert "127.0.0.1" not in response.text


def test_a_discovery_document_naming_another_issuer_is_not_trusted(
    catalogue: Catalogue, users: FakeDirectory, issuer: Issuer
) -> None:
    issuer.discovery_issuer = "https://evil.example.org/realms/lab"
    http = oidc_client(catalogue, users, issuer)
    assert search(http, issuer.token()).status_code == 503
    assert issuer.jwks_fetches == 0


def test_without_an_issuer_configured_tokens_are_refused(
    catalogue: Catalogue, users: FakeDirectory, issuer: Issuer
) -> None:
    http = client(app_for(catalogue, directory=users))
    assert search(http, issuer.token()).status_code == 401
    assert issuer.jwks_fetches == 0


# -- configuration --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "api, problem",
    [
        ({"oidc_algorithms": ("RS256", "HS256")}, "HS256"),
        ({"oidc_algorithms": ("none",)}, "none"),
        ({"oidc_algorithms": ()}, "choose one or more"),
        ({"oidc_issuer": "https://sso.example.org/realms/lab"}, "oidc_audience is required"),
        ({"oidc_issuer": "file:///etc/passwd", "oidc_audience": "x"}, "http(s) URL"),
    ],
)
def test_unsafe_or_incomplete_oidc_settings_are_refused(api: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_settings(None, api=api)
