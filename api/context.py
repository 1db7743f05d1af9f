"""What every request handler shares: the settings, the store, the authenticator, the
metrics and the clock, kept on the application (``app.state.catalogd``).

The embargo lives here too: with ``[api] embargo_years = N`` (N > 0), documents whose
visit date is more than N years before today (UTC, by the injected clock) are visible to
every authenticated caller; the store applies it inside its query (``public_before``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from api.auth import Authenticator
from api.metrics import ApiMetrics
from api.principal import Directory
from catalogd.config import Settings
from catalogd.store.base import Store


@dataclass(frozen=True, slots=True)
class ApiContext:
    settings: Settings
    store: Store
    directory: Directory | None
    authenticator: Authenticator
    metrics: ApiMetrics
    #: POSIX time now (``time.time`` outside tests).
    clock: Callable[[], float]

    def public_before(self) -> str | None:
        """The embargo cutoff (ISO date) for today, or None when the embargo is off."""
        return embargo_cutoff(self.clock(), self.settings.api.embargo_years)


def embargo_cutoff(now: float, years: int) -> str | None:
    """The date ``years`` before the UTC date of ``now`` (29 February -> 28 February), as
    ``YYYY-MM-DD``; None when ``years`` is 0."""
    if years <= 0:
        return None
    today = dt.datetime.fromtimestamp(now, tz=dt.UTC).date()
    try:
        cutoff = today.replace(year=today.year - years)
    except ValueError:  # 29 February in a year that has none
        cutoff = today.replace(year=today.year - years, day=28)
    return cutoff.isoformat()
