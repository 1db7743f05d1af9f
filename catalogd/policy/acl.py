"""POSIX ACLs as Linux stores them in extended attributes.

``system.posix_acl_access`` and ``system.posix_acl_default`` hold a little-endian
header (version 2) followed by entries of ``(tag: u16, perm: u16, id: u32)``. Parsing is
pure; :func:`read_acls` is the one place that touches the disk.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass

ACCESS_XATTR = "system.posix_acl_access"
DEFAULT_XATTR = "system.posix_acl_default"
ACL_VERSION = 2

USER_OBJ = 0x01
USER = 0x02
GROUP_OBJ = 0x04
GROUP = 0x08
MASK = 0x10
OTHER = 0x20

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_TAG_NAMES = {
    USER_OBJ: "user::",
    USER: "user:",
    GROUP_OBJ: "group::",
    GROUP: "group:",
    MASK: "mask::",
    OTHER: "other::",
}
#: Errors meaning "this entry has no ACL" (or the file system has none).
_NO_ACL = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass(frozen=True, slots=True)
class AclEntry:
    tag: int
    perm: int  # rwx as 4, 2, 1
    id: int | None  # the uid or gid of a named entry, else None

    def text(self, name: str | None = None) -> str:
        """``user:alice:rwx`` style, with ``name`` (or the id) for named entries."""
        perms = "".join(c if self.perm & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))
        who = "" if self.id is None else (name if name is not None else str(self.id))
        prefix = _TAG_NAMES.get(self.tag, f"tag{self.tag}:")
        return f"{prefix}{who}:{perms}" if self.id is not None else f"{prefix}{perms}"


@dataclass(frozen=True, slots=True)
class Acls:
    """The access and default ACL of one entry (empty when it has none)."""

    access: tuple[AclEntry, ...] = ()
    default: tuple[AclEntry, ...] = ()


NO_ACLS = Acls()


def parse_acl(data: bytes) -> tuple[AclEntry, ...]:
    """The entries of one ACL xattr value. Raises ValueError when it is malformed."""
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
        raise ValueError(f"ACL of {len(data)} bytes is malformed")
    (version,) = _HEADER.unpack_from(data)
    if version != ACL_VERSION:
        raise ValueError(f"ACL version {version} is not supported")
    entries = []
    for offset in range(_HEADER.size, len(data), _ENTRY.size):
        tag, perm, ident = _ENTRY.unpack_from(data, offset)
        entries.append(AclEntry(tag, perm & 0o7, ident if tag in (USER, GROUP) else None))
    return tuple(entries)


def encode_acl(entries: tuple[AclEntry, ...] | list[AclEntry]) -> bytes:
    """The xattr value for ``entries``, in the order the kernel requires (by tag, then
    id): the inverse of :func:`parse_acl`."""
    out = [_HEADER.pack(ACL_VERSION)]
    for entry in sorted(entries, key=lambda e: (e.tag, e.id or 0)):
        ident = entry.id if entry.id is not None else 0xFFFFFFFF
        out.append(_ENTRY.pack(entry.tag, entry.perm, ident))
    return b"".join(out)


def read_acls(path: str, *, is_dir: bool) -> Acls:
    """The ACLs of ``path`` (never following a symlink). Raises OSError for errors other
    than "no ACL here"; a malformed value raises ValueError."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_ACL:
            return NO_ACLS
        raise
    if not names:
        return NO_ACLS
    access = _read(path, ACCESS_XATTR) if ACCESS_XATTR in names else ()
    default = _read(path, DEFAULT_XATTR) if is_dir and DEFAULT_XATTR in names else ()
    return Acls(access, default) if access or default else NO_ACLS


def _read(path: str, name: str) -> tuple[AclEntry, ...]:
    try:
        return parse_acl(os.getxattr(path, name, follow_symlinks=False))
    except OSError as exc:
        if exc.errno in _NO_ACL:
            return ()
        raise
