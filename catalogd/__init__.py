"""catalogd: catalogue and police a light source's /data tree."""

from __future__ import annotations

__version__ = "0.1.0"
