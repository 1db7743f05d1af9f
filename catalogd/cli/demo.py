"""``catalogd demo DIR``: write a realistic demo tree to try catalogd on."""

from __future__ import annotations

from pathlib import Path

import click

from catalogd.errors import UsageError


@click.command("demo")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--scans",
    type=click.IntRange(1, 1000),
    default=3,
    show_default=True,
    help="NeXus scan files per visit.",
)
def command(directory: Path, scans: int) -> None:
    """Write a /data-shaped demo tree into DIRECTORY (new or empty): user types,
    beamlines, proposals, visits, raw and process, NeXus and other files."""
    from catalogd.demo import PLANTED_VIOLATIONS, build_demo_tree

    try:
        tree = build_demo_tree(directory.absolute(), scans_per_visit=scans)
    except FileExistsError as exc:
        raise UsageError(f"{exc}; choose a new or empty directory") from None
    except OSError as exc:
        raise UsageError(f"cannot write the demo tree: {exc}") from None
    click.echo(
        f"wrote {tree.files} files ({tree.nexus_files} NeXus measurements) under {tree.root}; "
        f"{len(PLANTED_VIOLATIONS)} policy violations planted on purpose",
        err=True,
    )
