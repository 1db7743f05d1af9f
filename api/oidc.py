"""OpenID Connect bearer tokens, checked with PyJWT against the issuer's published keys.

What a token must be to name a user:

* signed with an algorithm from ``[api] oidc_algorithms`` (public-key algorithms only:
  ``none`` and HMAC are refused before any key is looked up, which closes the
  algorithm-confusion attack of an HS256 token "signed" with the issuer's public key);
* by a key of the issuer's JWKS, found by the token's ``kid``. The key set comes from
  ``[api] oidc_jwks_url`` or the ``jwks_uri`` of ``{issuer}/.well-known/openid-
  configuration``, and is cached by :class:`jwt.PyJWKClient` for ``oidc_jwks_cache_s``;
  an unknown ``kid`` refetches the set once (so a rotated key works at once), at most
  once per ``oidc_jwks_cooldown_s``;
* with ``iss`` equal to the configured issuer, ``aud`` containing the configured
  audience, and ``exp`` in the future (``nbf``/``iat`` honoured), allowing
  ``oidc_leeway_s`` of clock skew;
* with the username claim (``preferred_username`` by default) a non-empty string.

The token's group or role claims are never read: the server resolves the user's groups
from the directory. A key set that cannot be fetched is :class:`KeysUnavailable` (503),
not a failed login.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import jwt

from catalogd.errors import EX_UNAVAILABLE, CatalogdError

DISCOVERY_PATH = "/.well-known/openid-configuration"
FETCH_TIMEOUT_S = 5.0
#: Claims a token must carry.
REQUIRED_CLAIMS = ["exp", "iss", "aud"]


class InvalidToken(CatalogdError):
    """The bearer token does not prove who the caller is (401)."""


class KeysUnavailable(CatalogdError):
    """The issuer's discovery document or key set cannot be fetched (503)."""

    exit_code = EX_UNAVAILABLE


class OidcVerifier:
    """Checks OpenID Connect access or ID tokens of one issuer and audience."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str],
        username_claim: str = "preferred_username",
        leeway_s: float = 30.0,
        jwks_url: str | None = None,
        cache_s: float = 300.0,
        cooldown_s: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.username_claim = username_claim
        self.leeway_s = leeway_s
        self.jwks_url = jwks_url
        self.cache_s = cache_s
        self.cooldown_s = cooldown_s
        self._client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def username(self, token: str) -> str:
        """The user ``token`` names; InvalidToken or KeysUnavailable otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a valid JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise InvalidToken(f"tokens signed with {algorithm!r} are not accepted") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no signing key (kid)")
        try:
            key = self._jwks().get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise KeysUnavailable("the token issuer's keys cannot be fetched") from None
        except jwt.PyJWKClientError:
            raise InvalidToken("the token is signed by a key the issuer does not publish") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token was issued by another issuer") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is meant for another audience") from None
        except jwt.PyJWTError:
            raise InvalidToken("the token's signature or claims are not valid") from None
        user = claims.get(self.username_claim)
        if not isinstance(user, str) or not user.strip():
            raise InvalidToken(f"the token has no {self.username_claim!r} claim")
        return user

    def _jwks(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._client is None:
                url = self.jwks_url or self._discover_jwks_url()
                try:
                    self._client = jwt.PyJWKClient(
                        url,
                        lifespan=self.cache_s,
                        cooldown_duration=self.cooldown_s,
                        timeout=FETCH_TIMEOUT_S,
                    )
                except jwt.PyJWKClientError:
                    raise KeysUnavailable("the issuer publishes an unusable jwks_uri") from None
            return self._client

    def _discover_jwks_url(self) -> str:
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310
                document = json.loads(response.read(1 << 20))
        except (OSError, ValueError, urllib.error.URLError):
            raise KeysUnavailable("the issuer's discovery document cannot be fetched") from None
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise KeysUnavailable("the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise KeysUnavailable("the discovery document has no jwks_uri")
        return jwks_uri
