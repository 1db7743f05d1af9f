"""The global options (``--config``, ``-v``) before and after the subcommand, through
the real ``catalogd`` script (issue 13, point 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import run, small_tree  # noqa: F401  (small_tree is a fixture)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def bad_config(tmp_path: Path) -> Path:
    """A file only a command that read it can fail on: exit 78 naming the key."""
    return write_config(tmp_path / "bad.toml", "[api]\nlogin_max_failures = 0\n")


@pytest.mark.parametrize(
    "command",
    [
        ["check-config"],
        ["serve"],
        ["run"],
        ["search", "x", "--json"],
        ["status"],
        ["reindex"],
    ],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_config_before_or_after_the_command_is_read(
    command: list[str], where: str, bad_config: Path
) -> None:
    args = (
        ["--config", str(bad_config), *command]
        if where == "before"
        else [*command, "--config", str(bad_config)]
    )
    result = run(*args)
    assert "No such option" not in result.stderr
    assert result.returncode == 78, result.stderr
    assert "login_max_failures" in result.stderr


def test_check_config_after_the_command_prints_that_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", '[store]\nurl = "sqlite:////srv/after.db"\n')
    before = run("--config", str(config), "check-config")
    after = run("check-config", "--config", str(config), "--json")
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert f"file: {config}" in before.stdout
    assert '"url": "sqlite:////srv/after.db"' in after.stdout


def test_config_after_the_command_wins_over_one_before(tmp_path: Path) -> None:
    first = write_config(tmp_path / "first.toml", '[store]\nurl = "sqlite:////srv/first.db"\n')
    second = write_config(tmp_path / "second.toml", '[store]\nurl = "sqlite:////srv/second.db"\n')
    result = run("--config", str(first), "check-config", "--config", str(second), "--json")
    assert result.returncode == 0, result.stderr
    assert "/srv/second.db" in result.stdout and "/srv/first.db" not in result.stdout


def test_run_with_config_after_the_command_watches_the_configured_root(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-root"
    config = write_config(tmp_path / "run.toml", f'[watch]\nroot = "{missing}"\n')
    for args in (["--config", str(config), "run"], ["run", "--config", str(config)]):
        result = run(*args)
        assert result.returncode == 2, result.stderr
        assert f"cannot watch {missing}" in result.stderr


def test_search_with_config_after_the_command_uses_its_store(
    small_tree: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'catalog.db'}"
    assert run("scan", str(small_tree), "--store", store).returncode == 0
    config = write_config(tmp_path / "c.toml", f'[store]\nurl = "{store}"\n')
    before = run("--config", str(config), "search", "lysozyme", "--json")
    after = run("search", "lysozyme", "--json", "--config", str(config))
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert before.stdout == after.stdout
    assert "scan_0001.nxs" in after.stdout


@pytest.mark.parametrize("where", ["before", "after", "both"])
def test_verbose_before_or_after_the_command_turns_on_debug_logs(
    where: str,
    small_tree: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    scan = ["scan", str(small_tree), "--store", f"sqlite:///{tmp_path / 'c.db'}"]
    args = {
        "before": ["-vv", *scan],
        "after": [*scan, "-vv"],
        "both": ["-v", *scan, "-v"],  # the counts add up
    }[where]
    quiet = run(*scan)
    loud = run(*args)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert " DEBUG " not in quiet.stderr
    assert " DEBUG " in loud.stderr


def test_subcommand_help_lists_the_global_options() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0
    assert "--config FILE" in result.stdout and "--verbose" in result.stdout
