"""The Elasticsearch client's exceptions, translated once into catalogd's StoreErrors.

:data:`ERROR_MAP` names every exception class of ``elasticsearch`` and
``elastic_transport`` (a test fails on any left out); :func:`translated` applies it at
the edge of the Elasticsearch store, so none of them escapes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import elastic_transport
from elasticsearch import exceptions as es

from catalogd.errors import EX_CONFIG, StoreError, StoreUnavailable

#: Statuses worth a retry: the cluster is busy (429) or one of its nodes is (5xx).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: An item refused by an index write block (``catalogd reindex`` sets one while it
#: swaps the alias): retried like a busy cluster, it lands in the new index.
WRITE_BLOCK = "cluster_block_exception"


class SchemaOutdated(StoreError):
    """The index was built with another mapping version: ``catalogd reindex`` (or a
    newer catalogd) is needed. Restarting will not help, so the exit status is 78."""

    exit_code = EX_CONFIG


#: Every exception of the client -> the StoreError it becomes.
ERROR_MAP: dict[type[BaseException], type[StoreError]] = {
    # no answer: the cluster is unreachable, slow, or not what it claims to be
    elastic_transport.TransportError: StoreUnavailable,
    elastic_transport.ConnectionError: StoreUnavailable,
    elastic_transport.ConnectionTimeout: StoreUnavailable,
    elastic_transport.TlsError: StoreUnavailable,
    elastic_transport.SniffingError: StoreUnavailable,
    es.TransportError: StoreUnavailable,
    es.ConnectionError: StoreUnavailable,
    es.ConnectionTimeout: StoreUnavailable,
    es.SSLError: StoreUnavailable,
    es.UnsupportedProductError: StoreUnavailable,
    es.AuthenticationException: StoreUnavailable,
    es.AuthorizationException: StoreUnavailable,
    # an answer, refusing the request
    elastic_transport.SerializationError: StoreError,
    es.SerializationError: StoreError,
    elastic_transport.ApiError: StoreError,
    es.ApiError: StoreError,
    es.NotFoundError: StoreError,
    es.ConflictError: StoreError,
    es.BadRequestError: StoreError,
    es.RequestError: StoreError,
}
#: The client's exception classes ERROR_MAP must cover, as caught by translated().
CLIENT_ERRORS: tuple[type[BaseException], ...] = tuple(ERROR_MAP)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an API error, else None."""
    if isinstance(exc, elastic_transport.ApiError):
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            return status
        meta = getattr(exc, "meta", None)
        return getattr(meta, "status", None)
    return None


def retryable(exc: BaseException) -> bool:
    """Whether a retry may succeed: no connection, a timeout, 429 or a 5xx status."""
    if isinstance(exc, elastic_transport.ConnectionError | elastic_transport.ConnectionTimeout):
        return True
    return status_of(exc) in RETRY_STATUSES


def retryable_item(status: int, error: object) -> bool:
    """Whether a bulk item refused with ``status`` and ``error`` may succeed later."""
    if status in RETRY_STATUSES:
        return True
    return status == 403 and isinstance(error, dict) and error.get("type") == WRITE_BLOCK


def translate(exc: BaseException, where: str, product: str = "Elasticsearch") -> StoreError:
    """The StoreError ``exc`` becomes (StoreUnavailable for 429 and 5xx answers too);
    ``product`` names the server in the message (OpenSearch for that engine)."""
    kind: type[StoreError] = StoreError
    for cls in type(exc).__mro__:
        if cls in ERROR_MAP:
            kind = ERROR_MAP[cls]
            break
    status = status_of(exc)
    if status in RETRY_STATUSES:
        kind = StoreUnavailable
    detail = str(exc) or type(exc).__name__
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message and message not in detail:
        detail = f"{detail}: {message}"
    return kind(f"{product} at {where}: {detail}")


@contextmanager
def translated(where: str) -> Iterator[None]:
    try:
        yield
    except CLIENT_ERRORS as exc:
        raise translate(exc, where) from exc
