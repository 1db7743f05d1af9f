"""Indexers that misbehave on purpose, for the registry and worker-pool tests.

They live in a module of their own so worker processes can import them by name.
"""

from __future__ import annotations

import os
import time

from indexers.base import Deadline, IndexerOutput, Probe
from indexers.settings import IndexerSettings


class SleepingIndexer:
    """Stuck where no cooperative check can reach it (as in a C call)."""

    name = "sleeper"
    priority = 100

    def accepts(self, probe: Probe) -> bool:
        return probe.path.endswith(".sleep")

    def extract(self, probe: Probe, settings: IndexerSettings, deadline: Deadline) -> IndexerOutput:
        time.sleep(60)
        return IndexerOutput(kind="other")


class CrashingIndexer:
    """Dies the way a segfault in the HDF5 library would."""

    name = "crasher"
    priority = 100

    def accepts(self, probe: Probe) -> bool:
        return probe.path.endswith(".crash")

    def extract(self, probe: Probe, settings: IndexerSettings, deadline: Deadline) -> IndexerOutput:
        os.kill(os.getpid(), 9)
        return IndexerOutput(kind="other")


class GreedyIndexer:
    """Allocates far beyond the memory bound."""

    name = "greedy"
    priority = 100

    def accepts(self, probe: Probe) -> bool:
        return probe.path.endswith(".greedy")

    def extract(self, probe: Probe, settings: IndexerSettings, deadline: Deadline) -> IndexerOutput:
        hog = bytearray(4 * 1024**3)
        return IndexerOutput(kind="other", metadata={"size": len(hog)})


class BrokenIndexer:
    name = "broken"
    priority = 100

    def accepts(self, probe: Probe) -> bool:
        return probe.path.endswith(".broken")

    def extract(self, probe: Probe, settings: IndexerSettings, deadline: Deadline) -> IndexerOutput:
        raise ZeroDivisionError("oops")
