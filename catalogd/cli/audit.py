"""``catalogd audit ROOT`` and ``catalogd violations``: the auditors' commands.

``audit`` checks a tree against the data policy and reports what it found; exit status 1
when there are violations, 0 when there are none, 2 for wrong usage or an unreadable
root. With ``--fix`` it plans (and with ``--apply`` carries out) the owner, group and
mode changes that mend what can be mended.

Recording: ``audit`` records its findings (with their history) in the catalogue store
when ``--store URL`` is given, or when a configuration is in effect (a configuration
file, or ``CATALOGD_STORE_URL``): then in ``[store] url``. With no configuration at all
it records nothing, so an ad-hoc audit never creates /var/lib/catalogd/catalog.db.
``--no-store`` never records.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import click

from catalogd.cli import CliContext, pass_cli
from catalogd.config import ENV_PREFIX, Settings, resolve_config_path
from catalogd.errors import EX_FAILURE, EX_OK, UsageError
from catalogd.policy.settings import PolicySettings
from catalogd.report import FORMATS, write_report
from catalogd.violations import ViolationState

STORE_ENV = f"{ENV_PREFIX}STORE_URL"


def policy_settings(settings: Settings) -> PolicySettings:
    """The ``[policy]`` section."""
    return settings.policy


def _record_url(ctx: CliContext, store_option: str | None, no_store: bool) -> str | None:
    if no_store:
        if store_option:
            raise UsageError("--store and --no-store contradict each other")
        return None
    if store_option:
        return ctx.store_url(store_option)
    if resolve_config_path(ctx.config_option) is not None or os.environ.get(STORE_ENV):
        return ctx.store_url(None)
    return None


@contextmanager
def _output(path: str | None) -> Iterator[tuple[TextIO, bool]]:
    if path is None:
        yield sys.stdout, sys.stdout.isatty()
        sys.stdout.flush()
        return
    try:
        stream = open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    with stream:
        yield stream, False


_format = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="json: one object per line; csv; table: for a terminal; html: one file.",
)
_output_option = click.option(
    "--output", "-o", metavar="FILE", help="Write the report to FILE (default: stdout)."
)


@click.command("audit")
@click.argument("root", type=click.Path(path_type=str))
@_format
@_output_option
@click.option("--store", "store_option", metavar="URL", help="Record the findings in this store.")
@click.option("--no-store", is_flag=True, help="Do not record the findings anywhere.")
@click.option(
    "--data-root",
    metavar="DIR",
    help="The top of the layout (default: [watch] root, or ROOT itself when ROOT is not below it).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Processes walking the tree (default: [scan] workers, at most the number of CPUs).",
)
@click.option("--cross-mounts", is_flag=True, default=None, help="Enter other file systems.")
@click.option(
    "--fix",
    is_flag=True,
    help="Plan the owner/group/mode changes that mend the "
    "violations and print them (a dry run unless --apply).",
)
@click.option("--apply", "apply_fixes", is_flag=True, help="With --fix: make the changes.")
@click.option(
    "--max-actions",
    type=click.IntRange(0),
    metavar="N",
    help="With --fix --apply: change nothing when more than N entries need fixing.",
)
@pass_cli
def audit(
    ctx: CliContext,
    root: str,
    fmt: str,
    output: str | None,
    store_option: str | None,
    no_store: bool,
    data_root: str | None,
    workers: int | None,
    cross_mounts: bool | None,
    fix: bool,
    apply_fixes: bool,
    max_actions: int | None,
) -> int:
    """Check ROOT and everything below it against the data policy.

    Exit status: 0 no violations, 1 violations, 2 wrong usage or unreadable ROOT.
    """
    from catalogd.identity import NameCache
    from catalogd.policy.audit import audit_tree, make_policy
    from catalogd.policy.remedy import apply, plan

    if (apply_fixes or max_actions is not None) and not fix:
        raise UsageError("--apply and --max-actions only make sense with --fix")
    settings = ctx.settings()
    root = os.path.abspath(root)
    record_url = _record_url(ctx, store_option, no_store)
    names = NameCache()
    policy = make_policy(policy_settings(settings), settings.layout_for(root, data_root), names)
    processes = min(workers or settings.scan.workers, os.cpu_count() or 1)
    mounts = settings.scan.cross_mounts if cross_mounts is None else cross_mounts

    result = audit_tree(root, policy, processes=processes, cross_mounts=mounts, plan_fixes=fix)
    if fix:
        actions = plan(result.fixes, names)
        if apply_fixes:
            report = apply(actions, max_actions=max_actions)
            for line in report.skipped + report.failed:
                click.echo(f"not fixed: {line}", err=True)
            click.echo(f"fixed {len(report.applied)} of {len(actions)} entries", err=True)
            # Report what is left, as a fresh audit sees it.
            result = audit_tree(root, policy, processes=processes, cross_mounts=mounts)
        else:
            for action in actions:
                click.echo(f"would {action.describe()}", err=True)
            note = f"{len(actions)} entries would be fixed; run with --apply to fix them"
            if max_actions is not None and len(actions) > max_actions:
                note += f" (refused: more than --max-actions {max_actions})"
            click.echo(note, err=True)
    with _output(output) as (stream, color):
        write_report(
            result.findings, fmt, stream, title=f"Data policy audit of {root}", color=color
        )
    if record_url is not None:
        from catalogd.store import open_store

        with open_store(record_url, **settings.store.index_options()) as store:
            store.record_audit(result.findings, scope=root, seen_at=result.started)
    return EX_FAILURE if result.findings else EX_OK


@click.command("violations")
@click.option(
    "--open",
    "state",
    flag_value=ViolationState.OPEN.value,
    default=True,
    help="Violations still open (the default).",
)
@click.option(
    "--resolved",
    "state",
    flag_value=ViolationState.RESOLVED.value,
    help="Violations that were fixed, with when.",
)
@click.option("--all", "state", flag_value=ViolationState.ALL.value, help="Both.")
@click.option("--path", "path_prefix", metavar="DIR", help="Only at or below DIR.")
@_format
@_output_option
@click.option("--store", "store_option", metavar="URL", help="Store URL (default: [store] url).")
@pass_cli
def violations(
    ctx: CliContext,
    state: str,
    path_prefix: str | None,
    fmt: str,
    output: str | None,
    store_option: str | None,
) -> None:
    """List the violations recorded in the store, with their history."""
    from catalogd.store import open_store

    wanted = ViolationState(state)
    with open_store(ctx.store_url(store_option), **ctx.settings().store.index_options()) as store:
        found = store.violations(
            state=wanted, path_prefix=os.path.abspath(path_prefix) if path_prefix else None
        )
    with _output(output) as (stream, color):
        write_report(
            found,
            fmt,
            stream,
            history=True,
            title=f"Data policy violations ({wanted.value})",
            color=color,
        )
