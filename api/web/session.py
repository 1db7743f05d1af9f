"""The web pages' login: a cookie signed by the server that names the user and nothing
secret.

Why a cookie and not HTTP Basic on every page: a browser keeps Basic credentials until
it is closed and offers no way to forget them, so Basic has no logout. The login form
checks the user and password exactly as the API does (:class:`~api.auth.Authenticator`,
with its failed-login limit), then sets ``catalogd_session``: the user name, when the
login was made and when it ends, signed with HMAC-SHA256 under the server's key. The
cookie holds no password and no groups: every page resolves the user's groups from the
directory again (its short cache), so a removal from a group applies to open sessions
too. The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Lax``, ``Path=/ui``
(never sent to the API) and ``Secure`` when the page is served over HTTPS.

CSRF: the only requests that change anything are the login and the logout, both POST
forms carrying a token. Before login the token is a random value also set in a
``SameSite=Strict`` cookie (double submit); after it, the token is an HMAC of the
session cookie, so another site can neither read nor forge it. A POST whose ``Origin``
names another site is refused as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from catalogd.errors import ConfigError

log = logging.getLogger("catalogd.api")

SESSION_COOKIE = "catalogd_session"
CSRF_COOKIE = "catalogd_csrf"
COOKIE_PATH = "/ui"
KEY_BYTES = 32


def load_key(path: Path | None) -> bytes:
    """The signing key in ``path`` (created with a random key, mode 0600, when missing;
    several workers starting at once agree on the first one written), or a random key
    for this process when ``path`` is None."""
    if path is None:
        return secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"[api] session_key_file: cannot create {path}: {exc}") from None
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_hex(KEY_BYTES).encode("ascii"))
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"[api] session_key_file: cannot read {path}: {exc}") from None
    if len(key) < KEY_BYTES:
        raise ConfigError(f"[api] session_key_file: {path} holds fewer than {KEY_BYTES} bytes")
    return key


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    issued: float
    expires: float


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens under one key."""

    def __init__(self, key: bytes, *, max_age_s: float) -> None:
        self._key = key
        self.max_age_s = max_age_s

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def make(self, user: str, now: float) -> str:
        body = json.dumps(
            {"u": user, "i": int(now), "e": int(now + self.max_age_s), "n": secrets.token_hex(8)},
            separators=(",", ":"),
        )
        payload = base64.urlsafe_b64encode(body.encode()).decode("ascii").rstrip("=")
        return f"{payload}.{self._mac('session', payload)}"

    def read(self, cookie: str | None, now: float) -> Session | None:
        """The session ``cookie`` proves, or None (absent, forged, malformed, expired)."""
        if not cookie or len(cookie) > 4096 or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["u"]), float(data["i"]), float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not session.user or not session.issued <= now < session.expires:
            return None
        return session

    def csrf_for(self, cookie: str) -> str:
        """The CSRF token of the forms of a logged-in page."""
        return self._mac("csrf", cookie)

    def csrf_matches(self, token: str | None, expected: str | None) -> bool:
        return bool(token) and bool(expected) and hmac.compare_digest(str(token), str(expected))
