"""Per-file bounds that are real: extraction in worker processes that can be killed.

A worker holds the indexers and reads files one at a time under an address-space
limit (``RLIMIT_AS = max_memory_mb``) and a cooperative deadline (``timeout_s``). It is
forked from the caller when that is safe -- a process with a single thread and no HDF5
file open, such as ``catalogd extract`` -- so it starts at once with everything
imported; otherwise (a threaded daemon is never forked) it is a fresh interpreter
(``python -c "...indexers.worker..."``, no re-import of the caller's main module).

:class:`ProcessExtractor` keeps a pool of up to ``workers`` of them (default
``min(4, CPUs)``: h5py serialises threads behind one lock, so parallel reading takes
processes) and spreads files over them. Each worker is sent a few paths at a time
(at most :data:`DEPTH` outstanding) so it never waits for the parent between files,
and answers each file as soon as it is read. The parent keeps every worker's clock:
a file's time starts when the parent sends it to an idle worker or sees the answer
for the worker's previous file, so neither a batch queued behind it nor a consumer
that is slow to ask for results counts against it. A worker with no answer within
``timeout_s`` plus a grace period is killed and replaced, the file it was reading
getting ``ok: false`` and the files queued behind it going to another worker; one
that dies (a crash on a corrupt file) is replaced the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from indexers.base import ExtractResult, Indexer, ResultLine
from indexers.settings import IndexerSettings

log = logging.getLogger(__name__)

#: Extra time the parent waits past the worker's own deadline before killing it.
GRACE_S = 2.0
#: Time a new worker has to import its indexers and say it is ready.
STARTUP_TIMEOUT_S = 60.0
#: Files sent to a worker and not yet answered, at most.
DEPTH = 4
#: A worker is sent more files when fewer than this many are outstanding.
REFILL_BELOW = 2
_READY = "ready"
_CHILD = "import sys; from indexers.worker import main; main(sys.argv[1:])"


def default_workers() -> int:
    """``min(4, CPUs this process may run on)``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def worker_count(settings: IndexerSettings) -> int:
    """How many worker processes the settings ask for."""
    return settings.workers if settings.workers else default_workers()


def _serve(conn: _Duplex) -> None:
    """A spawned worker: its setup from the parent, then :func:`_work`."""
    for entry in conn.recv():  # the parent's import path first: indexers may live there
        if entry not in sys.path:
            sys.path.append(entry)
    indexers, settings = conn.recv()
    _work(conn, indexers, settings)


def _work(conn: _Duplex, indexers: Sequence[Indexer], settings: IndexerSettings) -> None:
    """The worker's main loop: batches of (index, path) in, one (index, ExtractResult)
    out per file -- or (index, ResultLine) for a batch that asks for lines -- until None."""
    from indexers.registry import extract_inline

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if settings.max_memory_mb:
        import resource

        limit = settings.max_memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    import gc

    gc.freeze()  # what setup left is long-lived: collections need not walk it again
    # A file's reading makes thousands of small objects and no reference cycles worth
    # collecting early: the young generation is collected far less often.
    gc.set_threshold(20_000, 20, 20)
    conn.send(_READY)
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        lines, items = batch
        for index, path in items:
            result = extract_inline(indexers, path, settings)
            conn.send((index, ResultLine.of(result) if lines else result))


def main(argv: Sequence[str]) -> None:
    """The worker process's entry point, given its two pipe descriptors."""
    read_fd, write_fd = int(argv[0]), int(argv[1])
    # Keep standard output free: anything a library prints goes to standard error.
    os.dup2(2, 1)
    conn_in = Connection(read_fd, writable=False)
    conn_out = Connection(write_fd, readable=False)
    _serve(_Duplex(conn_in, conn_out))


class _Duplex:
    """Two one-way connections (two pipes) as one."""

    def __init__(self, reader: Connection, writer: Connection) -> None:
        self.reader, self.writer = reader, writer

    def send(self, obj: Any) -> None:
        self.writer.send(obj)

    def recv(self) -> Any:
        return self.reader.recv()

    def poll(self, timeout: float) -> bool:
        return self.reader.poll(timeout)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class _Forked:
    """A forked worker process, with the part of ``subprocess.Popen``'s interface used."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        delay = 0.0005
        while (code := self.poll()) is None:
            if time.monotonic() >= end:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code


#: The parent's ends of every worker's pipes (a forked worker closes the others').
_PARENT_FDS: set[int] = set()


def _child_environment() -> dict[str, str]:
    """A started worker's environment: the caller's, with numpy's maths libraries told
    not to start threads of their own (a worker computes nothing with them)."""
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    return env


def _can_fork(settings: IndexerSettings) -> bool:
    """Whether a worker may be forked from this process rather than started afresh:
    only from a process with one thread (a fork copies one thread, and whatever locks
    the others held), no HDF5 file open (the copy would share its state) and an address
    space well inside the worker's memory bound (the copy starts with all of it)."""
    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return False  # (macOS frameworks are not safe across fork)
    if threading.current_thread() is not threading.main_thread():
        return False
    if settings.max_memory_mb:
        try:
            with open("/proc/self/statm", "rb") as statm:
                size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return False
        if size > settings.max_memory_mb * 1024 * 1024 // 2:
            return False
    import h5py

    return int(h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)) == 0


def _forked_child(
    read_fd: int, write_fd: int, indexers: Sequence[Indexer], settings: IndexerSettings
) -> None:
    """A forked worker's life; it never returns into the parent's code."""
    code = 0
    try:
        import gc

        gc.freeze()  # the parent's objects are never finalised here (nor their files closed)
        for fd in _PARENT_FDS - {read_fd, write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass
        os.dup2(2, 1)  # standard output stays the parent's: library chatter goes to stderr
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)  # not the parent's handlers
        _work(
            _Duplex(Connection(read_fd, writable=False), Connection(write_fd, readable=False)),
            indexers,
            settings,
        )
    except BaseException:  # whatever happens, the child must not return
        code = 1
    finally:
        os._exit(code)


class _Worker:
    """One worker process, the files it was sent and the clock on the first of them."""

    def __init__(self, process: subprocess.Popen[bytes] | _Forked, conn: _Duplex) -> None:
        self.process = process
        self.conn = conn
        self.ready = False
        #: (index, path) sent and not answered, oldest first.
        self.inflight: deque[tuple[int, str]] = deque()
        #: When the oldest file in flight started, or (starting) when the worker must be
        #: ready by; time.monotonic().
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, kill: bool) -> int | None:
        """Stop the process (politely unless ``kill``); its exit status."""
        if not kill:
            try:
                self.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for end in (self.conn.reader, self.conn.writer):
            try:
                _PARENT_FDS.discard(end.fileno())
            except OSError:
                pass  # closed already
        try:
            self.conn.close()
        except OSError:
            pass
        process = self.process
        if kill and process.poll() is None:
            process.kill()
        try:
            return process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(5)


class ProcessExtractor:
    """A pool of worker processes; thread-safe, restartable.

    :meth:`extract_many` spreads files over up to ``workers`` processes and yields the
    results in the order of the paths; :meth:`extract` reads one file. Concurrent
    calls (from several threads) share the pool: each takes the workers it uses and
    gives them back when done.
    """

    def __init__(self, indexers: Sequence[Indexer], settings: IndexerSettings) -> None:
        self._indexers = tuple(indexers)
        self._settings = settings
        self.size = worker_count(settings)
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        #: Workers alive or being started, idle or in use (never more than ``size``).
        self._total = 0
        #: Workers taken by calls in progress.
        self._busy: set[_Worker] = set()
        #: Calls in progress, by thread.
        self._runs: Counter[int] = Counter()
        self._closed = False
        #: How many workers were started (including restarts), for tests and metrics.
        self.started = 0

    # -- the pool ------------------------------------------------------------------------
    def _take(self, wanted: int, *, block: bool) -> tuple[list[_Worker], int]:
        """Up to ``wanted`` idle workers, and how many more may be started; waits for
        one when ``block`` and none can be had."""
        with self._cond:
            while True:
                for worker in [w for w in self._idle if not w.alive()]:
                    self._idle.remove(worker)  # died while idle: not this call's files' fault
                    self._total -= 1
                    worker.stop(kill=True)
                if self._closed:
                    return [], 0
                taken = [self._idle.pop() for _ in range(min(wanted, len(self._idle)))]
                self._busy.update(taken)
                new = min(wanted - len(taken), self.size - self._total)
                if block and not taken and new <= 0 and self._runs[threading.get_ident()] > 1:
                    # This thread's other call holds the workers and cannot give them
                    # back while this one waits: one more, beyond the pool's size.
                    new = 1
                self._total += new
                if taken or new or not block:
                    return taken, new
                self._cond.wait()

    def _give_back(self, workers: Iterable[_Worker]) -> None:
        with self._cond:
            for worker in workers:
                self._busy.discard(worker)
                # A worker still starting is kept too: the next caller waits for it.
                # One started beyond the pool's size (see _take) is not.
                keep = not worker.inflight and not self._closed and self._total <= self.size
                if keep and worker.alive():
                    self._idle.append(worker)
                else:
                    self._total -= 1
                    worker.stop(kill=True)
            self._cond.notify_all()

    def _discard(self, worker: _Worker) -> int | None:
        """Stop a worker this call holds; its exit status."""
        code = worker.stop(kill=True)
        with self._cond:
            self._busy.discard(worker)
            self._total -= 1
            self._cond.notify_all()
        return code

    def _adopt(self, worker: _Worker) -> None:
        """A worker this call started is in use (and stopped by :meth:`close`)."""
        with self._cond:
            self._busy.add(worker)
            if self._closed:
                worker.process.kill()

    def _unreserve(self) -> None:
        with self._cond:
            self._total -= 1
            self._cond.notify_all()

    def _spawn(self) -> _Worker | None:
        """A new worker; it says when it is ready.

        Forked from this process when that is safe (:func:`_can_fork`): it starts at
        once, with the indexers already imported. Otherwise a fresh interpreter, sent
        its setup.
        """
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        if _can_fork(self._settings):
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()  # nothing buffered here is written twice
                except (OSError, ValueError):
                    pass
            _PARENT_FDS.update((to_child_w, from_child_r))
            try:
                pid = os.fork()
            except OSError as exc:
                log.error("the indexer worker could not be forked: %s", exc)
                pid = -1
            if pid == 0:
                os.close(to_child_w)
                os.close(from_child_r)
                _forked_child(to_child_r, from_child_w, self._indexers, self._settings)
            os.close(to_child_r)
            os.close(from_child_w)
            if pid > 0:
                with self._cond:
                    self.started += 1
                return _Worker(
                    _Forked(pid),
                    _Duplex(
                        Connection(from_child_r, writable=False),
                        Connection(to_child_w, readable=False),
                    ),
                )
            _PARENT_FDS.difference_update((to_child_w, from_child_r))
            os.close(to_child_w)
            os.close(from_child_r)
            return None
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                close_fds=True,
                env=_child_environment(),
            )
        except OSError as exc:
            log.error("the indexer worker could not be started: %s", exc)
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            return None
        os.close(to_child_r)
        os.close(from_child_w)
        _PARENT_FDS.update((to_child_w, from_child_r))
        conn = _Duplex(
            Connection(from_child_r, writable=False), Connection(to_child_w, readable=False)
        )
        worker = _Worker(process, conn)
        with self._cond:
            self.started += 1
        try:
            conn.send(list(sys.path))
            conn.send((self._indexers, self._settings))
        except OSError:
            pass  # it died already: found out when waiting for it to be ready
        return worker

    # -- extraction ------------------------------------------------------------------------
    def extract(self, path: str) -> ExtractResult:
        for result in self.extract_many([path]):
            return result
        raise AssertionError("unreachable: every path gets a result")  # pragma: no cover

    def extract_many(self, paths: Iterable[str]) -> Generator[ExtractResult, None, None]:
        """One result per path, in the order of ``paths``; never raises for bad files."""
        for result in self._results(paths, lines=False):
            assert isinstance(result, ExtractResult)
            yield result

    def extract_lines(self, paths: Iterable[str]) -> Generator[ResultLine, None, None]:
        """:meth:`extract_many` as ``catalogd extract`` lines, each made by the worker
        that read the file (a file the pool could not read gets its line here)."""
        for result in self._results(paths, lines=True):
            yield result if isinstance(result, ResultLine) else ResultLine.of(result)

    def _results(
        self, paths: Iterable[str], *, lines: bool
    ) -> Generator[ExtractResult | ResultLine, None, None]:
        run = _Run(self, iter(paths), lines=lines)
        thread = threading.get_ident()
        with self._cond:
            self._runs[thread] += 1
        try:
            yield from run.results()
        finally:
            self._give_back(run.workers)
            with self._cond:
                self._runs[thread] -= 1

    def close(self) -> None:
        """Stop every worker: idle ones politely, those in use at once (the calls using
        them give the files not yet read ``ok: false``)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._total -= len(idle)
            busy = list(self._busy)
            self._cond.notify_all()
        for worker in busy:
            worker.process.kill()  # its call notices, and cleans up
        for worker in idle:
            worker.stop(kill=False)


class _Run:
    """One :meth:`ProcessExtractor.extract_many` call: its files, workers and results."""

    def __init__(self, pool: ProcessExtractor, paths: Iterator[str], *, lines: bool) -> None:
        self.pool = pool
        #: Whether the workers answer with ResultLine (else ExtractResult).
        self.lines = lines
        self.settings = pool._settings
        self.bound_s = self.settings.timeout_s + GRACE_S
        self.paths = paths
        self.exhausted = False
        self.workers: list[_Worker] = []
        #: (index, path) read from ``paths`` and not yet sent (or sent back).
        self.todo: deque[tuple[int, str]] = deque()
        self.done: dict[int, ExtractResult | ResultLine] = {}
        self.next_index = 0
        self.next_out = 0
        #: Files read ahead of the next result to give out, at most.
        self.window = pool.size * DEPTH * 2

    def results(self) -> Iterator[ExtractResult | ResultLine]:
        while True:
            while self.next_out in self.done:
                yield self.done.pop(self.next_out)
                self.next_out += 1
            self._read_ahead()
            if self.pool._closed:
                self._abandon()
            if not self.todo and not any(w.inflight for w in self.workers):
                if self.exhausted:
                    return
                continue
            self._staff()
            self._dispatch()
            self._wait()

    def _abandon(self) -> None:
        """The pool was closed: no file waiting is read any more."""
        for worker in list(self.workers):
            self._remove(worker)
            self.todo.extendleft(reversed(worker.inflight))
            worker.inflight.clear()
        while self.todo:
            self._fail_next("the reader processes were stopped")

    def _read_ahead(self) -> None:
        while not self.exhausted and self.next_index - self.next_out < self.window:
            try:
                path = next(self.paths)
            except StopIteration:
                self.exhausted = True
                break
            self.todo.append((self.next_index, os.fspath(path)))
            self.next_index += 1

    def _staff(self) -> None:
        """Take or start as many workers as the files waiting can use."""
        pending = len(self.todo) + sum(len(w.inflight) for w in self.workers)
        # One worker for every DEPTH files waiting: starting one costs more than a few files.
        wanted = min(self.pool.size, max(1, -(-pending // DEPTH))) - len(self.workers)
        if wanted <= 0:
            return
        taken, new = self.pool._take(wanted, block=not self.workers)
        self.workers.extend(taken)
        for _ in range(new):
            worker = self.pool._spawn()
            if worker is None:
                self.pool._unreserve()
                self._fail_next("the reader process could not be started")
                continue
            self.pool._adopt(worker)
            self.workers.append(worker)

    def _fail_next(self, message: str) -> None:
        if self.todo:
            index, path = self.todo.popleft()
            self.done[index] = ExtractResult.failure(path, message)

    def _dispatch(self) -> None:
        ready = [w for w in self.workers if w.ready and len(w.inflight) < REFILL_BELOW]
        for position, worker in enumerate(ready):
            if not self.todo:
                return
            # Share what is waiting among the workers with room, DEPTH at most each.
            share = -(-len(self.todo) // (len(ready) - position))
            count = min(DEPTH - len(worker.inflight), share)
            batch = [self.todo.popleft() for _ in range(count)]
            if not worker.inflight:
                worker.deadline = time.monotonic() + self.bound_s
            worker.inflight.extend(batch)
            try:
                worker.conn.send((self.lines, batch))
            except OSError:
                pass  # it died: found out by waiting on it

    def _wait(self) -> None:
        busy = [w for w in self.workers if w.inflight or not w.ready]
        if not busy:
            return
        now = time.monotonic()
        timeout = max(0.0, min(w.deadline for w in busy) - now)
        by_conn = {w.conn.reader: w for w in busy}
        for conn in wait(list(by_conn), timeout):
            self._receive(by_conn[conn])  # type: ignore[index]
        now = time.monotonic()
        for worker in busy:
            if worker in self.workers and now >= worker.deadline:
                self._overdue(worker)

    def _receive(self, worker: _Worker) -> None:
        if worker not in self.workers:
            return  # stopped meanwhile (the pool was closed)
        try:
            message: Any = worker.conn.recv()
        except (EOFError, OSError):
            self._died(worker)
            return
        if not worker.ready:
            if message == _READY:
                worker.ready = True
            else:
                self._lost(worker, "the reader process answered nonsense")
            return
        if (
            isinstance(message, tuple)
            and len(message) == 2
            and isinstance(message[1], ResultLine if self.lines else ExtractResult)
            and worker.inflight
            and message[0] == worker.inflight[0][0]
        ):
            index, _ = worker.inflight.popleft()
            self.done[index] = message[1]
            # The next file started when this one was answered (or later): the clock
            # never counts time the parent spent elsewhere against it.
            worker.deadline = time.monotonic() + self.bound_s
            return
        self._lost(worker, "the reader process answered nonsense")

    def _overdue(self, worker: _Worker) -> None:
        if not worker.ready:
            log.error("the indexer worker did not start within %g s", STARTUP_TIMEOUT_S)
            self._remove(worker)
            self._fail_next("the reader process could not be started")
            return
        self._lost(
            worker,
            f"timed out: no result within the time bound of {self.settings.timeout_s:g} s; "
            "the reader was stopped",
            elapsed_s=self.bound_s,
        )

    def _died(self, worker: _Worker) -> None:
        if self.pool._closed:
            self._abandon()
            return
        if not worker.ready:
            code = self._remove(worker)
            log.error("the indexer worker did not start (exit status %s)", code)
            self._fail_next("the reader process could not be started")
            return
        code = self._remove(worker)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            message = f"the reader process died ({name}) while reading this file"
        else:
            message = f"the reader process exited (status {code}) while reading this file"
        self._fail_head(worker, message)

    def _lost(self, worker: _Worker, message: str, elapsed_s: float = 0.0) -> None:
        self._remove(worker)
        if worker.ready:
            self._fail_head(worker, message, elapsed_s)
        else:
            log.error("the indexer worker did not start: %s", message)
            self._fail_next("the reader process could not be started")

    def _remove(self, worker: _Worker) -> int | None:
        self.workers.remove(worker)
        return self.pool._discard(worker)

    def _fail_head(self, worker: _Worker, message: str, elapsed_s: float = 0.0) -> None:
        """The file the worker was reading fails; those queued behind it go back."""
        if not worker.inflight:
            return
        index, path = worker.inflight.popleft()
        self.done[index] = ExtractResult.failure(path, message, elapsed_s=elapsed_s)
        self.todo.extendleft(reversed(worker.inflight))
        worker.inflight.clear()
