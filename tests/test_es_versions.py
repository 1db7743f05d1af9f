"""Elasticsearch versions: 9.5.0 is the tested default, 9.3.2 still works.

Every other Elasticsearch test runs on the default node (scripts/elasticsearch.sh's
default version); here a 9.3.2 node of its own runs the whole store contract suite
(tests/test_store_contract.py), so the older 9.x stays supported without a CI matrix.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_store_contract as contract
from es_node import Node, es_node

from catalogd.store.base import Store

DEFAULT_VERSION = "9.5.0"
SECOND_VERSION = "9.3.2"

pytestmark = pytest.mark.slow
__all__ = ["es_node"]  # the session's default node, a fixture


def test_the_default_node_is_the_tested_default_version(es_node: Node) -> None:
    """The node every other Elasticsearch test uses is 9.5.0."""
    assert es_node.server_version() == DEFAULT_VERSION


@pytest.fixture(scope="module")
def second_node() -> Iterator[Node]:
    node = Node(SECOND_VERSION)
    try:
        yield node
    finally:
        node.stop()


def test_the_second_node_runs_the_second_version(second_node: Node) -> None:
    assert second_node.server_version() == SECOND_VERSION


@pytest.fixture
def store(second_node: Node) -> Iterator[Store]:
    """The contract suite's ``store``, on the 9.3.2 node, under a prefix of its own."""
    with second_node.fresh_store() as opened:
        yield opened


globals().update(contract.contract_tests(f"on_{SECOND_VERSION.replace('.', '_')}"))
