"""A real Elasticsearch node for the tests, one per test session.

Started by ``scripts/elasticsearch.sh`` (which fetches the distribution with mvn, runs
it as an unprivileged user on a free loopback port, and waits until it answers), the
first time a test needs it; stopped when the session ends. A node that cannot be
started fails the tests that need it: they are never skipped.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
from elasticsearch import Elasticsearch, NotFoundError
from session_resource import SessionResource

from catalogd.store.elasticsearch import ElasticsearchStore

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "elasticsearch.sh"
#: Fetching (the first time) and starting the node; measured start: about 30 s.
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
#: How long a resumed node may take to assign its indices' primaries again.
RECOVERY_TIMEOUT_S = 120.0


class Node:
    """A running node: its URL, and the directory with its data and logs."""

    def __init__(self, version: str | None = None) -> None:
        #: The distribution's version (None: scripts/elasticsearch.sh's default).
        self.version = version
        self.run_dir = tempfile.mkdtemp(prefix="catalogd-es-")
        self.url = self._start({})
        self._names = itertools.count()

    def _start(self, env: dict[str, str]) -> str:
        started = subprocess.run(
            [str(SCRIPT), "start", self.run_dir],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
            env={**os.environ, **self._version_env(), **env},
        )
        if started.returncode != 0:
            self.stop()
            raise RuntimeError(
                f"scripts/elasticsearch.sh could not start Elasticsearch:\n{started.stderr}"
            )
        return started.stdout.strip().splitlines()[-1]

    def _version_env(self) -> dict[str, str]:
        return {} if self.version is None else {"CATALOGD_ES_VERSION": self.version}

    def server_version(self) -> str:
        """The version the running node reports (``GET /_cat/nodes``: a plain ``GET /``
        answers 405 in the 9.5 integ-test distribution, so nothing relies on it)."""
        with self.client() as client:
            nodes: Any = client.cat.nodes(h="version", format="json").body
        return str(nodes[0]["version"])

    def client(self) -> Elasticsearch:
        """A plain client of the node (close it: it is a context manager)."""
        return Elasticsearch(self.url)

    def halt(self) -> None:
        """Stop the node's process (SIGTERM, then SIGKILL), keeping its data: an outage.
        Only for a node of one's own (:func:`throwaway_node`), never the shared one."""
        pid_file = Path(self.run_dir, "es.pid")
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
        finally:
            pid_file.unlink(missing_ok=True)  # stop() must not signal a reused pid

    def resume(self) -> None:
        """Start a halted node again, on the same port, with the same data, and wait
        until its indices are recovered (every primary assigned: a write before that
        waits in the node for up to a minute, which on a loaded machine outlasts the
        tests' own waits)."""
        port = urlsplit(self.url).port
        url = self._start({"CATALOGD_ES_PORT": str(port)})
        assert url == self.url, (url, self.url)
        # Plain HTTP: the same request on either engine (os_node.OpenSearchNode).
        query = f"wait_for_status=yellow&timeout={int(RECOVERY_TIMEOUT_S)}s"
        answer = urlopen(f"{self.url}/_cluster/health?{query}", timeout=RECOVERY_TIMEOUT_S + 10)
        with answer:
            health = json.load(answer)
        if health.get("timed_out"):
            raise RuntimeError(f"the resumed node did not recover its indices: {health}")

    def unique_prefix(self) -> str:
        """An index prefix no other test uses."""
        return f"test-{os.getpid()}-{next(self._names)}"

    def store_url(self, prefix: str) -> str:
        return f"{self.url}?index={prefix}"

    @contextmanager
    def fresh_store(self) -> Iterator[ElasticsearchStore]:
        """A store under a prefix no other test uses, closed and dropped after."""
        prefix = self.unique_prefix()
        opened = ElasticsearchStore.from_url(self.store_url(prefix))
        try:
            yield opened
        finally:
            opened.close()
            self.drop(prefix)

    def drop(self, prefix: str) -> None:
        """Delete the indices and templates of ``prefix``."""
        with self.client() as client:
            indices = list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all"))
            if indices:
                client.indices.delete(index=",".join(indices))
            try:
                templates = client.indices.get_index_template(name=f"{prefix}-*")
            except NotFoundError:  # none was made (the test never reached the node)
                return
            for template in templates["index_templates"]:
                client.indices.delete_index_template(name=template["name"])

    def stop(self) -> None:
        subprocess.run(
            [str(SCRIPT), "stop", self.run_dir],
            capture_output=True,
            timeout=STOP_TIMEOUT_S,
            check=False,
        )


_shared = SessionResource(Node)
#: The session's node, started on first use (and stopped at exit at the latest).
shared_node = _shared.get
stop_shared_node = _shared.stop


@pytest.fixture
def throwaway_node() -> Iterator[Node]:
    """A node of the test's own (started in about 15-30 s), which it may halt and
    resume without disturbing the shared one."""
    node = Node()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def es_node() -> Iterator[Node]:
    """The running node; a failure to start it is a test failure, not a skip."""
    try:
        yield shared_node()
    finally:
        stop_shared_node()


@pytest.fixture
def prefix(es_node: Node) -> Iterator[str]:
    """An index prefix of the test's own on the shared node; its indices are dropped."""
    name = es_node.unique_prefix()
    try:
        yield name
    finally:
        es_node.drop(name)


@pytest.fixture
def es(es_node: Node, prefix: str) -> Iterator[ElasticsearchStore]:
    """An Elasticsearch store under the test's own prefix."""
    store = ElasticsearchStore.from_url(es_node.store_url(prefix))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def client(es_node: Node) -> Iterator[Elasticsearch]:
    """A plain client of the shared node, to look at what the store wrote."""
    with Elasticsearch(es_node.url) as opened:
        yield opened
