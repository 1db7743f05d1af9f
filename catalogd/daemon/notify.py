"""sd_notify(3): tell systemd that the daemon is ready, alive, busy or stopping.

A unit with ``Type=notify`` starts the daemon with ``$NOTIFY_SOCKET`` naming a datagram
socket (a path, or an abstract-namespace name written with a leading ``@``); each
message is one datagram of ``KEY=VALUE`` lines:

- ``READY=1`` once the daemon is watching (the reconcile at start may still run);
- ``STATUS=...`` a line ``systemctl status`` shows (reconcile progress, a degraded store);
- ``WATCHDOG=1`` a keep-alive, due every ``$WATCHDOG_USEC`` microseconds when the unit
  sets ``WatchdogSec=``; sent at half that interval, from the daemon's main loop, so a
  hung loop stops the pings and systemd restarts the service;
- ``STOPPING=1`` when shutting down.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing. A failed send is
logged once and never stops the daemon. The environment is read when the
:class:`Notifier` is built (:meth:`Notifier.from_environ`), never at import time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

#: The longest STATUS= text sent (systemd shows one line).
STATUS_MAX_CHARS = 200


def socket_address(name: str) -> str | bytes:
    """The address to send to for a ``$NOTIFY_SOCKET`` value: a file system path, or
    ``@name`` for the abstract namespace (a leading NUL byte)."""
    if name.startswith("@"):
        return b"\0" + os.fsencode(name[1:])
    return name


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None when
    no watchdog is set for this process (``$WATCHDOG_PID``, when set, must be ``pid``)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1e6 / 2


class Notifier:
    """Sends sd_notify messages; a no-op without a socket."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self._monotonic = monotonic
        self._next_ping = 0.0
        self._sock: socket.socket | None = None
        self._warned = False
        self._last_status = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        return cls(address, watchdog_s=watchdog_interval(env, os.getpid()) if address else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one message of ``KEY=VALUE`` lines; True when it was sent."""
        if self.address is None:
            return False
        lines = [f"{key}={value}" for key, value in fields.items()]
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, socket_address(self.address))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        fields = {"READY": "1"}
        if status:
            fields["STATUS"] = self._clip(status)
            self._last_status = fields["STATUS"]
        self.send(**fields)

    def status(self, text: str) -> None:
        """Send ``STATUS=`` when the text changed since the last one."""
        text = self._clip(text)
        if text != self._last_status:
            self._last_status = text
            self.send(STATUS=text)

    def stopping(self, status: str = "stopping") -> None:
        self.send(STOPPING="1", STATUS=self._clip(status))

    def watchdog(self) -> None:
        """Ping the watchdog if one is set and a ping is due (call it from the loop)."""
        if self.watchdog_s is None:
            return
        now = self._monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_s
            self.send(WATCHDOG="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _clip(text: str) -> str:
        line = " ".join(text.split())
        return line if len(line) <= STATUS_MAX_CHARS else line[: STATUS_MAX_CHARS - 3] + "..."
