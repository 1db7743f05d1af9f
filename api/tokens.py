"""Service tokens: how the data portal authenticates to act for its users.

``[api] service_tokens_file`` names a TOML file that maps a token's name to the SHA-256
(hex) of the token::

    # printf %s "$TOKEN" | sha256sum
    data-portal = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

Only the digest is ever on the server: the secret is neither in the configuration nor
in any log. A presented token is hashed and compared with *every* digest in constant
time (:func:`hmac.compare_digest`, no early exit), so the answer time says nothing about
how close a guess was. The portal names the end user in a header; that user's groups
apply, never the portal's (see :mod:`api.auth`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from catalogd.errors import ConfigError, describe_os_error

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ServiceTokens:
    """Token name -> SHA-256 digest of the token."""

    digests: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def load(cls, path: Path | None) -> ServiceTokens:
        """Read the tokens file (none: no service tokens); ConfigError names the problem."""
        if path is None:
            return cls()
        where = f"[api] service_tokens_file {path}"
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it: {describe_os_error(exc)}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
        digests = []
        for name, value in data.items():
            if not isinstance(value, str) or not _DIGEST.fullmatch(value.strip().lower()):
                raise ConfigError(
                    f"{where}: {name!r} must be the SHA-256 of the token as 64 hex digits "
                    '(printf %s "$TOKEN" | sha256sum)'
                )
            digests.append((name, bytes.fromhex(value.strip())))
        return cls(tuple(digests))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def match(self, token: str) -> str | None:
        """The name of the service token ``token`` is, or None."""
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: str | None = None
        for name, digest in self.digests:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        return found
