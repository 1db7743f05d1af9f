"""The registry: the indexers in use, and the one call that extracts a file.

Built from the ``catalogd.indexers`` entry-point group (the built-in NeXus and HDF5
indexers are registered there exactly as a site's own would be), or from an explicit
list in tests. :meth:`Registry.extract` never raises for a bad file: every outcome is an
:class:`~indexers.base.ExtractResult`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Generator, Iterable, Sequence
from importlib.metadata import entry_points
from types import TracebackType

from catalogd.document import KIND_HDF5, KIND_OTHER
from catalogd.errors import ConfigError, ExtractionError, describe_os_error
from indexers.base import (
    Deadline,
    ExtractionTimeout,
    ExtractResult,
    FileChanged,
    Indexer,
    Probe,
    ResultLine,
    probe_file,
)
from indexers.settings import IndexerSettings
from indexers.worker import ProcessExtractor

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "catalogd.indexers"

_FORMAT_NAMES = {
    "hdf4": "an HDF4 file (signature \\x0e\\x03\\x13\\x01)",
    "netcdf3": "a netCDF-3 classic file (signature CDF\\x01)",
    "netcdf3-64bit": "a netCDF-3 64-bit offset file (signature CDF\\x02)",
    "netcdf3-cdf5": "a netCDF CDF-5 file (signature CDF\\x05)",
}


class Registry:
    """The indexers in use, highest priority first, and the settings they run with."""

    def __init__(
        self, indexers: Iterable[Indexer], *, settings: IndexerSettings | None = None
    ) -> None:
        self.settings = settings if settings is not None else IndexerSettings()
        chosen = list(indexers)
        for indexer in chosen:
            if not isinstance(indexer, Indexer):
                raise ConfigError(
                    f"{indexer!r} is not an indexer (name, priority, accepts, extract)"
                )
        if self.settings.enabled is not None:
            names = {i.name for i in chosen}
            unknown = sorted(set(self.settings.enabled) - names)
            if unknown:
                raise ConfigError(
                    f"indexers.enabled names indexers that are not installed: {', '.join(unknown)}"
                    f" (installed: {', '.join(sorted(names)) or 'none'})"
                )
            chosen = [i for i in chosen if i.name in self.settings.enabled]
        self.indexers: tuple[Indexer, ...] = tuple(sorted(chosen, key=lambda i: -i.priority))
        self._process: ProcessExtractor | None = None
        self._process_lock = threading.Lock()

    @classmethod
    def from_entry_points(
        cls, *, settings: IndexerSettings | None = None, group: str = ENTRY_POINT_GROUP
    ) -> Registry:
        """Every indexer installed in the entry-point group (one that fails to load is
        logged and left out)."""
        found: list[Indexer] = []
        for point in sorted(entry_points(group=group), key=lambda p: p.name):
            try:
                target = point.load()
                indexer = target() if isinstance(target, type) else target
            except Exception as exc:  # a broken plug-in must not stop the daemon
                log.error("indexer %s (%s) could not be loaded: %s", point.name, point.value, exc)
                continue
            found.append(indexer)
        return cls(found, settings=settings)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.indexers)

    def indexer_for(self, probe: Probe) -> Indexer | None:
        return choose(self.indexers, probe)

    def extract(self, path: str) -> ExtractResult:
        """Extract one file within the configured bounds. Never raises for bad files."""
        path = os.fspath(path)
        if self.settings.isolation == "inline":
            return extract_inline(self.indexers, path, self.settings)
        return self._pool().extract(path)

    def extract_many(self, paths: Iterable[str]) -> Generator[ExtractResult, None, None]:
        """One result per path, in the order of ``paths``, read by up to
        ``settings.workers`` processes in parallel. Never raises for bad files."""
        if self.settings.isolation == "inline":
            for path in paths:
                yield extract_inline(self.indexers, os.fspath(path), self.settings)
            return
        yield from self._pool().extract_many(os.fspath(path) for path in paths)

    def extract_lines(self, paths: Iterable[str]) -> Generator[ResultLine, None, None]:
        """:meth:`extract_many` as ``catalogd extract`` lines, in the order of ``paths``;
        worker processes send each line made (not the result's data to make it from)."""
        if self.settings.isolation == "inline":
            for result in self.extract_many(paths):
                yield ResultLine.of(result)
            return
        yield from self._pool().extract_lines(os.fspath(path) for path in paths)

    def _pool(self) -> ProcessExtractor:
        with self._process_lock:
            if self._process is None:
                self._process = ProcessExtractor(self.indexers, self.settings)
            return self._process

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        with self._process_lock:
            process, self._process = self._process, None
        if process is not None:
            process.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def choose(indexers: Sequence[Indexer], probe: Probe) -> Indexer | None:
    for indexer in indexers:
        try:
            if indexer.accepts(probe):
                return indexer
        except Exception as exc:
            log.error("indexer %s failed to look at %s: %s", indexer.name, probe.path, exc)
    return None


def extract_inline(
    indexers: Sequence[Indexer], path: str, settings: IndexerSettings
) -> ExtractResult:
    """Extract in this process: probe, choose, read (with bounded retries), wrap."""
    started = time.monotonic()
    deadline = Deadline(settings.timeout_s)

    def failure(message: str, kind: str = KIND_OTHER, indexer: str | None = None) -> ExtractResult:
        elapsed = time.monotonic() - started
        return ExtractResult.failure(path, message, kind=kind, indexer=indexer, elapsed_s=elapsed)

    try:
        probe = probe_file(path)
    except FileNotFoundError:
        return failure("no such file")
    except OSError as exc:
        return failure(describe_os_error(exc))
    indexer = choose(indexers, probe)
    if indexer is None:
        return _unclaimed(probe, settings, started)
    kind = KIND_HDF5 if probe.is_hdf5 else KIND_OTHER
    attempt = 0
    while True:
        try:
            output = indexer.extract(probe, settings, deadline)
        except ExtractionTimeout as exc:
            return failure(f"timed out: {exc}", kind, indexer=indexer.name)
        except ExtractionError as exc:
            retry = isinstance(exc, FileChanged) or _changed(probe)
            if (
                retry
                and attempt < settings.retries
                and deadline.remaining() > settings.retry_delay_s
            ):
                attempt += 1
                time.sleep(settings.retry_delay_s)
                try:
                    probe = probe_file(path)
                except OSError as os_exc:
                    return failure(describe_os_error(os_exc), kind, indexer=indexer.name)
                continue
            suffix = f" (after {attempt + 1} attempts)" if attempt else ""
            return failure(f"{exc.message}{suffix}", kind, indexer=indexer.name)
        except MemoryError:
            return failure(
                f"the memory bound ({settings.max_memory_mb} MiB) was exceeded reading this file",
                kind,
                indexer=indexer.name,
            )
        except Exception as exc:
            log.exception("indexer %s failed on %s", indexer.name, path)
            return failure(
                f"internal error in indexer {indexer.name}: {type(exc).__name__}: {exc}",
                kind,
                indexer=indexer.name,
            )
        return ExtractResult(
            path=path,
            ok=True,
            kind=output.kind,
            entries=tuple(output.entries),
            metadata=dict(output.metadata),
            indexer=indexer.name,
            elapsed_s=time.monotonic() - started,
        )


def _changed(probe: Probe) -> bool:
    """Whether the file's size or mtime moved since the probe (a writer is at work)."""
    try:
        st = os.stat(probe.path)
    except OSError:
        return False
    return st.st_size != probe.size or st.st_mtime_ns != probe.mtime_ns


def _unclaimed(probe: Probe, settings: IndexerSettings, started: float) -> ExtractResult:
    """No indexer takes the file: kind ``other``; an error when its suffix claims HDF5."""
    metadata: dict[str, object] = {"format": probe.format} if probe.format else {}
    elapsed = time.monotonic() - started
    if probe.suffix not in settings.hdf5_suffixes:
        return ExtractResult(path=probe.path, ok=True, metadata=metadata, elapsed_s=elapsed)
    if probe.size == 0:
        what = "an empty file (0 bytes)"
    elif probe.is_hdf5:
        what = "an HDF5 file no installed indexer accepts"
    elif probe.format in _FORMAT_NAMES:
        what = _FORMAT_NAMES[probe.format]
    elif probe.format:
        what = f"a {probe.format} file"
    else:
        what = f"no HDF5 signature at offset 0 or at 512, 1024, ... ({probe.size} bytes)"
    return ExtractResult.failure(
        probe.path,
        f"not an HDF5 file despite the suffix {probe.suffix}: {what}",
        metadata=metadata,
        elapsed_s=elapsed,
    )
