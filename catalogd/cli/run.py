"""``catalogd run [--root DIR] [--store URL]``: the watching daemon."""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType
from typing import Any

import click

from catalogd.cli import CliContext, pass_cli
from catalogd.config import Settings, load_settings, resolve_config_path
from catalogd.errors import UsageError
from catalogd.layout import normalise_root
from catalogd.store import open_store


def _with_overrides(settings: Settings, root: str | None, store_url: str | None) -> Settings:
    update: dict[str, Any] = {}
    if root is not None:
        update["watch"] = settings.watch.model_copy(update={"root": normalise_root(root)})
    if store_url is not None:
        update["store"] = settings.store.model_copy(update={"url": store_url})
    return settings.model_copy(update=update) if update else settings


@click.command("run")
@click.option("--root", metavar="DIR", help="The data root to watch (default: [watch] root).")
@click.option("--store", "store_option", metavar="URL", help="Store URL (default: [store] url).")
@click.option(
    "--poll",
    is_flag=True,
    help="Poll-only: rescan every [daemon] poll_interval_s instead of watching events "
    "(GPFS, Lustre, NFS, CephFS).",
)
@pass_cli
def command(ctx: CliContext, root: str | None, store_option: str | None, poll: bool) -> None:
    """Watch the tree, check the policy, extract metadata and keep the catalogue true
    to the disk, until SIGTERM (or Ctrl-C). SIGHUP reloads the configuration."""
    from catalogd.daemon import Daemon

    if root is not None:
        root = os.path.abspath(root)
    settings = _with_overrides(ctx.settings(), root, store_option)
    if poll:
        settings = settings.model_copy(
            update={"daemon": settings.daemon.model_copy(update={"poll_only": True})}
        )
    if not os.path.isdir(settings.watch.root):
        raise UsageError(f"cannot watch {settings.watch.root}: not a directory")
    level = logging.getLevelName(settings.log.level)
    top = logging.getLogger()
    if not isinstance(level, int) or top.level > level:
        top.setLevel(settings.log.level)

    def reload() -> Settings:
        fresh = load_settings(resolve_config_path(ctx.config_option))
        return _with_overrides(fresh, root, store_option)

    with open_store(settings.store.url) as store:
        daemon = Daemon(settings, store, reload=reload)

        def on_stop(signum: int, frame: FrameType | None) -> None:
            daemon.request_stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            daemon.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        daemon.run()
