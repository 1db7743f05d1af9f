from __future__ import annotations

from pathlib import Path

import pytest

from catalogd.cli import main
from catalogd.config import DEFAULT_STORE_URL, load_settings, resolve_config_path
from catalogd.errors import EX_CONFIG, ConfigError

FULL = """
[watch]
root = "/srv/data/"
[store]
url = "http://es1:9200,http://es2:9200"
[ldap]
url = "ldap://dc.example.org:389"
bind_dn = "cn=catalogd,ou=services,dc=example,dc=org"
bind_password_file = "{secret}"
user_base = "ou=people,dc=example,dc=org"
group_base = "ou=groups,dc=example,dc=org"
schema = "ad"
[api]
listen = "127.0.0.1:8080"
auditor_groups = ["data-auditors"]
[layout]
proposal_group = "p{{proposal}}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalogd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_configuration_uses_the_embedded_store() -> None:
    settings = load_settings(None)
    assert settings.store.url == DEFAULT_STORE_URL
    assert settings.watch.root == "/data"


def test_the_design_keys_are_read_and_the_secret_comes_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "ldap.secret"
    secret.write_text("hunter2\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, FULL.format(secret=secret)))
    assert settings.watch.root == "/srv/data"
    assert settings.store.url == "http://es1:9200,http://es2:9200"
    assert settings.ldap.schema_ == "ad"
    assert settings.ldap.bind_password is not None
    assert settings.ldap.bind_password.get_secret_value() == "hunter2"
    assert settings.api.auditor_groups == ("data-auditors",)
    assert settings.layout_config().proposal_group_for(beamline="b", proposal="7") == "p7"
    assert "hunter2" not in repr(settings.public_dict())


def test_environment_overrides_file_per_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "s"
    secret.write_text("x", encoding="utf-8")
    monkeypatch.setenv("CATALOGD_STORE_URL", "sqlite:////tmp/other.db")
    monkeypatch.setenv("CATALOGD_LDAP_BIND_DN", "cn=override")
    monkeypatch.setenv("CATALOGD_API_AUDITOR_GROUPS", '["a", "b"]')
    settings = load_settings(write(tmp_path, FULL.format(secret=secret)))
    assert settings.store.url == "sqlite:////tmp/other.db"
    assert settings.ldap.bind_dn == "cn=override"
    assert settings.ldap.url == "ldap://dc.example.org:389"  # the rest of [ldap] kept
    assert settings.api.auditor_groups == ("a", "b")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[store]\nurl = "ftp://x"\n', "store.url"),
        ('[store]\nurl = "sqlite://relative.db"\n', "store.url"),
        ("[scan]\nworkers = 0\n", "scan.workers"),
        ("[store]\nshards = 0\n", "store.shards"),
        ("[store]\nshards = 1025\n", "store.shards"),
        ("[store]\nshards = 'many'\n", "store.shards"),
        ("[store]\nreplicas = -1\n", "store.replicas"),
        ("[ldap]\nschema = 'nis'\n", "ldap.schema"),
        ("[ldap]\nbind_password_file = '/nonexistent/secret'\n", "ldap"),
        ("[api]\nlisten = 'localhost'\n", "api.listen"),
        ("[api]\nworkers = 0\n", "api.workers"),
        ("[layout]\nproposal_group = '{user}'\n", "layout.proposal_group"),
        ("[layout]\nlevels = ['user_type', 'proposal']\n", "layout.levels"),
        ("[watch]\nroot = 'data'\n", "watch.root"),
        ("[nonsense]\nkey = 1\n", "nonsense"),
        ("[store\n", "not valid TOML"),
    ],
)
def test_invalid_configuration_names_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_settings(write(tmp_path, text))


def test_api_workers_default_to_the_usable_cpus_and_follow_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    default = load_settings(None).api
    assert default.workers is None
    assert default.effective_workers() == len(os.sched_getaffinity(0))
    configured = load_settings(write(tmp_path, "[api]\nworkers = 3\n")).api
    assert configured.effective_workers() == 3
    monkeypatch.setenv("CATALOGD_API_WORKERS", "5")
    assert load_settings(write(tmp_path, "[api]\nworkers = 3\n")).api.effective_workers() == 5


def test_invalid_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOGD_SCAN_WORKERS", "many")
    with pytest.raises(ConfigError, match="CATALOGD_SCAN_WORKERS"):
        load_settings(None)


def test_config_path_resolution(tmp_path: Path) -> None:
    assert resolve_config_path("/x.toml", {}) == Path("/x.toml")
    assert resolve_config_path(None, {"CATALOGD_CONFIG": "/y.toml"}) == Path("/y.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_check_config_prints_masked_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "s"
    secret.write_text("hunter2", encoding="utf-8")
    path = write(tmp_path, FULL.format(secret=secret))
    assert main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr().out
    assert 'url = "http://es1:9200,http://es2:9200"' in out
    assert 'bind_password = "**********"' in out
    assert "hunter2" not in out


def test_check_config_exits_78_on_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[scan]\nworkers = -1\n")
    assert main(["--config", str(path), "check-config"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "scan.workers" in err
    assert "Traceback" not in err
