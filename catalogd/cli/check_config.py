"""``catalogd check-config``: validate and print the effective configuration."""

from __future__ import annotations

import json

import click
import tomli_w

from catalogd.cli import CliContext, pass_cli
from catalogd.config import resolve_config_path


@click.command("check-config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@pass_cli
def command(ctx: CliContext, as_json: bool) -> None:
    """Print the effective configuration (file, environment and defaults merged), with
    secrets masked. Exits 78 when it is invalid, naming the key."""
    settings = ctx.settings()
    source = resolve_config_path(ctx.config_option)
    data = settings.public_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"# effective configuration; file: {source or 'none (built-in defaults)'}")
    click.echo(tomli_w.dumps(data), nl=False)
