"""The README documents every command and every setting (it is the reference)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from catalogd.cli import COMMANDS, cli
from catalogd.config import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_in_the_readme(name: str) -> None:
    assert f"`catalogd {name}" in README


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_loads_and_is_named_as_listed(name: str) -> None:
    import click

    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.name == name


def setting_keys() -> list[str]:
    keys = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key, sub in model.model_fields.items():
            keys.append(f"{section}.{sub.alias or key}")
    return keys


@pytest.mark.parametrize("key", setting_keys())
def test_every_setting_is_in_the_readme(key: str) -> None:
    section, name = key.split(".")
    assert f"[{section}]" in README
    block = README.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
    documented = f"\n{name} = " in block or f"\n# {name} = " in block
    assert documented, f"{key} is not documented in the README"


def test_the_readme_configuration_example_is_valid(tmp_path: Path) -> None:
    from catalogd.config import load_settings

    example = README.split("## Configuration", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    secret = tmp_path / "ldap.secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    config = tmp_path / "catalogd.toml"
    config.write_text(example.replace("/etc/catalogd/ldap.secret", str(secret)), "utf-8")
    settings = load_settings(config)
    assert settings.indexers.keep_emails is False
    assert settings.ldap.bind_password is not None
