"""``catalogd search [QUERY] [--store URL] [--json]``: the operator's local view.

Unfiltered by access groups: it reads the store directly, so it is for the operator of
the machine, not for users (they use the HTTP API, which filters every answer).
"""

from __future__ import annotations

import click
from rich.table import Table

from catalogd.cli import CliContext, pass_cli
from catalogd.cli.output import write_jsonl
from catalogd.document import display_path, to_json, utc_iso
from catalogd.errors import UsageError
from catalogd.store import SearchQuery, open_store
from catalogd.store.base import MAX_PAGE_SIZE, SORT_FIELDS

_SORTS = [*SORT_FIELDS, *(f"-{name}" for name in SORT_FIELDS)]


@click.command("search")
@click.argument("query", nargs=-1)
@click.option("--store", "store_option", metavar="URL", help="Store URL (default: [store] url).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per file.")
@click.option("--beamline")
@click.option("--proposal")
@click.option("--visit")
@click.option("--user-type")
@click.option("--kind", type=click.Choice(["nexus", "hdf5", "other"]))
@click.option("--path-prefix", metavar="DIR", help="Only files at or below DIR.")
@click.option("--start-from", metavar="ISO", help="Measurement start on or after.")
@click.option("--start-to", metavar="ISO", help="Measurement start on or before.")
@click.option("--sort", type=click.Choice(_SORTS), default="path", show_default=True)
@click.option("--limit", type=click.IntRange(min=0), help="Stop after this many files.")
@click.option(
    "--collapse",
    is_flag=True,
    help="One line per measurement: leave out the data files of catalogued masters.",
)
@pass_cli
def command(
    ctx: CliContext,
    query: tuple[str, ...],
    store_option: str | None,
    as_json: bool,
    beamline: str | None,
    proposal: str | None,
    visit: str | None,
    user_type: str | None,
    kind: str | None,
    path_prefix: str | None,
    start_from: str | None,
    start_to: str | None,
    sort: str,
    limit: int | None,
    collapse: bool,
) -> None:
    """Find files in the catalogue: every term of QUERY must occur (partial words
    match) in the file's name, path, proposal, titles or samples. Every file is listed,
    data files of a master too (their ``metadata.master`` names it) unless --collapse."""
    page_size = MAX_PAGE_SIZE if limit is None else min(limit, MAX_PAGE_SIZE)
    base = SearchQuery(
        text=" ".join(query) or None,
        beamline=beamline,
        proposal=proposal,
        visit=visit,
        user_type=user_type,
        kind=kind,
        path_prefix=path_prefix,
        start_from=start_from,
        start_to=start_to,
        sort=sort,
        size=page_size,
        facets=(),
        collapse=collapse,
    )
    with open_store(ctx.store_url(store_option), **ctx.settings().store.index_options()) as store:
        shown = 0
        cursor: str | None = None
        table = _table()
        while limit is None or shown < limit:
            result = store.search(_page(base, cursor))
            items = result.items if limit is None else result.items[: limit - shown]
            if as_json:
                write_jsonl(to_json(doc) for doc in items)
            else:
                for doc in items:
                    table.add_row(
                        display_path(doc.path),
                        f"{doc.size:,}",
                        doc.kind,
                        doc.title or "",
                        (utc_iso(doc.mtime) or "")[:19],
                    )
            shown += len(items)
            cursor = result.next_cursor
            if cursor is None:
                break
    if not as_json:
        from rich.console import Console

        console = Console()
        if shown:
            console.print(table)
        console.print(f"{shown:,} files", style="dim", highlight=False)


def _page(base: SearchQuery, cursor: str | None) -> SearchQuery:
    from dataclasses import replace

    try:
        return replace(base, cursor=cursor)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _table() -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("path", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("kind")
    table.add_column("title", overflow="fold")
    table.add_column("modified (UTC)")
    return table
