"""The project's exceptions.

One base class carries a message and the exit status the CLI turns it into.
Foreign exceptions (sqlite3, elasticsearch, ldap3, h5py) are translated into these
at the edge of the module that uses the library, never further in.
"""

from __future__ import annotations

import os

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_UNAVAILABLE = 69  # sysexits.h: a service (store, directory) is unavailable
EX_SOFTWARE = 70
EX_TEMPFAIL = 75  # sysexits.h: try again later (a full disk); systemd restarts the unit
EX_CONFIG = 78  # sysexits.h: systemd's RestartPreventExitStatus=78 stops a restart loop


class CatalogdError(Exception):
    """Base of every error catalogd raises on purpose."""

    exit_code: int = EX_FAILURE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(CatalogdError):
    """The caller asked for something that cannot be done as asked."""

    exit_code = EX_USAGE


class ConfigError(CatalogdError):
    """The configuration is invalid; the message names the key."""

    exit_code = EX_CONFIG


class MissingDependency(CatalogdError):
    """An optional dependency is not installed."""

    exit_code = EX_UNAVAILABLE

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this feature needs the Python package {module!r}, which is not installed; "
            f"install it with: pip install 'catalogd[{extra}]'"
        )
        self.module = module
        self.extra = extra


class StoreError(CatalogdError):
    """The catalogue store failed to read or write."""


class StoreUnavailable(StoreError):
    """The catalogue store cannot be reached or opened."""

    exit_code = EX_UNAVAILABLE


class ExtractionError(CatalogdError):
    """Metadata could not be read from a file."""


def describe_os_error(exc: OSError) -> str:
    """A one-line, human description of an OSError, naming the file when known."""
    reason = exc.strerror or os.strerror(exc.errno or 0) or type(exc).__name__
    if exc.filename is not None:
        return f"{os.fsdecode(exc.filename)}: {reason}"
    return reason
