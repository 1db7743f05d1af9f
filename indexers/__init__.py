"""Metadata indexers: NeXus and HDF5, found through the ``catalogd.indexers`` entry points.

The scanner and the daemon use one object and one call::

    with Registry.from_entry_points(settings=settings.indexers) as registry:
        result = registry.extract(path)        # ExtractResult, never raises for bad files

The names below are imported on first use, so that reading the settings
(``indexers.settings``) does not load numpy and h5py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from indexers.base import ExtractResult, Indexer, IndexerOutput, Probe
    from indexers.registry import ENTRY_POINT_GROUP, Registry
    from indexers.settings import FieldMapping, IndexerSettings

_LAZY = {
    "ENTRY_POINT_GROUP": "indexers.registry",
    "ExtractResult": "indexers.base",
    "FieldMapping": "indexers.settings",
    "Indexer": "indexers.base",
    "IndexerOutput": "indexers.base",
    "IndexerSettings": "indexers.settings",
    "Probe": "indexers.base",
    "Registry": "indexers.registry",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "ExtractResult",
    "FieldMapping",
    "Indexer",
    "IndexerOutput",
    "IndexerSettings",
    "Probe",
    "Registry",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'indexers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
