"""A real OpenSearch node for the tests, one per test session, started on first use.

Started by ``scripts/opensearch.sh`` (``scripts/elasticsearch.sh`` with
``CATALOGD_ENGINE=opensearch``: the integ-test zip of OpenSearch 3.3.0 from Maven
Central, fetched with mvn, run as an unprivileged user on a free loopback port with a
small heap), and stopped when the session ends. A node that cannot be started fails
the tests that need it: they are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from es_node import Node
from opensearchpy import OpenSearch

from catalogd.store import os_client

#: What scripts/opensearch.sh runs unless CATALOGD_OS_VERSION says otherwise.
OPENSEARCH_VERSION = "3.3.0"


class OpenSearchNode(Node):
    """A running OpenSearch node: the Elasticsearch node's life cycle (start, halt,
    resume, prefixes, drop) on the other engine."""

    def _version_env(self) -> dict[str, str]:
        return {"CATALOGD_ENGINE": "opensearch"}

    def client(self) -> Elasticsearch:
        """The store's own client of the node (opensearch-py behind the adapter)."""
        return os_client.connect([self.url])

    def info(self) -> dict[str, Any]:
        """``GET /`` through plain opensearch-py (OpenSearch answers it, with
        ``version.distribution``)."""
        with OpenSearch(self.url) as client:
            answer: dict[str, Any] = client.info()
        return answer

    def store_url(self, prefix: str) -> str:
        """The store URL of ``prefix``, naming the engine (``[store] engine`` may instead)."""
        return f"{self.url}?index={prefix}&engine=opensearch"


@pytest.fixture(scope="session")
def os_node() -> Iterator[OpenSearchNode]:
    """The session's OpenSearch node; a failure to start it is a test failure."""
    node = OpenSearchNode()
    try:
        yield node
    finally:
        node.stop()
