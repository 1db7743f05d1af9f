"""A resource the whole test session shares (a search node, a cluster), started the
first time a test asks for it and stopped when the session ends (at exit at the latest).

A resource that could not be started is not tried again for every test: the first
failure is remembered and raised to each later caller, so the tests that need it fail
(they are never skipped) without each waiting for its own start to time out.
"""

from __future__ import annotations

import atexit
import subprocess
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Stoppable(Protocol):
    def stop(self) -> None: ...


R = TypeVar("R", bound=Stoppable)


class SessionResource(Generic[R]):
    """``get()`` starts the resource with ``start`` once; ``stop()`` stops it."""

    def __init__(self, start: Callable[[], R]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._resource: R | None = None
        self._failure: str | None = None
        self._registered = False

    def get(self) -> R:
        with self._lock:
            if self._failure is not None:
                raise RuntimeError(self._failure)
            if self._resource is None:
                try:
                    self._resource = self._start()
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    self._failure = str(exc)
                    raise
                if not self._registered:
                    atexit.register(self.stop)
                    self._registered = True
            return self._resource

    def stop(self) -> None:
        with self._lock:
            if self._resource is not None:
                self._resource.stop()
                self._resource = None
