"""``catalogd reindex [--store URL]``: the next version of the Elasticsearch index."""

from __future__ import annotations

from urllib.parse import urlsplit

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from catalogd.cli import CliContext, pass_cli
from catalogd.cli.output import err_console, interactive
from catalogd.errors import UsageError
from catalogd.optional import require


@click.command("reindex")
@click.option("--store", "store_option", metavar="URL", help="Store URL (default: [store] url).")
@click.option(
    "--keep-old",
    is_flag=True,
    help="Keep the previous index (outside the alias) instead of deleting it.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary.")
@pass_cli
def command(ctx: CliContext, store_option: str | None, keep_old: bool, quiet: bool) -> None:
    """Rebuild the Elasticsearch catalogue in a new index version with this catalogd's
    mapping, then swap the alias to it atomically. Searches and writes go on throughout;
    writers wait (or spool) for the moment of the swap."""
    url = ctx.store_url(store_option)
    if urlsplit(url.split(",")[0].strip()).scheme not in ("http", "https"):
        raise UsageError(
            f"catalogd reindex rebuilds an Elasticsearch catalogue (http(s)://HOST:PORT), not "
            f"{url!r}; the SQLite store migrates its schema when it is opened"
        )
    require("elasticsearch", "elasticsearch")
    from catalogd.store.elasticsearch import ElasticsearchStore
    from catalogd.store.es_reindex import reindex

    options = ctx.settings().store.index_options()  # the new index's shards and replicas
    with ElasticsearchStore.from_url(url, check_version=False, **options) as store:
        if quiet or not interactive():
            result = reindex(store, keep_old=keep_old)
        else:
            with Progress(
                TextColumn("[bold]reindexing[/] {task.fields[alias]}"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,} documents"),
                TimeElapsedColumn(),
                console=err_console(),
                transient=True,
            ) as bar:
                task = bar.add_task("reindex", total=None, alias=store.files_alias)

                def report(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                result = reindex(store, keep_old=keep_old, progress=report)
    if not quiet:
        click.echo(result.summary(), err=True)
