"""The Elasticsearch store beyond the shared contract: its layout, writes, errors, and
agreement with the other stores, against the real node of tests/es_node.py."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import elastic_transport
import h5py
import pytest
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions
from es_node import Node, client, es, es_node, prefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store_contract import P1, entry, make_doc, put, random_docs, random_queries

from catalogd.errors import StoreError, StoreUnavailable, UsageError
from catalogd.store import es_query, open_store
from catalogd.store.base import SearchQuery
from catalogd.store.elasticsearch import ElasticsearchStore, parse_url
from catalogd.store.es_errors import ERROR_MAP, translate
from catalogd.store.es_schema import (
    SCHEMA_VERSION,
    SUFFIX_MAX_BYTES,
    SUFFIX_MAX_COUNT,
    fts_key,
    search_suffixes,
    search_values,
)
from catalogd.store.memory import MemoryStore

__all__ = ["client", "es", "es_node", "prefix"]  # fixtures used below

CATALOGD = str(Path(sys.executable).with_name("catalogd"))


# -- URLs -----------------------------------------------------------------------------------
def test_store_urls() -> None:
    assert parse_url("http://es1:9200") == (["http://es1:9200"], "catalogd", "http://es1:9200")
    hosts, prefix, shown = parse_url("https://u:secret@es1:9200,https://es2:9201?index=site-a")
    assert hosts == ["https://u:secret@es1:9200", "https://es2:9201"]
    assert (prefix, shown) == ("site-a", "https://es1:9200,https://es2:9201")
    for bad in ("http://", "http://es1:9200,ftp://x", "http://es1?index=UPPER", "http://x?index="):
        with pytest.raises(UsageError):
            parse_url(bad)


def test_an_unreachable_cluster_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="127.0.0.1:9"):
        open_store("http://127.0.0.1:9")  # the discard port: nothing listens


def test_open_store_opens_it(es_node: Node, prefix: str) -> None:
    with open_store(es_node.store_url(prefix)) as store:
        assert isinstance(store, ElasticsearchStore)
        assert store.url == es_node.url and store.count() == 0


# -- layout ---------------------------------------------------------------------------------
def test_a_versioned_index_behind_an_alias_from_a_template(
    es: ElasticsearchStore, client: Elasticsearch, prefix: str
) -> None:
    aliases = client.indices.get_alias(name=f"{prefix}-files")
    assert list(aliases) == [f"{prefix}-files-v{SCHEMA_VERSION}"]
    template = client.indices.get_index_template(name=f"{prefix}-files")["index_templates"][0]
    assert template["index_template"]["index_patterns"] == [f"{prefix}-files-v*"]
    mapping = client.indices.get_mapping(index=f"{prefix}-files")
    properties = next(iter(mapping.values()))["mappings"]["properties"]
    assert properties["title"]["type"] == "text" and "index_prefixes" in properties["title"]
    assert properties["start"]["type"] == "date" and properties["mode"]["type"] == "integer"
    # a second store on the same indices finds them as they are
    with ElasticsearchStore.from_url(es.url + f"?index={prefix}") as again:
        assert again.count() == 0


def test_odd_metadata_cannot_explode_the_mapping(
    es: ElasticsearchStore, client: Elasticsearch, prefix: str
) -> None:
    odd = {f"field_{i}": {"nested": [i, str(i)]} for i in range(2000)}
    doc = make_doc(f"{P1}/raw/odd.h5", metadata=odd, entries=({"x" * 300: 1, "sample": odd},))
    put(es, [doc])
    assert es.get(doc.id) == doc
    mapping = client.indices.get_mapping(index=f"{prefix}-files")
    assert len(next(iter(mapping.values()))["mappings"]["properties"]) < 60


def test_mode_is_searchable_as_number_octal_and_flags(
    es: ElasticsearchStore, client: Elasticsearch, prefix: str
) -> None:
    put(es, [make_doc(f"{P1}/raw/open.h5", mode=0o102777), make_doc(f"{P1}/raw/ok.h5")])
    hits = client.search(
        index=f"{prefix}-files",
        query={
            "bool": {
                "filter": [
                    {"term": {"world_writable": True}},
                    {"term": {"setgid": True}},
                    {"term": {"mode_octal": "2777"}},
                ]
            }
        },  # fmt: skip
    )["hits"]["hits"]
    assert [h["_source"]["name"] for h in hits] == ["open.h5"]


def test_titles_match_partial_words_for_portals(
    es: ElasticsearchStore, client: Elasticsearch, prefix: str
) -> None:
    put(es, [make_doc(f"{P1}/raw/a.nxs", entries=(entry(title="Lysozyme rotation 100K"),))])
    hits = client.search(
        index=f"{prefix}-files", query={"match_bool_prefix": {"title": "rot lyso"}}
    )["hits"]["hits"]
    assert len(hits) == 1


def test_long_lines_are_cut_into_overlapping_chunks() -> None:
    line = "".join(chr(0x41 + i % 26) for i in range(20_000))
    values = search_values(line)
    assert all(len(v.encode()) <= 8000 for v in values) and len(values) > 2
    needle = line.lower()[9_990:11_990]
    assert any(needle in v for v in values)


def test_free_text_keeps_each_words_suffixes_cut_and_bounded() -> None:
    assert search_suffixes("Ab-c\ndÉ  x") == ["ab-c", "b-c", "-c", "c", fts_key("dé"),
                                             fts_key("é"), "x"]  # fmt: skip
    assert search_suffixes("aa a") == ["aa", "a"]  # each value once
    long_word = "".join(chr(0x3B1 + i % 20) for i in range(300))  # 2 bytes per character
    values = search_suffixes(long_word)
    assert values is not None and max(map(len, values)) == SUFFIX_MAX_BYTES
    assert len(values) == 20 + 31  # 20 distinct of 32 characters, then the last 31 starts
    assert all(not "\x80" <= v[0] <= "\xbf" for v in values)  # never inside a character
    words = " ".join(f"{i:06d}" for i in range(SUFFIX_MAX_COUNT))  # and their suffixes
    assert search_suffixes(words) is None  # over the cap: the lines instead
    assert search_suffixes("x" * 1_000_000) == ["x" * n for n in range(SUFFIX_MAX_BYTES, 0, -1)]


def test_free_text_is_a_prefix_query_not_a_wildcard_over_every_line() -> None:
    (short,) = es_query.text_filters(("Scan_00",))
    should = short["bool"]["should"]
    assert should[0] == {"prefix": {"search_suffixes": "scan_00"}}
    assert set(should[1]["wildcard"]) == {"search_overflow"}  # too large for suffixes
    (long,) = es_query.text_filters(("x" * (SUFFIX_MAX_BYTES + 1),))
    assert set(long["wildcard"]) == {"search"}  # longer than a suffix keeps: the lines


def test_free_text_fields_are_not_stored_twice(
    es: ElasticsearchStore, client: Elasticsearch, prefix: str
) -> None:
    put(es, [make_doc(f"{P1}/raw/a.nxs", entries=(entry(title="Lysozyme"),))])
    (hit,) = client.search(index=f"{prefix}-files")["hits"]["hits"]
    assert "doc" in hit["_source"] and not {"search", "search_suffixes"} & set(hit["_source"])
    assert es.search(SearchQuery(text="SOZY")).total == 1


# -- writes ---------------------------------------------------------------------------------
def test_many_writes_in_batches_and_every_one_lands(es: ElasticsearchStore) -> None:
    docs = [make_doc(f"{P1}/raw/f{i:05d}.h5", size=i) for i in range(2500)]
    es.put(docs)
    es.put(docs[:10])  # the same ids again: nothing doubles
    es.flush()
    assert es.count() == 2500


def test_writes_become_searchable_within_the_refresh_interval(es: ElasticsearchStore) -> None:
    import time

    doc = make_doc(f"{P1}/raw/fresh.h5")
    es.put([doc])
    deadline = time.monotonic() + 5.0
    while es.search(SearchQuery(text="fresh", size=0)).total == 0:
        assert time.monotonic() < deadline, "not searchable 5 s after put, without flush"
        time.sleep(0.05)


def test_a_refused_document_is_an_error_not_a_silent_loss(
    es: ElasticsearchStore, client: Elasticsearch, prefix: str
) -> None:
    client.indices.put_settings(index=f"{prefix}-files", settings={"index.blocks.write": True})
    try:
        with pytest.raises(StoreError, match="refused|blocked|FORBIDDEN|403"):
            es.put([make_doc(f"{P1}/raw/x.h5")])
    finally:
        client.indices.put_settings(index=f"{prefix}-files", settings={"index.blocks.write": None})


def test_busy_answers_are_retried_with_backoff(
    es: ElasticsearchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_bulk = es._client.bulk
    calls: list[int] = []

    def flaky_bulk(**kwargs: Any) -> Any:
        calls.append(len(kwargs["operations"]))
        if len(calls) == 1:
            raise es_exceptions.ApiError("too many requests", _meta(429), {})
        return real_bulk(**kwargs)

    monkeypatch.setattr(es, "_backoff_s", 0.01)
    monkeypatch.setattr(es._client, "bulk", flaky_bulk)
    es.put([make_doc(f"{P1}/raw/a.h5"), make_doc(f"{P1}/raw/b.h5")])
    es.flush()
    assert len(calls) == 2 and es.count() == 2


def test_a_closed_store_refuses_work(es_node: Node, prefix: str) -> None:
    store = ElasticsearchStore.from_url(es_node.store_url(prefix))
    store.close()
    store.close()
    for call in (lambda: store.put([make_doc("/data/x")]), lambda: store.count(),
                 lambda: store.search(SearchQuery()), lambda: store.violations()):  # fmt: skip
        with pytest.raises(StoreError, match="closed"):
            call()


# -- errors ---------------------------------------------------------------------------------
def _client_exceptions() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module in (es_exceptions, elastic_transport):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Exception) and not issubclass(cls, Warning):
                found.add(cls)
    return found


def test_every_client_exception_is_mapped() -> None:
    classes = _client_exceptions()
    assert len(classes) >= 12
    for cls in classes:
        assert cls in ERROR_MAP, f"{cls.__module__}.{cls.__name__} has no StoreError to become"
        error = translate(_instance(cls), "http://es1:9200")
        assert isinstance(error, ERROR_MAP[cls]), cls
        assert "http://es1:9200" in str(error) and "it broke" in str(error)
    assert isinstance(translate(_instance(es_exceptions.ApiError, 503), "x"), StoreUnavailable)
    assert not isinstance(translate(_instance(es_exceptions.ApiError, 400), "x"), StoreUnavailable)


def _instance(cls: type[BaseException], status: int = 500) -> BaseException:
    if issubclass(cls, elastic_transport.ApiError):
        return cls("it broke", _meta(status), {})
    return cls("it broke")


def _meta(status: int) -> elastic_transport.ApiResponseMeta:
    return elastic_transport.ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=elastic_transport.HttpHeaders(),
        duration=0.0,
        node=elastic_transport.NodeConfig("http", "localhost", 9200),
    )


def test_no_client_exception_escapes(es: ElasticsearchStore, client: Elasticsearch) -> None:
    client.indices.delete(index=f"{es.prefix}-files-v{SCHEMA_VERSION}")
    with pytest.raises(StoreError) as raised:
        es.search(SearchQuery())
    assert not isinstance(raised.value, StoreUnavailable)
    assert isinstance(raised.value.__cause__, es_exceptions.ApiError)
    with pytest.raises(StoreError):
        es.close()  # its flush fails the same way; the store is closed all the same


# -- agreement --------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_elasticsearch_agrees_with_memory(data: st.DataObject, es: ElasticsearchStore) -> None:
    docs = data.draw(random_docs())
    queries = [data.draw(random_queries(docs)) for _ in range(10)]
    es.delete(d.id for d in es.iter_documents())
    memory = MemoryStore()
    put(memory, docs)
    put(es, docs)
    assert list(es.iter_documents()) == list(memory.iter_documents())
    for query in queries:
        cursor = None
        while True:
            page = SearchQuery(**{**_fields(query), "cursor": cursor})
            expected, got = memory.search(page), es.search(page)
            assert got == expected, page
            cursor = expected.next_cursor
            if cursor is None:
                break


def _fields(query: SearchQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in query.__dataclass_fields__}


# -- the CLI ----------------------------------------------------------------------------------
def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    return subprocess.run(
        [CATALOGD, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _documents(store: str) -> list[dict[str, Any]]:
    found = _run("search", "--store", store, "--json")
    assert found.returncode == 0, found.stderr
    docs = [json.loads(line) for line in found.stdout.splitlines()]
    for doc in docs:
        assert str(doc.pop("indexed_at")).startswith("20")
    return sorted(docs, key=lambda d: str(d["path"]))


def test_cli_scan_and_search_give_what_sqlite_gives(
    es_node: Node, prefix: str, tmp_path: Path
) -> None:
    raw = tmp_path / "data/visitor/biomax/20170251/2017112208/raw"
    raw.mkdir(parents=True)
    for i, title in enumerate(("lysozyme", "thaumatin"), start=1):
        with h5py.File(raw / f"scan_{i:04d}.nxs", "w") as f:
            group = f.create_group("entry")
            group.attrs["NX_class"] = "NXentry"
            group["title"] = title
            group["start_time"] = "2017-11-22T08:15:00+01:00"
    (raw / "notes.txt").write_text("notes\n", encoding="utf-8")
    (raw.parent / "process").mkdir()
    sqlite, elastic = f"sqlite:///{tmp_path / 'c.db'}", es_node.store_url(prefix)
    for store in (sqlite, elastic):
        scanned = _run("scan", str(tmp_path / "data"), "--store", store)
        assert scanned.returncode == 0, scanned.stderr
    expected = _documents(sqlite)
    assert len(expected) == 3
    assert _documents(elastic) == expected
    thaumatin = _run("search", "THAUM", "--store", elastic, "--json").stdout.splitlines()
    assert [json.loads(line)["name"] for line in thaumatin] == ["scan_0002.nxs"]
