"""``catalogd extract FILE...``: the metadata of each file, one JSON object per line.

Exit status 0 when every file was read, 1 when any could not be, 2 for wrong usage
(click's usage errors). Each file is read within the ``[indexers]`` bounds, in a worker
process, through the same :class:`~indexers.registry.Registry` the scanner uses.
"""

from __future__ import annotations

import json
import sys

import click

from catalogd.cli import CliContext, pass_cli
from catalogd.errors import EX_FAILURE
from indexers.registry import Registry


@click.command("extract")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@pass_cli
def command(ctx: CliContext, files: tuple[str, ...]) -> None:
    """Print the NeXus/HDF5 metadata of each FILE as JSON Lines."""
    failed = 0
    with Registry.from_entry_points(settings=ctx.settings().indexers) as registry:
        for path in files:
            result = registry.extract(path)
            failed += not result.ok
            line = json.dumps(result.to_json(), ensure_ascii=False, separators=(",", ":"))
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    if failed:
        click.get_current_context().exit(EX_FAILURE)
