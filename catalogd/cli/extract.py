"""``catalogd extract FILE...``: the metadata of each file, one JSON object per line.

Exit status 0 when every file was read, 1 when any could not be, 2 for wrong usage
(click's usage errors). Each file is read within the ``[indexers]`` bounds, by up to
``indexers.workers`` worker processes in parallel, through the same
:class:`~indexers.registry.Registry` the scanner uses; lines come out in the order of
the arguments. External links of files in the data tree (``[watch] root``) are
followed only to files of the same proposal, as the daemon reads them
(``indexers.link_root`` and ``indexers.link_scope_depth``).
"""

from __future__ import annotations

import sys

import click

from catalogd.cli import CliContext, pass_cli
from catalogd.errors import EX_FAILURE
from indexers.reader import within
from indexers.registry import Registry


@click.command("extract")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True, readable=False))
@pass_cli
def command(ctx: CliContext, files: tuple[str, ...]) -> None:
    """Print the NeXus/HDF5 metadata of each FILE as JSON Lines."""
    failed = 0
    settings = ctx.settings()
    indexers = settings.indexers
    layout = settings.layout_config()
    if indexers.link_root is not None or all(within(f, layout.root) for f in files):
        # Files of the data tree follow links only inside their own proposal, as the
        # daemon reads them; an operator's own files elsewhere are read as they are.
        indexers = settings.reading(layout)
    with Registry.from_entry_points(settings=indexers) as registry:
        for result in registry.extract_lines(files):
            failed += not result.ok
            sys.stdout.write(result.line + "\n")
            sys.stdout.flush()
    if failed:
        click.get_current_context().exit(EX_FAILURE)
