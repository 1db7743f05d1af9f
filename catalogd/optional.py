"""Optional dependencies: import them where needed, with the install hint when absent."""

from __future__ import annotations

import importlib
from types import ModuleType

from catalogd.errors import MissingDependency


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``; raise MissingDependency naming ``pip install 'catalogd[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(module, extra) from None
