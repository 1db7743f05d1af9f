"""Which search engine an ``http(s)://`` store URL talks to: Elasticsearch or OpenSearch.

The store is the same on both (:mod:`catalogd.store.elasticsearch`); only the client
differs: the official ``elasticsearch`` client refuses a server that is not
Elasticsearch, so OpenSearch is reached through the official ``opensearch-py`` client
behind an adapter with the same call surface (:mod:`catalogd.store.os_client`).

The engine is chosen by ``[store] engine`` or by the URL's ``engine`` parameter
(``http://os1:9200?engine=opensearch``); with neither, it is Elasticsearch, so every
store URL of before means what it meant. The URL carries the choice from the
configuration to every process that opens the store (:func:`with_engine`). Opening a
store whose server is the other engine raises :class:`EngineMismatch`.

Pure: no client is imported here (the configuration validates with it).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs, urlsplit

from catalogd.errors import EX_CONFIG, StoreError

Engine = Literal["elasticsearch", "opensearch"]
ENGINES: tuple[Engine, ...] = ("elasticsearch", "opensearch")
DEFAULT_ENGINE: Engine = "elasticsearch"
#: The product names messages use.
ENGINE_NAMES: dict[str, str] = {"elasticsearch": "Elasticsearch", "opensearch": "OpenSearch"}
#: The parameters an ``http(s)://`` store URL may end in.
URL_PARAMETERS = ("index", "engine")


class EngineMismatch(StoreError):
    """The store URL points at the other engine. A configuration error (exit 78):
    neither a retry nor the spool helps."""

    exit_code = EX_CONFIG


def url_parameters(url: str) -> dict[str, str]:
    """The ``?name=value`` parameters of a (comma-separated) store URL; the last value of
    a name wins. Raises ValueError for a parameter of no known name."""
    found: dict[str, str] = {}
    for part in url.split(","):
        query = urlsplit(part.strip()).query
        if not query:
            continue
        pairs = parse_qs(query, keep_blank_values=True)
        for name, values in pairs.items():
            if name not in URL_PARAMETERS:
                raise ValueError(
                    f"unknown parameter {name!r} in the store URL {url!r} "
                    f"(known: {', '.join(URL_PARAMETERS)})"
                )
            found[name] = values[-1]
        if not pairs:
            raise ValueError(f"invalid parameters {query!r} in the store URL {url!r}")
    return found


def check_engine(name: str) -> Engine:
    """``name`` as an Engine; ValueError naming the known ones."""
    for engine in ENGINES:
        if name == engine:
            return engine
    raise ValueError(f"unknown engine {name!r}: use {' or '.join(ENGINES)}")


def url_engine(url: str) -> Engine | None:
    """The engine the URL's ``engine`` parameter names, None when it names none."""
    name = url_parameters(url).get("engine")
    return None if name is None else check_engine(name)


def with_engine(url: str, engine: Engine) -> str:
    """``url`` naming ``engine``: unchanged when it names one already (the URL's own
    choice wins), when it is not an ``http(s)://`` URL, or for the default engine."""
    if urlsplit(url.split(",")[0].strip()).scheme not in ("http", "https"):
        return url
    if engine == DEFAULT_ENGINE or url_engine(url) is not None:
        return url
    last = url.split(",")[-1]
    return f"{url}{'&' if urlsplit(last.strip()).query else '?'}engine={engine}"


def mismatch(where: str, found: str, engine: Engine) -> EngineMismatch:
    """The error for a store of ``engine`` whose server at ``where`` is ``found`` (the
    product and version the server gave, e.g. ``OpenSearch 3.3.0``)."""
    other = "opensearch" if engine == "elasticsearch" else "elasticsearch"
    return EngineMismatch(
        f"store.url {where} points at {found} but store.engine is {engine}: set "
        f'[store] engine = "{other}" (or add ?engine={other} to the URL)'
    )
