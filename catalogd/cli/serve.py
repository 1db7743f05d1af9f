"""``catalogd serve [--listen HOST:PORT] [--store URL]``: the search API alone.

Opens the store and the directory, binds the address, and serves until SIGTERM or
Ctrl-C (requests in flight are finished first). The daemon (``catalogd run``) serves
the same API beside its watching when ``[api] enabled = true``.
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
@pass_cli
def command(ctx: CliContext, listen: str | None, store_option: str | None) -> None:
    """Serve the search API: every answer filtered by the caller's groups."""
    require("fastapi", "api")
    require("uvicorn", "api")
    from api.app import create_app
    from api.server import bind, directory_from_settings, serve

    settings = ctx.settings()
    top = logging.getLogger()
    level = logging.getLevelName(settings.log.level)
    if isinstance(level, int) and top.level > level:
        top.setLevel(level)
    directory = directory_from_settings(settings)
    with open_store(ctx.store_url(store_option)) as store:
        app = create_app(settings, store, directory=directory)
        sock = bind(listen or settings.api.listen)
        serve(app, sock, trusted_proxies=settings.api.trusted_proxies)
