"""The bad-input corpus (tests/bad_inputs.py) through ``catalogd extract`` and through
the running daemon, and files deleted or truncated while they are being read.

``catalogd extract`` runs as the unprivileged user nobody and the daemon as root
without the capabilities that read past file modes, so the unreadable file really is
unreadable (plain root reads everything). What a reader must make
of each case is the corpus's ``expect``; every run is recorded for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bad_inputs import SECRET, BadInput, build_corpus, mode_for_nobody
from conftest import as_nobody
from reliability import DaemonProcess, Outcome, Recorder, descendants, wait_for

from catalogd.document import FileDocument, display_path, document_id, to_json
from catalogd.store import open_store
from indexers.registry import Registry
from indexers.settings import IndexerSettings

VISIT = ("visitor", "id11", "p1", "20240101", "raw")
#: A bad file is read (or refused) within this many seconds, whatever it holds.
PER_FILE_BOUND_S = 5.0
#: No document or JSON line may carry more than this: huge strings are bounded.
MAX_LINE_BYTES = 1024 * 1024
CATALOGD = str(Path(sys.executable).with_name("catalogd"))


class Corpus:
    def __init__(self, top: Path) -> None:
        self.top = top
        self.root = top / "data"
        self.visit = self.root.joinpath(*VISIT)
        self.outside = top / "outside"
        self.cases = build_corpus(self.visit, self.outside)
        mode_for_nobody(top)
        self.top.chmod(0o755)

    @property
    def files(self) -> list[BadInput]:
        return [c for c in self.cases if not c.link]


@pytest.fixture(scope="module")
def corpus() -> Iterator[Corpus]:
    top = Path(tempfile.mkdtemp(prefix="catalogd-corpus-"))
    try:
        yield Corpus(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def judge(case: BadInput, ok: bool, error: str | None, kind: str) -> str | None:
    """Why this result is wrong for this case, or None when it is right."""
    if error is not None and ("Traceback" in error or not error.strip()):
        return f"not a clear error: {error!r}"
    if case.expect == "error":
        if ok or not error:
            return "read as fine"
        if case.error_has and case.error_has not in error:
            return f"error {error!r} does not say {case.error_has!r}"
    elif case.expect == "ok":
        if not ok:
            return f"failed: {error}"
    elif not ok and not error:
        return "failed without saying why"
    elif ok and kind not in ("hdf5", "nexus"):
        return f"read as {kind}"
    return None


def test_extract_the_corpus_as_nobody(corpus: Corpus, reliability: Recorder) -> None:
    files = corpus.files
    started = time.monotonic()
    done = as_nobody(CATALOGD, "extract", *(c.path for c in files))
    elapsed = time.monotonic() - started
    lines = done.stdout.splitlines()
    records = [json.loads(line) for line in lines]
    wrong = {}
    for case, record in zip(files, records, strict=False):
        problem = judge(case, record["ok"], record["error"], record["kind"])
        if record["path"] != display_path(case.path):
            problem = f"line for {record['path']!r}"
        if problem:
            wrong[case.name] = problem
    longest = max(len(line.encode()) for line in lines)
    reliability.record(
        Outcome(
            group="bad input",
            name="catalogd extract over the corpus",
            load=f"{len(files)} bad files in one command, as nobody",
            fault="; ".join(sorted({c.name.split(" (")[0] for c in files})),
            expected=len(files),
            indexed=len(records) - len(wrong),
            lost=len(files) - len(records),
            details={"elapsed_s": round(elapsed, 1), "longest_line_bytes": longest},
        )
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert len(records) == len(files)  # one line each, in order
    assert wrong == {}
    assert longest < MAX_LINE_BYTES


def test_an_external_link_outside_the_data_root_is_not_followed(corpus: Corpus) -> None:
    [case] = [c for c in corpus.files if c.name == "external link outside the data root"]
    done = subprocess.run(
        [CATALOGD, "extract", case.path],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CATALOGD_CONFIG": "", "CATALOGD_WATCH_ROOT": str(corpus.root)},
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout


def test_every_corpus_file_is_read_within_the_bound(corpus: Corpus, reliability: Recorder) -> None:
    settings = IndexerSettings(timeout_s=PER_FILE_BOUND_S, workers=1)
    times: dict[str, float] = {}
    with Registry.from_entry_points(settings=settings) as registry:
        for case in corpus.files:
            started = time.monotonic()
            result = registry.extract(case.path)
            times[case.name] = time.monotonic() - started
            assert result.error is None or "Traceback" not in result.error
    slowest = max(times, key=times.__getitem__)
    reliability.record(
        Outcome(
            group="bad input",
            name="time to read each bad file",
            load=f"{len(times)} files, one reader process",
            fault=f"slowest: {slowest}",
            expected=len(times),
            indexed=sum(t < PER_FILE_BOUND_S for t in times.values()),
            details={"slowest_s": round(times[slowest], 2), "bound_s": PER_FILE_BOUND_S},
        )
    )
    assert {n: t for n, t in times.items() if t >= PER_FILE_BOUND_S} == {}


def test_the_daemon_records_each_bad_file_and_keeps_running(
    corpus: Corpus, reliability: Recorder
) -> None:
    var = corpus.top / "var"
    var.mkdir()
    daemon = DaemonProcess(var, root=corpus.root, obey_modes=True)
    try:
        paths = [c.path for c in corpus.files]
        with open_store(daemon.url) as store:

            def all_there() -> bool:
                return set(paths) <= {fp.path for fp in store.fingerprints()}

            recover_s = wait_for(all_there, "a document for every corpus file", 120)
            wait_for(daemon.idle, "the daemon to be idle")
            status = daemon.status()  # still running
            docs = {d.path: d for d in store.iter_documents()}
    finally:
        assert daemon.terminate() == 0
    wrong = {}
    for case in corpus.cases:
        problem = document_problem(case, docs.get(case.path))
        if problem:
            wrong[case.name] = problem
    reliability.record(
        Outcome(
            group="bad input",
            name="the daemon over the corpus",
            load=f"{len(corpus.cases)} bad files and links under a visit",
            fault="each bad file recorded with its error",
            expected=len(corpus.cases),
            indexed=len(corpus.cases) - len(wrong),
            lost=len(set(paths) - set(docs)),
            recover_s=round(recover_s, 1),
            details={"extraction_failures": status["extraction_failures"], "wrong": wrong},
        )
    )
    assert wrong == {}
    # The catalogue holds nothing read through a link that leaves the data root.
    assert not [d.path for d in docs.values() if SECRET in json.dumps(to_json(d))]
    # Each failure is counted once, and is the one recorded in the catalogue.
    assert status["extraction_failures"] == sum(bool(docs[c.path].error) for c in corpus.files)


def document_problem(case: BadInput, doc: FileDocument | None) -> str | None:
    if case.link:  # links are not catalogued, so their targets are never read
        return None if doc is None else f"a link was catalogued: {doc.kind}, {doc.title}"
    if doc is None:
        return "no document"
    text = json.dumps(to_json(doc), ensure_ascii=False)
    if len(text.encode()) > MAX_LINE_BYTES:
        return f"a document of {len(text.encode()):,} bytes"
    if case.name == "a good file beside them" and doc.title != "i22 scan 12345 part 1":
        return f"the good file's title is {doc.title!r}"
    return judge(case, doc.error is None, doc.error, doc.kind)


# -- files changed while they are read ---------------------------------------------------------


def on_open(pid: int, path: str, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` as soon as a descendant of ``pid`` has ``path`` open."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for child in descendants(pid) | {pid}:
                try:
                    fds = os.listdir(f"/proc/{child}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        if os.readlink(f"/proc/{child}/fd/{fd}") == path:
                            action()
                            return
                    except OSError:
                        continue
            time.sleep(0.001)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def big_file(path: Path) -> None:
    """A file whose reading takes a while (a many-object NeXus file)."""
    import h5py

    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = "changed while read"
        for i in range(3000):
            g = entry.create_group(f"g{i:05d}")
            g.attrs["NX_class"] = "NXcollection"
            g["v"] = i


def truncate(path: Path) -> Callable[[], None]:
    return lambda: os.truncate(path, 2048)


def delete(path: Path) -> Callable[[], None]:
    return lambda: path.unlink()


@pytest.mark.parametrize("change", ["truncated", "deleted"])
def test_extract_a_file_changed_while_read(
    tmp_path: Path, change: str, reliability: Recorder
) -> None:
    path = tmp_path / "moving.nxs"
    big_file(path)
    proc = subprocess.Popen(
        [CATALOGD, "extract", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    action = truncate(path) if change == "truncated" else delete(path)
    watcher = on_open(proc.pid, str(path), action)
    out, err = proc.communicate(timeout=120)
    watcher.join(5)
    lines = out.splitlines()
    record = json.loads(lines[0]) if len(lines) == 1 else {}
    reliability.record(
        Outcome(
            group="bad input",
            name=f"catalogd extract of a file {change} while read",
            load="one 3,000-group NeXus file",
            fault=f"{change} as soon as the reader opened it",
            expected=1,
            indexed=len(lines),
            details={"ok": record.get("ok"), "error": record.get("error"), "exit": proc.returncode},
        )
    )
    assert "Traceback" not in err
    assert len(lines) == 1 and record["path"] == str(path)
    assert proc.returncode == (0 if record["ok"] else 1)
    if not record["ok"]:
        assert record["error"] and "Traceback" not in record["error"]


@pytest.mark.parametrize("change", ["truncated", "deleted"])
def test_the_daemon_with_a_file_changed_while_read(
    tmp_path: Path, change: str, reliability: Recorder
) -> None:
    root = tmp_path / "data"
    visit = root.joinpath(*VISIT)
    visit.mkdir(parents=True)
    staging = tmp_path / "staging.nxs"
    big_file(staging)
    daemon = DaemonProcess(tmp_path)
    path = visit / "moving.nxs"
    beside = visit / "beside.nxs"
    try:
        watcher = on_open(
            daemon.pid, str(path), truncate(path) if change == "truncated" else delete(path)
        )
        shutil.copyfile(staging, path)
        shutil.copyfile(staging, beside)
        watcher.join(60)
        with open_store(daemon.url) as store:
            wait_for(lambda: store.get(document_id(str(beside))) is not None, "the file beside")
            wait_for(daemon.idle, "the daemon to be idle")
            time.sleep(1.0)  # a quiet period more: a late re-read would show now
            wait_for(daemon.idle, "the daemon to be idle")
            doc = store.get(document_id(str(path)))
            status = daemon.status()
    finally:
        assert daemon.terminate() == 0
    reliability.record(
        Outcome(
            group="bad input",
            name=f"the daemon with a file {change} while read",
            load="one 3,000-group NeXus file and one beside it",
            fault=f"{change} as soon as the reader opened it",
            expected=1 if change == "truncated" else 0,
            indexed=int(doc is not None),
            lost=0,
            details={
                "error": doc.error if doc else None,
                "extracted": status.get("extracted"),
            },
        )
    )
    if change == "deleted":
        assert doc is None  # nothing stored for a file that is gone
    else:
        # Read again once its size changed: the document is the truncated file's.
        assert doc is not None and doc.size == 2048
        assert doc.error is not None and "not a readable HDF5 file" in doc.error
