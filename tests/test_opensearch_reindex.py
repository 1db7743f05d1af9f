"""``catalogd reindex`` on OpenSearch: tests/test_es_reindex.py's reindex under load
and its catch-up of writes and deletes made during the fill, run on the session's
OpenSearch node (its ``es_node``, ``prefix``, ``es`` and ``client`` fixtures here name
that node, a prefix on it, the store on OpenSearch and the adapter's client).

The reindex reads a point-in-time snapshot sorted on ``_shard_doc``, searches on
``_seq_no``, reads shard stats and sets a write block: none of this is in the store
contract suite, so it is checked here on the second engine too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_es_reindex as reindex_tests
from elasticsearch import Elasticsearch
from os_node import OpenSearchNode, os_node

from catalogd.store.elasticsearch import ElasticsearchStore

pytestmark = pytest.mark.slow
__all__ = ["os_node"]


@pytest.fixture
def es_node(os_node: OpenSearchNode) -> OpenSearchNode:
    return os_node


@pytest.fixture
def prefix(os_node: OpenSearchNode) -> Iterator[str]:
    name = os_node.unique_prefix()
    try:
        yield name
    finally:
        os_node.drop(name)


@pytest.fixture
def es(os_node: OpenSearchNode, prefix: str) -> Iterator[ElasticsearchStore]:
    with ElasticsearchStore.from_url(os_node.store_url(prefix)) as store:
        assert store.engine == "opensearch"
        yield store


@pytest.fixture
def client(os_node: OpenSearchNode) -> Iterator[Elasticsearch]:
    with os_node.client() as opened:
        yield opened


test_searches_answer_and_writes_land_throughout_a_reindex_on_opensearch = (
    reindex_tests.test_searches_answer_and_writes_land_throughout_a_reindex
)
test_writes_and_deletes_during_the_fill_are_caught_up_on_opensearch = (
    reindex_tests.test_writes_and_deletes_during_the_fill_are_caught_up
)
