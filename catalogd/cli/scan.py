"""``catalogd scan ROOT [--store URL]``: index a tree once."""

from __future__ import annotations

import os
from contextlib import closing

import click

from catalogd.cli import CliContext, pass_cli
from catalogd.cli.output import interactive
from catalogd.identity import NameCache
from catalogd.policy import make_policy
from catalogd.scan import OnDemandRegistry, Scanner, ScanStats
from catalogd.store import open_spooled_store, spool_directory


@click.command("scan")
@click.argument("root", type=click.Path(file_okay=False, path_type=str))
@click.option("--store", "store_option", metavar="URL", help="Store URL (default: [store] url).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Processes walking the tree (default: [scan] workers, at most the CPUs).",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Store every file again, unchanged ones too (after a layout change, say).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary.")
@pass_cli
def command(
    ctx: CliContext,
    root: str,
    store_option: str | None,
    workers: int | None,
    refresh: bool,
    quiet: bool,
) -> None:
    """Walk ROOT once: stat, classify, check the policy and store every file.

    Files unchanged since they were stored are not written again. After a complete
    pass the violations found are recorded (GET /api/v1/violations, catalogd
    violations) and those no longer found are resolved; documents of files that are
    gone are removed.
    """
    settings = ctx.settings()
    root = os.path.abspath(root)
    layout = settings.layout_for(root)
    names = NameCache()
    policy = make_policy(settings.policy, layout, names)
    processes = min(workers or settings.scan.workers, os.cpu_count() or 1)
    with (
        open_spooled_store(
            ctx.store_url(store_option),
            spool_dir=spool_directory(settings.store.spool_dir, settings.daemon.state_dir),
            name="scan",
            required=False,
            **settings.store.index_options(),
        ) as store,
        closing(OnDemandRegistry(settings.reading(layout))) as registry,
    ):
        scanner = Scanner(
            store,
            layout,
            policy=policy,
            names=names,
            workers=processes,
            batch_size=settings.scan.batch_size,
            cross_mounts=settings.scan.cross_mounts,
            refresh=refresh,
            registry=registry,
        )
        if quiet or not interactive():
            stats = scanner.scan(root)
        else:
            stats = _scan_with_progress(scanner, root)
    if not quiet:
        click.echo(_summary(stats, store.url), err=True)


def _scan_with_progress(scanner: Scanner, root: str) -> ScanStats:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from catalogd.cli.output import err_console

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]scanning[/] {task.fields[root]}"),
        TextColumn("{task.completed:,} files, {task.fields[dirs]:,} directories"),
        TextColumn("{task.fields[rate]:,.0f} files/s"),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    ) as bar:
        task = bar.add_task("scan", total=None, root=root, dirs=0, rate=0.0)

        def report(stats: ScanStats) -> None:
            bar.update(task, completed=stats.files, dirs=stats.directories, rate=stats.rate)

        return scanner.scan(root, progress=report)


def _summary(stats: ScanStats, url: str) -> str:
    text = (
        f"scanned {stats.files:,} files in {stats.directories:,} directories "
        f"in {stats.elapsed:.1f} s ({stats.rate:,.0f} files/s) into {url}: "
        f"{stats.stored:,} documents written, {stats.unchanged:,} unchanged"
    )
    if stats.violations:
        text += f"; {stats.violations:,} policy violations recorded (catalogd violations)"
    if stats.extracted:
        text += f"; metadata read from {stats.extracted:,} HDF5 files"
        if stats.extraction_failures:
            text += f" ({stats.extraction_failures:,} could not be read: see search --json)"
    if stats.deleted:
        text += f"; removed {stats.deleted:,} documents of files that are gone"
    if stats.skipped:
        text += f"; {stats.skipped:,} links and special files not catalogued"
    if stats.errors:
        text += f"; {len(stats.errors):,} entries could not be read (see the log)"
    return text
