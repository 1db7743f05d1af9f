"""The ``catalogd`` command line.

Each command lives in its own module of this package and is registered on :data:`cli`.
Commands raise :class:`~catalogd.errors.CatalogdError`; only :func:`main` turns errors
into messages on standard error and exit statuses, so user mistakes never show a
traceback.

The global options (``--config FILE``, ``-v``) are accepted before and after the
subcommand (``catalogd --config F serve`` and ``catalogd serve --config F`` are the
same): :class:`LazyGroup` adds them to every subcommand as click options of its own,
whose callbacks update the shared :class:`CliContext`. When both forms are given, the
``--config`` after the subcommand wins (it is the later one on the line), and the
``-v`` counts add up.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass, field

from catalogd import __version__, without_gc

with without_gc():  # start-up: no collections while the imports run
    import click

    from catalogd import logs
    from catalogd.config import Settings, load_settings, resolve_config_path
    from catalogd.errors import EX_SOFTWARE, CatalogdError

log = logging.getLogger("catalogd")


@dataclass
class CliContext:
    """What every command shares: the configuration file, loaded on first use."""

    config_option: str | None = None
    verbose: int = 0
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        """The validated settings (ConfigError, exit 78, when invalid)."""
        if self._settings is None:
            self._settings = load_settings(resolve_config_path(self.config_option))
            logs.apply_settings(self._settings)
        return self._settings

    def store_url(self, option: str | None) -> str:
        """``--store`` when given, else ``[store] url``; with ``[store] engine``."""
        return self.settings().store.effective_url(option)


pass_cli = click.make_pass_decorator(CliContext)

#: Command name -> "module:attribute". A command's module is imported only when that
#: command runs (or help lists it), so ``catalogd audit`` does not pay for the daemon's
#: or the progress bar's imports.
COMMANDS = {
    "audit": "catalogd.cli.audit:audit",
    "check-config": "catalogd.cli.check_config:command",
    "demo": "catalogd.cli.demo:command",
    "extract": "catalogd.cli.extract:command",
    "reindex": "catalogd.cli.reindex:command",
    "run": "catalogd.cli.run:command",
    "scan": "catalogd.cli.scan:command",
    "search": "catalogd.cli.search:command",
    "serve": "catalogd.cli.serve:command",
    "status": "catalogd.cli.status:command",
    "violations": "catalogd.cli.audit:violations",
}


CONFIG_HELP = (
    "Configuration file (default: $CATALOGD_CONFIG, else /etc/catalogd/catalogd.toml "
    "when it exists, else built-in defaults)."
)
VERBOSE_HELP = "More log output (-vv for debug)."


def _log_level(verbose: int) -> int:
    return logging.WARNING - 10 * min(verbose, 2)


def _late_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        cli_ctx = ctx.find_object(CliContext)
        assert cli_ctx is not None
        cli_ctx.config_option = value
        cli_ctx._settings = None  # loaded from this file on first use


def _late_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        cli_ctx = ctx.find_object(CliContext)
        assert cli_ctx is not None
        cli_ctx.verbose += value
        logs.setup(_log_level(cli_ctx.verbose))


def global_options() -> list[click.Parameter]:
    """``--config`` and ``-v`` as options of a subcommand (given after its name)."""
    return [
        click.Option(
            ["--config", "late_config"],
            metavar="FILE",
            help=CONFIG_HELP,
            expose_value=False,
            callback=_late_config,
        ),
        click.Option(
            ["-v", "--verbose", "late_verbose"],
            count=True,
            help=VERBOSE_HELP,
            expose_value=False,
            callback=_late_verbose,
        ),
    ]


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use, each given the global
    options so that they may also follow the command's name."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        with without_gc():
            command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        if not any(param.name == "late_config" for param in command.params):
            command.params.extend(global_options())
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="catalogd")
@click.option("--config", "config_option", metavar="FILE", help=CONFIG_HELP)
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.pass_context
def cli(ctx: click.Context, config_option: str | None, verbose: int) -> None:
    """Catalogue, police and search a light source's /data tree.

    The options above may also be given after the command (catalogd serve --config F);
    there, --config wins over one given before, and -v counts add up."""
    logs.setup(_log_level(verbose))
    ctx.obj = CliContext(config_option=config_option, verbose=verbose)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``catalogd`` script; returns the exit status."""
    try:
        status = cli.main(args=argv, prog_name="catalogd", standalone_mode=False)
    except CatalogdError as exc:
        if logs.json_enabled():  # one JSON object per line on stderr, this one too
            log.error("%s", exc.message, extra={"exit_code": exc.exit_code})
        else:
            click.echo(f"catalogd: error: {logs.REDACTOR(exc.message)}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("catalogd: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        # The reader of our output went away (``catalogd search | head``): not an error.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception:
        log.exception("internal error: please report this with the traceback above")
        return EX_SOFTWARE
    # With standalone_mode=False click returns ctx.exit()'s status, or the command's value.
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
