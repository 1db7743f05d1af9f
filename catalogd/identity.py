"""User and group names, resolved once per id (never per entry)."""

from __future__ import annotations

import grp
import pwd
import threading


class NameCache:
    """Caches uid/gid <-> name look-ups; unknown ids and names give None."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[int, str | None] = {}
        self._groups: dict[int, str | None] = {}
        self._uids: dict[str, int | None] = {}
        self._gids: dict[str, int | None] = {}

    def owner(self, uid: int) -> str | None:
        try:
            return self._users[uid]
        except KeyError:
            pass
        try:
            name: str | None = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        with self._lock:
            self._users[uid] = name
        return name

    def group(self, gid: int) -> str | None:
        try:
            return self._groups[gid]
        except KeyError:
            pass
        try:
            name: str | None = grp.getgrgid(gid).gr_name
        except KeyError:
            name = None
        with self._lock:
            self._groups[gid] = name
        return name

    def uid_of(self, name: str) -> int | None:
        try:
            return self._uids[name]
        except KeyError:
            pass
        try:
            uid: int | None = pwd.getpwnam(name).pw_uid
        except KeyError:
            uid = None
        with self._lock:
            self._uids[name] = uid
        return uid

    def gid_of(self, name: str) -> int | None:
        try:
            return self._gids[name]
        except KeyError:
            pass
        try:
            gid: int | None = grp.getgrnam(name).gr_gid
        except KeyError:
            gid = None
        with self._lock:
            self._gids[name] = gid
        return gid
