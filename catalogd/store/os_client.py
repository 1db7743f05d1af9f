"""OpenSearch through the official ``opensearch-py`` client, with the call surface of
the ``elasticsearch`` client that :mod:`catalogd.store.elasticsearch`,
:mod:`~catalogd.store.es_links` and :mod:`~catalogd.store.es_reindex` use.

Why a second client and not one HTTP layer for both: the ``elasticsearch`` client
checks the product on every answer and refuses OpenSearch; ``opensearch-py`` is
OpenSearch's own client (node failover, retries and the error classes of the REST API,
kept up with OpenSearch's API). The two differ in call shape (bodies as ``body=``
instead of keyword fields; point-in-time is ``create_pit``/``delete_pit`` on
``_search/point_in_time``, answering ``pit_id``) and in their exception classes, so
this adapter maps calls one to one and raises the ``elasticsearch`` client's exceptions
(same class per HTTP status, same status and error body): the store's error handling
(:mod:`catalogd.store.es_errors`: retries, the spool, messages) is one for both engines.
Only the calls catalogd makes are here; a call the store starts making must be added
(the contract suite on OpenSearch, tests/test_opensearch.py, fails until it is).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import elastic_transport
import opensearchpy
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es

from catalogd.store.engine import mismatch

T = TypeVar("T")


class Answer(dict[str, Any]):
    """An answer's JSON body, readable as the ``elasticsearch`` client's response is:
    by key, or whole as ``.body``."""

    @property
    def body(self) -> dict[str, Any]:
        return self


class Rows(list[Any]):
    """A JSON array answer (``_cat`` with ``format=json``), with ``.body`` too."""

    @property
    def body(self) -> list[Any]:
        return self


def _node(url: str) -> elastic_transport.NodeConfig:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return elastic_transport.NodeConfig(parts.scheme, parts.hostname or "", port)


def _translate(exc: opensearchpy.exceptions.OpenSearchException, node: Any) -> Exception:
    """The ``elasticsearch`` client's exception for one of ``opensearch-py``'s."""
    text = str(exc)
    if isinstance(exc, opensearchpy.ConnectionTimeout):
        return elastic_transport.ConnectionTimeout(text)
    if isinstance(exc, opensearchpy.SSLError):
        return elastic_transport.TlsError(text)
    if isinstance(exc, opensearchpy.ConnectionError):
        return elastic_transport.ConnectionError(text)
    if isinstance(exc, opensearchpy.TransportError) and isinstance(exc.status_code, int):
        meta = elastic_transport.ApiResponseMeta(
            status=exc.status_code,
            http_version="1.1",
            headers=elastic_transport.HttpHeaders(),
            duration=0.0,
            node=node,
        )
        cls = es.HTTP_EXCEPTIONS.get(exc.status_code, es.ApiError)
        return cls(message=str(exc.error), meta=meta, body=exc.info)
    if isinstance(exc, opensearchpy.SerializationError):
        return elastic_transport.SerializationError(text)
    return elastic_transport.TransportError(text)


class _Part:
    """What the namespaces share: the client, and the exception mapping of each call."""

    def __init__(self, client: opensearchpy.OpenSearch, node: Any) -> None:
        self._os = client
        self._node = node

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except opensearchpy.exceptions.OpenSearchException as exc:
            raise _translate(exc, self._node) from exc

    def _do(self, request: Callable[[], Any]) -> Any:
        with self._mapped():
            answer = request()
        if isinstance(answer, dict):
            return Answer(answer)
        return Rows(answer) if isinstance(answer, list) else answer


class _Cluster(_Part):
    def health(self) -> Any:
        return self._do(lambda: self._os.cluster.health())


class _Cat(_Part):
    def nodes(self, *, h: str, format: str) -> Any:  # noqa: A002 - the client's name
        return self._do(lambda: self._os.cat.nodes(h=h, format=format))


class _Indices(_Part):
    def exists_alias(self, *, name: str) -> bool:
        return bool(self._do(lambda: self._os.indices.exists_alias(name=name)))

    def put_index_template(self, *, name: str, **template: Any) -> Any:
        return self._do(lambda: self._os.indices.put_index_template(name=name, body=template))

    def create(self, *, index: str, **body: Any) -> Any:
        return self._do(lambda: self._os.indices.create(index=index, body=body))

    def put_alias(self, *, index: str, name: str) -> Any:
        return self._do(lambda: self._os.indices.put_alias(index=index, name=name))

    def update_aliases(self, *, actions: list[dict[str, Any]]) -> Any:
        return self._do(lambda: self._os.indices.update_aliases(body={"actions": actions}))

    def get(self, *, index: str, expand_wildcards: str = "open") -> Any:
        return self._do(
            lambda: self._os.indices.get(index=index, expand_wildcards=expand_wildcards)
        )

    def exists(self, *, index: str) -> bool:
        return bool(self._do(lambda: self._os.indices.exists(index=index)))

    def get_alias(self, *, name: str) -> Any:
        return self._do(lambda: self._os.indices.get_alias(name=name))

    def get_mapping(self, *, index: str) -> Any:
        return self._do(lambda: self._os.indices.get_mapping(index=index))

    def put_mapping(
        self, *, index: str, properties: dict[str, Any], meta: dict[str, Any] | None = None
    ) -> Any:
        body: dict[str, Any] = {"properties": properties}
        if meta is not None:
            body["_meta"] = meta
        return self._do(lambda: self._os.indices.put_mapping(index=index, body=body))

    def put_settings(self, *, index: str, settings: dict[str, Any]) -> Any:
        return self._do(lambda: self._os.indices.put_settings(index=index, body=settings))

    def refresh(self, *, index: str) -> Any:
        return self._do(lambda: self._os.indices.refresh(index=index))

    def stats(self, *, index: str, level: str) -> Any:
        return self._do(lambda: self._os.indices.stats(index=index, level=level))

    def delete(self, *, index: str, ignore_unavailable: bool = False) -> Any:
        return self._do(
            lambda: self._os.indices.delete(index=index, ignore_unavailable=ignore_unavailable)
        )

    def get_index_template(self, *, name: str) -> Any:
        return self._do(lambda: self._os.indices.get_index_template(name=name))

    def delete_index_template(self, *, name: str) -> Any:
        return self._do(lambda: self._os.indices.delete_index_template(name=name))


class OpenSearchClient(_Part):
    """``opensearch-py`` with the ``elasticsearch`` client's calls (the ones catalogd
    makes). ``options`` are those of :class:`elasticsearch.Elasticsearch` that the store
    passes: ``request_timeout``, ``max_retries``, ``retry_on_status``,
    ``retry_on_timeout``."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        request_timeout: float = 10.0,
        max_retries: int = 3,
        retry_on_status: Sequence[int] = (),
        retry_on_timeout: bool = False,
    ) -> None:
        client = opensearchpy.OpenSearch(
            list(hosts),
            timeout=request_timeout,
            max_retries=max_retries,
            retry_on_status=tuple(retry_on_status),
            retry_on_timeout=retry_on_timeout,
        )
        super().__init__(client, _node(hosts[0]))
        self.cluster = _Cluster(client, self._node)
        self.indices = _Indices(client, self._node)
        self.cat = _Cat(client, self._node)

    def info(self) -> Any:
        return self._do(lambda: self._os.info())

    def bulk(self, *, operations: list[dict[str, Any]], index: str, refresh: bool) -> Any:
        return self._do(lambda: self._os.bulk(body=operations, index=index, refresh=refresh))

    def get(self, *, index: str, id: str, source_includes: Sequence[str]) -> Any:  # noqa: A002
        includes = ",".join(source_includes)
        return self._do(lambda: self._os.get(index=index, id=id, _source_includes=includes))

    def mget(self, *, index: str, ids: Sequence[str], source: Sequence[str]) -> Any:
        fields = ",".join(source)
        return self._do(lambda: self._os.mget(index=index, body={"ids": ids}, _source=fields))

    def search(self, *, index: str | None = None, **body: Any) -> Any:
        return self._do(lambda: self._os.search(index=index, body=body))

    def count(self, *, index: str) -> Any:
        return self._do(lambda: self._os.count(index=index))

    def open_point_in_time(self, *, index: str, keep_alive: str) -> Any:
        opened = self._do(lambda: self._os.create_pit(index=index, keep_alive=keep_alive))
        return Answer(id=opened["pit_id"])

    def close_point_in_time(self, *, id: str) -> Any:  # noqa: A002 - the client's name
        return self._do(lambda: self._os.delete_pit(body={"pit_id": [id]}))

    def close(self) -> None:
        self._os.close()

    def __enter__(self) -> OpenSearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(hosts: Sequence[str], **options: Any) -> Elasticsearch:
    """An OpenSearch client for the store: typed as the ``elasticsearch`` client whose
    calls it answers (only those the store makes)."""
    return cast(Elasticsearch, OpenSearchClient(hosts, **options))


def check_product(client: Elasticsearch, where: str) -> None:
    """Raise EngineMismatch unless the server at ``where`` says it is OpenSearch
    (``GET /`` answers ``version.distribution: opensearch``; Elasticsearch 9.5's minimal
    distribution answers it 405, older ones without a distribution)."""
    try:
        version = client.info()["version"]
    except es.ApiError:
        version = {}
    if version.get("distribution") == "opensearch":
        return
    number = version.get("number")
    if number is None:
        nodes: Any = client.cat.nodes(h="version", format="json")
        number = nodes[0]["version"] if nodes else "(version unknown)"
    raise mismatch(where, f"Elasticsearch {number}", "opensearch")
