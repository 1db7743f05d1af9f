"""The failed-login record that several API workers share (api.throttle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api import throttle as throttle_module
from api.throttle import SharedLoginThrottle, Throttled
from catalogd.errors import StoreError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair(path: Path, clock: Clock, **kw: int) -> tuple[SharedLoginThrottle, SharedLoginThrottle]:
    """Two workers' views of one record (as two processes open it)."""
    SharedLoginThrottle.create(path)
    limits = {"max_failures": 3, **kw}
    return (
        SharedLoginThrottle(path, window_s=10.0, clock=clock, **limits),
        SharedLoginThrottle(path, window_s=10.0, clock=clock, **limits),
    )


def test_failures_seen_by_one_worker_throttle_the_other(tmp_path: Path) -> None:
    clock = Clock()
    one, two = pair(tmp_path / "f.sqlite", clock)
    one.failed("192.0.2.1")
    two.failed("192.0.2.1")
    one.check("192.0.2.1")  # two failures: not yet
    two.failed("192.0.2.1")
    for worker in (one, two):
        with pytest.raises(Throttled) as raised:
            worker.check("192.0.2.1")
        assert raised.value.retry_after == 10
    one.check("192.0.2.2")  # another source is not slowed down
    clock.now += 4
    with pytest.raises(Throttled) as raised:
        two.check("192.0.2.1")
    assert raised.value.retry_after == 6
    clock.now += 6  # the oldest failure has left the window
    one.check("192.0.2.1")
    two.check("192.0.2.1")


def test_the_record_stays_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle_module, "SWEEP_EVERY", 10)
    clock = Clock()
    one, _ = pair(tmp_path / "f.sqlite", clock, max_sources=2, max_failures=2)
    for i in range(10):  # the tenth failure sweeps: only the newest four are kept
        one.failed(f"198.51.100.{i}")
    assert one._db.execute("SELECT count(*) FROM failures").fetchone()[0] == 4
    clock.now += 20  # all expired
    for i in range(10):  # the next sweep drops the expired, then caps again
        clock.now += 0.01
        one.failed(f"203.0.113.{i}")
    rows = one._db.execute("SELECT count(*) FROM failures").fetchone()[0]
    assert rows == 2 * 2  # max_sources * max_failures, the newest kept
    one.failed("203.0.113.9")  # its second failure: the limit
    with pytest.raises(Throttled):
        one.check("203.0.113.9")


def test_an_unusable_record_is_a_store_error_never_a_free_pass(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="shared login record"):
        SharedLoginThrottle.create(tmp_path / "missing-dir" / "f.sqlite")
    clock = Clock()
    one, _ = pair(tmp_path / "f.sqlite", clock)
    one.close()
    with pytest.raises(StoreError):
        one.check("192.0.2.1")
