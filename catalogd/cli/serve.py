"""``catalogd serve [--listen HOST:PORT] [--store URL] [--workers N]``: the search API alone.

Opens the store and the directory, binds the address, and serves until SIGTERM or
Ctrl-C (requests in flight are finished first). With more than one worker (``[api]
workers``, default: the CPUs this process may use) uvicorn's supervisor runs that many
processes on the one socket, each with its own store reader (see :mod:`api.server`).
The daemon (``catalogd run``) serves the same API from one thread beside its watching
when ``[api] enabled = true``.
"""

from __future__ import annotations

import logging

import click

from catalogd.cli import CliContext, pass_cli
from catalogd.optional import require
from catalogd.store import open_store


@click.command("serve")
@click.option("--listen", metavar="HOST:PORT", help="Address to serve on (default: [api] listen).")
@click.option("--store", "store_option", metavar="URL", help="Store URL (default: [store] url).")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    metavar="N",
    help="Worker processes (default: [api] workers, else the number of CPUs).",
)
@pass_cli
def command(
    ctx: CliContext, listen: str | None, store_option: str | None, workers: int | None
) -> None:
    """Serve the search API: every answer filtered by the caller's groups."""
    require("fastapi", "api")
    require("uvicorn", "api")
    from api.app import create_app
    from api.server import bind, directory_from_settings, serve, serve_workers

    settings = ctx.settings()
    top = logging.getLogger()
    level = logging.getLevelName(settings.log.level)
    if isinstance(level, int) and top.level > level:
        top.setLevel(level)
    workers = workers or settings.api.effective_workers()
    store_url = ctx.store_url(store_option)
    directory = directory_from_settings(settings)
    with open_store(store_url, **settings.store.index_options()) as store:
        if workers == 1:
            app = create_app(settings, store, directory=directory)
            sock = bind(listen or settings.api.listen)
            serve(app, sock, trusted_proxies=settings.api.trusted_proxies)
            return
    # Opened once above so that an unreachable store is a clear error here, before
    # any worker starts; each worker opens its own.
    sock = bind(listen or settings.api.listen)
    serve_workers(settings, store_url, sock, workers)
