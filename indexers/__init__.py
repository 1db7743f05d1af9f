"""Metadata indexers: NeXus and HDF5, found through the ``catalogd.indexers`` entry points.

The scanner and the daemon use one object and one call::

    with Registry.from_entry_points(settings=settings.indexers) as registry:
        result = registry.extract(path)        # ExtractResult, never raises for bad files
"""

from __future__ import annotations

from indexers.base import ExtractResult, Indexer, IndexerOutput, Probe
from indexers.registry import ENTRY_POINT_GROUP, Registry
from indexers.settings import FieldMapping, IndexerSettings

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
