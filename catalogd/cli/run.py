"""``catalogd run [--root DIR] [--store URL]``: the watching daemon."""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from catalogd.cli import CliContext, pass_cli
from catalogd.config import Settings, load_settings, resolve_config_path
from catalogd.errors import UsageError
from catalogd.layout import normalise_root
from catalogd.optional import require
from catalogd.store import open_spooled_store, spool_directory
from catalogd.store.base import Store

if TYPE_CHECKING:
    from api.server import BackgroundServer


def _with_overrides(
    settings: Settings, root: str | None, subtree: str | None, store_url: str | None
) -> Settings:
    update: dict[str, Any] = {}
    watch: dict[str, str] = {}
    if root is not None:
        watch["root"] = normalise_root(root)
    if subtree is not None:
        watch["subtree"] = normalise_root(subtree)
    if watch:
        update["watch"] = settings.watch.model_copy(update=watch)
    if store_url is not None:
        update["store"] = settings.store.model_copy(update={"url": store_url})
    return settings.model_copy(update=update) if update else settings


def _start_api(settings: Settings, store: Store) -> BackgroundServer:
    """The search API served beside the daemon on ``[api] listen`` (``[api] enabled``)."""
    require("fastapi", "api")
    require("uvicorn", "api")
    from api.server import start_in_background

    return start_in_background(settings, store)


@click.command("run")
@click.option("--root", metavar="DIR", help="The data root to watch (default: [watch] root).")
@click.option(
    "--subtree",
    metavar="DIR",
    help="Watch and own only this part of the data root (default: [watch] subtree, else all).",
)
@click.option("--store", "store_option", metavar="URL", help="Store URL (default: [store] url).")
@click.option(
    "--poll",
    is_flag=True,
    help="Poll-only: rescan every [daemon] poll_interval_s instead of watching events "
    "(GPFS, Lustre, NFS, CephFS).",
)
@pass_cli
def command(
    ctx: CliContext, root: str | None, subtree: str | None, store_option: str | None, poll: bool
) -> None:
    """Watch the tree, check the policy, extract metadata and keep the catalogue true
    to the disk, until SIGTERM (or Ctrl-C). SIGHUP reloads the configuration."""
    from catalogd.daemon import Daemon

    if root is not None:
        root = os.path.abspath(root)
    if subtree is not None:
        subtree = os.path.abspath(subtree)
    settings = _with_overrides(ctx.settings(), root, subtree, store_option)
    if poll:
        settings = settings.model_copy(
            update={"daemon": settings.daemon.model_copy(update={"poll_only": True})}
        )
    try:
        watched = settings.watch.watched()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not os.path.isdir(watched):
        raise UsageError(f"cannot watch {watched}: not a directory")
    level = logging.getLevelName(settings.log.level)
    top = logging.getLogger()
    if not isinstance(level, int) or top.level > level:
        top.setLevel(settings.log.level)

    def reload() -> Settings:
        fresh = load_settings(resolve_config_path(ctx.config_option))
        return _with_overrides(fresh, root, subtree, store_option)

    spool_dir = spool_directory(settings.store.spool_dir, settings.daemon.state_dir)
    with open_spooled_store(
        settings.store.effective_url(),
        spool_dir=spool_dir,
        name="run",
        local_reads=True,
        **settings.store.index_options(),
    ) as store:
        daemon = Daemon(settings, store, reload=reload, listen=settings.daemon.listen)

        def on_stop(signum: int, frame: FrameType | None) -> None:
            daemon.request_stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            daemon.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        api_server = _start_api(settings, store) if settings.api.enabled else None
        try:
            daemon.run()
        finally:
            if api_server is not None:
                api_server.stop()
