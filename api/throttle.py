"""Failed logins slow a source down: after N failures within a window, 429.

A source (the client's address) that failed to authenticate ``max_failures`` times in
the last ``window_s`` seconds is refused *before* its credentials are looked at, until
its oldest failure in the window has aged out; the answer carries ``Retry-After``. The
limit counts failures only: a source that logs in correctly is never slowed down, and a
success does not wipe its failures (else a guesser could interleave its own valid
login). The clock is injected, so tests move time instead of sleeping.

Memory is bounded: at most ``max_sources`` sources are tracked, the least recently
failing ones forgotten first.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

from catalogd.errors import CatalogdError

#: Sources tracked at most (an address costs a deque of at most max_failures floats).
MAX_SOURCES = 100_000


class Throttled(CatalogdError):
    """Too many failed logins from this source recently: answered 429."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins from this address; try again in {retry_after} s")
        self.retry_after = retry_after


class LoginThrottle:
    """Per-source record of recent authentication failures."""

    def __init__(
        self,
        *,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float],
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, source: str) -> None:
        """Raise :class:`Throttled` when ``source`` may not try to log in now."""
        with self._lock:
            now = self.clock()
            recent = self._recent(source, now)
            if recent is not None and len(recent) >= self.max_failures:
                wait = recent[0] + self.window_s - now
                raise Throttled(max(1, math.ceil(wait)))

    def failed(self, source: str) -> None:
        """Record one failed login from ``source``."""
        with self._lock:
            now = self.clock()
            recent = self._recent(source, now)
            if recent is None:
                recent = self._failures[source] = deque(maxlen=self.max_failures)
                while len(self._failures) > self.max_sources:
                    self._failures.popitem(last=False)
            recent.append(now)
            self._failures.move_to_end(source)

    def _recent(self, source: str, now: float) -> deque[float] | None:
        recent = self._failures.get(source)
        if recent is None:
            return None
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if not recent:
            del self._failures[source]
            return None
        return recent
