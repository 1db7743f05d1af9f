"""Logging: one line per event, text or JSON, and no secret ever written.

:func:`setup` installs one handler on the root logger (standard error, which journald
collects under systemd); :func:`apply_settings` then switches it to the configured
``[log] format`` and learns the configuration's secrets.

- ``text``: ``2026-11-24T00:49:58.123Z INFO catalogd.daemon.service: message``; a
  traceback stays on the same line, its line breaks written as ``\\n``.
- ``json``: one object per line with ``ts`` (ISO 8601, UTC), ``level``, ``logger``,
  ``msg``, ``pid``, ``thread``, ``exc`` (a traceback, when there is one) and every
  ``extra=`` field of the call, so a log shipper indexes them without parsing.

**Secrets.** Every :class:`~pydantic.SecretStr` of the settings (the LDAP bind password,
read from its file or given directly), the password of any URL in the settings, and
whatever :func:`add_secret` is given are replaced by ``**********`` in the *formatted*
line, so a secret reaching a message, an argument, an ``extra`` field or an exception
text is masked all the same. Passwords written into URLs (``https://user:pw@host``) are
masked wherever they appear, known or not.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from catalogd.config import SECRET_MASK, Settings

Format = Literal["text", "json"]

#: The attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
#: ``scheme://user:password@`` in any text.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")
#: Secrets shorter than this are not masked (a one-letter "secret" would mangle every
#: line); the settings refuse nothing for it, this only protects the log's readability.
MIN_SECRET_CHARS = 4


class Redactor:
    """Replaces known secrets (and URL passwords) in text; shared by the formatters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()

    def add(self, secrets: Iterable[str]) -> None:
        fresh: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_CHARS:
                # As written, and as it reads inside a JSON string.
                fresh |= {secret, json.dumps(secret, ensure_ascii=False)[1:-1]}
        with self._lock:
            self._secrets = self._secrets | fresh

    def __call__(self, text: str) -> str:
        # Longest first, so a secret containing another is masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, SECRET_MASK)
        return _URL_PASSWORD.sub(rf"\g<head>{SECRET_MASK}@", text)


REDACTOR = Redactor()


def _iso(created: float) -> str:
    return dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE`` on one line, secrets masked."""

    def __init__(self, redact: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_iso(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += " | " + self.formatException(record.exc_info)
        elif record.exc_text:
            text += " | " + record.exc_text
        if record.stack_info:
            text += " | " + self.formatStack(record.stack_info)
        return self.redact(text.replace("\r", "\\r").replace("\n", "\\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, secrets masked."""

    def __init__(self, redact: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in data:
                data[key] = value
        line = json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":"))
        # Masking the encoded line keeps it valid JSON: the mask has no quote or
        # backslash, and a secret is matched as it appears once encoded.
        return self.redact(line)


_HANDLER_NAME = "catalogd"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _handler() -> logging.Handler | None:
    for handler in logging.getLogger().handlers:
        if handler.get_name() == _HANDLER_NAME:
            return handler
    return None


def setup(level: int | str = logging.WARNING, *, stream: TextIO | None = None) -> None:
    """Install the one-line text handler on the root logger (idempotent)."""
    root = logging.getLogger()
    handler = _handler()
    if handler is None:
        handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(TextFormatter())
        root.addHandler(handler)
    root.setLevel(level)


def set_format(fmt: Format) -> None:
    handler = _handler()
    if handler is not None:
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())


def json_enabled() -> bool:
    """Whether the handler writes JSON (``[log] format = "json"``)."""
    handler = _handler()
    return handler is not None and isinstance(handler.formatter, JsonFormatter)


def add_secret(*secrets: str) -> None:
    """Never log these (a token read at run time, for instance)."""
    REDACTOR.add(secrets)


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret of the settings: SecretStr values and passwords inside URLs."""
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                visit(item)
        elif isinstance(value, str) and "@" in value and "://" in value:
            for url in value.split(","):
                try:
                    password = urlsplit(url.strip()).password
                except ValueError:
                    continue
                if password:
                    found.append(password)

    visit(settings)
    return found


def apply_settings(settings: Settings) -> None:
    """Use ``[log] format`` and learn the settings' secrets."""
    add_secret(*settings_secrets(settings))
    set_format(settings.log.format)
