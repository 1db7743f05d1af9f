"""OpenSearch as the second engine (issue 15): the store on a real OpenSearch 3.3.0 node.

The whole store contract suite (tests/test_store_contract.py) runs here on OpenSearch,
through the opensearch-py client behind catalogd's adapter (catalogd/store/os_client.py);
the engine is chosen by ``[store] engine`` or the URL's ``engine=`` parameter, and a
store of one engine opened on the other's server is a clear configuration error (exit
78), in both directions, never an outage the spool would wait out. The commands an
operator runs (check-config, scan, search, run and status) go through the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_store_contract as contract
from es_node import Node, es_node
from ops_daemon import CATALOGD, CatalogdProcess, clean_env, free_port, wait_for, write_nexus
from os_node import OPENSEARCH_VERSION, OpenSearchNode, os_node

from catalogd.cli import main
from catalogd.config import load_settings
from catalogd.errors import EX_CONFIG, ConfigError, StoreUnavailable, UsageError
from catalogd.store import es_schema as schema
from catalogd.store import open_spooled_store, open_store
from catalogd.store.base import Store
from catalogd.store.elasticsearch import ElasticsearchStore
from catalogd.store.engine import EngineMismatch

pytestmark = pytest.mark.slow
__all__ = ["es_node", "os_node"]  # the session's nodes, fixtures

VISIT = "data/visitor/biomax/20170251/2017112208/raw"


def test_the_node_is_opensearch(os_node: OpenSearchNode) -> None:
    version = os_node.info()["version"]
    assert version["distribution"] == "opensearch"
    assert version["number"] == OPENSEARCH_VERSION == os_node.server_version()


@pytest.fixture
def store(os_node: OpenSearchNode) -> Iterator[Store]:
    """The contract suite's ``store``, on OpenSearch, under a prefix of its own."""
    with os_node.fresh_store() as opened:
        assert opened.engine == "opensearch"
        yield opened


globals().update(contract.contract_tests("on_opensearch"))


# -- the engine and its mismatch -------------------------------------------------------------
def _indices(node: Node, prefix: str) -> list[str]:
    with node.client() as client:
        return list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all"))


def test_an_elasticsearch_store_on_an_opensearch_node_is_a_configuration_error(
    os_node: OpenSearchNode,
) -> None:
    prefix = os_node.unique_prefix()
    with pytest.raises(EngineMismatch) as raised:
        open_store(f"{os_node.url}?index={prefix}")  # no engine: Elasticsearch
    assert raised.value.exit_code == EX_CONFIG
    assert raised.value.message == (
        f"store.url {os_node.url} points at OpenSearch {OPENSEARCH_VERSION} but store.engine "
        'is elasticsearch: set [store] engine = "opensearch" (or add ?engine=opensearch to '
        "the URL)"
    )
    assert _indices(os_node, prefix) == []  # nothing was made on the wrong engine


def test_an_opensearch_store_on_an_elasticsearch_node_is_a_configuration_error(
    es_node: Node,
) -> None:
    prefix = es_node.unique_prefix()
    with pytest.raises(EngineMismatch) as raised:
        open_store(f"{es_node.url}?index={prefix}&engine=opensearch")
    assert raised.value.exit_code == EX_CONFIG
    assert raised.value.message == (
        f"store.url {es_node.url} points at Elasticsearch {es_node.server_version()} but "
        'store.engine is opensearch: set [store] engine = "elasticsearch" (or add '
        "?engine=elasticsearch to the URL)"
    )
    assert _indices(es_node, prefix) == []


def test_a_mismatch_is_not_an_outage_the_spool_waits_out(
    os_node: OpenSearchNode, tmp_path: Path
) -> None:
    """The daemon's store (spooled) refuses to open too, instead of spooling writes
    for a catalogue it can never reach."""
    url = f"{os_node.url}?index={os_node.unique_prefix()}"
    with pytest.raises(EngineMismatch):
        open_spooled_store(url, spool_dir=str(tmp_path / "spool"), name="run")


def test_the_cli_exits_78_naming_both_engines(
    os_node: OpenSearchNode, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "none.toml"
    empty.touch()
    url = f"{os_node.url}?index={os_node.unique_prefix()}"
    assert main(["--config", str(empty), "search", "--store", url, "--json"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert f"points at OpenSearch {OPENSEARCH_VERSION} but store.engine is elasticsearch" in err


def test_an_unreachable_opensearch_store_says_opensearch() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailable) as raised:
        open_store(f"{url}?engine=opensearch")
    assert raised.value.message.startswith(f"OpenSearch at {url}: ")


# -- [store] engine ---------------------------------------------------------------------------
def _config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "catalogd.toml"
    path.write_text(f"[store]\n{store}\n", encoding="utf-8")
    return path


def test_the_engine_key_travels_with_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = load_settings(_config(tmp_path, 'url = "http://os1:9200"')).store
    assert store.engine == "elasticsearch"
    assert store.effective_url() == "http://os1:9200"  # unchanged: the default engine
    key = 'url = "http://os1:9200,http://os2:9200?index=site"\nengine = "opensearch"'
    store = load_settings(_config(tmp_path, key)).store
    assert store.effective_url() == "http://os1:9200,http://os2:9200?index=site&engine=opensearch"
    assert store.effective_url("http://os3:9200") == "http://os3:9200?engine=opensearch"
    # --store naming its engine itself is taken as it is.
    assert store.effective_url("http://es:9200?engine=elasticsearch").endswith("=elasticsearch")
    monkeypatch.setenv("CATALOGD_STORE_ENGINE", "opensearch")
    store = load_settings(_config(tmp_path, 'url = "http://os1:9200"')).store
    assert store.effective_url() == "http://os1:9200?engine=opensearch"
    # In the URL alone, without the key.
    store = load_settings(_config(tmp_path, 'url = "http://os1:9200?engine=opensearch"')).store
    monkeypatch.delenv("CATALOGD_STORE_ENGINE")
    assert store.effective_url() == "http://os1:9200?engine=opensearch"


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ('url = "http://os1:9200"\nengine = "solr"', "store.engine"),
        ('url = "http://os1:9200?engine=solr"', "unknown engine 'solr'"),
        ('url = "http://os1:9200?shards=3"', "unknown parameter 'shards'"),
        (
            'url = "http://os1:9200?engine=elasticsearch"\nengine = "opensearch"',
            "store.url says engine=elasticsearch but store.engine is opensearch",
        ),
        (
            'url = "sqlite:////var/lib/c.db"\nengine = "opensearch"',
            "engine = 'opensearch' needs an http(s):// store.url",
        ),
    ],
)
def test_a_bad_engine_setting_is_a_clear_configuration_error(
    tmp_path: Path, store: str, says: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_config(tmp_path, store))
    assert says in raised.value.message
    assert raised.value.exit_code == EX_CONFIG


def test_a_bad_engine_in_a_store_option_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown engine 'solr'"):
        open_store("http://127.0.0.1:9?engine=solr")


def _catalogd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CATALOGD, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clean_env(),
    )


def _tree(tmp_path: Path) -> Path:
    raw = tmp_path / VISIT
    raw.mkdir(parents=True)
    write_nexus(raw / "scan_0001.nxs", "lysozyme")
    return raw


def test_check_config_scan_and_search_through_the_key(
    os_node: OpenSearchNode, tmp_path: Path
) -> None:
    prefix = os_node.unique_prefix()
    config = _config(tmp_path, f'url = "{os_node.url}?index={prefix}"\nengine = "opensearch"')
    try:
        shown = _catalogd(config, "check-config", "--json")
        assert shown.returncode == 0, shown.stderr
        store = json.loads(shown.stdout)["store"]
        assert store["engine"] == "opensearch" and store["url"] == f"{os_node.url}?index={prefix}"
        raw = _tree(tmp_path)
        scanned = _catalogd(config, "scan", str(tmp_path / "data"))
        assert scanned.returncode == 0, scanned.stderr
        found = _catalogd(config, "search", "LYSO", "--json")
        assert found.returncode == 0, found.stderr
        docs = [json.loads(line) for line in found.stdout.splitlines()]
        assert [d["path"] for d in docs] == [str(raw / "scan_0001.nxs")]
        assert docs[0]["entries"][0]["title"] == "lysozyme"
        made = [schema.versioned(schema.files_alias(prefix))]
        made.append(schema.versioned(schema.violations_alias(prefix)))
        assert sorted(_indices(os_node, prefix)) == made
    finally:
        os_node.drop(prefix)


class OpenSearchDaemon(CatalogdProcess):
    """``catalogd run`` with the configuration file ``config`` (its store on OpenSearch),
    its listener on a free loopback port."""

    def __init__(self, tmp: Path, config: Path) -> None:
        self.state = tmp / "state"
        self.log = tmp / f"daemon-{time.monotonic_ns()}.log"
        env = clean_env(
            CATALOGD_DAEMON_QUIET_PERIOD_S="0.2",
            CATALOGD_DAEMON_EXTRACT_WORKERS="1",
            CATALOGD_DAEMON_STATE_DIR=str(self.state),
            CATALOGD_DAEMON_LISTEN="127.0.0.1:0",
        )
        self.launch([*CATALOGD, "-v", "--config", str(config), "run"], env)


def test_catalogd_status_of_a_daemon_on_opensearch(
    os_node: OpenSearchNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = os_node.unique_prefix()
    raw = _tree(tmp_path)
    config = tmp_path / "catalogd.toml"
    config.write_text(
        f'[watch]\nroot = "{tmp_path / "data"}"\n'
        f'[store]\nurl = "{os_node.url}?index={prefix}"\nengine = "opensearch"\n'
        f'spool_dir = "{tmp_path / "spool"}"\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    daemon = OpenSearchDaemon(tmp_path, config)
    try:
        with ElasticsearchStore.from_url(os_node.store_url(prefix)) as catalogue:

            def indexed() -> set[str]:
                catalogue.flush()
                return {os.path.basename(d.path) for d in catalogue.iter_documents()}

            wait_for(lambda: indexed() == {"scan_0001.nxs"}, "the reconcile's document")
            write_nexus(raw / "scan_0002.nxs", "thaumatin")  # watched, then indexed
            wait_for(lambda: indexed() == {"scan_0001.nxs", "scan_0002.nxs"}, "the new file")
        wait_for(lambda: main(["--config", str(config), "status", "--json"]) == 0, "ready")
        capsys.readouterr()
        assert main(["--config", str(config), "status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["ready"] is True and status["readyz"]["store"] == {"state": "ok"}
        assert status["metrics"]["files_indexed"] >= 2
        assert daemon.terminate() == 0, daemon.output()
    finally:
        daemon.kill()
        os_node.drop(prefix)
