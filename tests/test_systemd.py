"""The systemd files in systemd/: valid for systemd's own tools, and saying what they
promise (Type=notify, the hardening, each directive commented); a bad configuration
exits 78, which RestartPreventExitStatus=78 relies on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNITS = ("catalogd.service", "catalogd-api.service")
DROP_INS = ("remediation.conf", "inotify-unprivileged.conf")
INSTALLED_BINARY = "/opt/catalogd/bin/catalogd"
#: The catalogd script of the environment running the tests: systemd-analyze verify
#: checks that ExecStart= names an executable.
CATALOGD_BIN = Path(sys.executable).parent / "catalogd"
CATALOGD = [sys.executable, "-c", "import sys; from catalogd.cli import main; sys.exit(main())"]

HARDENING = (
    "ProtectSystem",
    "ReadOnlyPaths",
    "CapabilityBoundingSet",
    "NoNewPrivileges",
    "PrivateTmp",
    "RestrictAddressFamilies",
    "SystemCallFilter",
    "LimitNOFILE",
)


def directives(text: str) -> dict[str, list[str]]:
    """``Key`` -> every value assigned to it, in order (comments skipped)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def installed_copy(tmp: Path, *, drop_ins: bool = True) -> Path:
    """systemd/ copied with ExecStart= pointing at this environment's catalogd."""
    target = tmp / "units"
    shutil.copytree(SYSTEMD, target)
    if not drop_ins:
        shutil.rmtree(target / "catalogd.service.d")
    for unit in UNITS:
        path = target / unit
        path.write_text(path.read_text().replace(INSTALLED_BINARY, str(CATALOGD_BIN)))
    return target


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/test installs the systemd package"
    return subprocess.run(
        [analyze, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    """systemd-analyze reports unknown keys and unparsable values on stderr but exits 0:
    any output at all is a failure."""
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output


def test_the_executable_the_tests_point_at_exists() -> None:
    assert CATALOGD_BIN.is_file() and os.access(CATALOGD_BIN, os.X_OK)


@pytest.mark.parametrize("drop_ins", [False, True], ids=["units", "units+drop-ins"])
def test_units_verify_cleanly(tmp_path: Path, drop_ins: bool) -> None:
    units = installed_copy(tmp_path, drop_ins=drop_ins)
    assert_clean(verify(*(units / unit for unit in UNITS)))


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("catalogd.service", "ProtectSystem=maybe"),
        ("catalogd.service", "NoSuchDirective=1"),
        ("catalogd.service.d/remediation.conf", "ReadWritePath=/data"),
    ],
)
def test_verification_catches_a_broken_unit(tmp_path: Path, where: str, line: str) -> None:
    units = installed_copy(tmp_path)
    path = units / where
    path.write_text(path.read_text() + f"{line}\n")
    result = verify(units / "catalogd.service")
    assert result.returncode != 0 or (result.stdout + result.stderr).strip()


def test_verification_catches_a_missing_executable(tmp_path: Path) -> None:
    units = installed_copy(tmp_path)
    unit = units / "catalogd.service"
    unit.write_text(unit.read_text().replace(str(CATALOGD_BIN), str(tmp_path / "nothing")))
    assert verify(unit).returncode != 0


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_notify_services_that_do_not_restart_on_a_bad_config(unit: str) -> None:
    d = directives((SYSTEMD / unit).read_text())
    assert d["Type"] == ["notify"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["Restart"] == ["on-failure"]
    assert d["WatchdogSec"] and d["ExecStart"][0].startswith(INSTALLED_BINARY + " ")
    assert d["NoNewPrivileges"] == ["yes"] and d["ProtectSystem"] == ["strict"]


def test_the_watcher_is_hardened_as_documented() -> None:
    d = directives((SYSTEMD / "catalogd.service").read_text())
    assert d["ExecStart"] == [f"{INSTALLED_BINARY} run"]
    assert d["ReadOnlyPaths"] == ["/data"]
    assert d["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH CAP_SYS_ADMIN"]
    assert d["PrivateTmp"] == ["yes"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in d["SystemCallFilter"]
    assert int(d["LimitNOFILE"][0]) >= 65536


@pytest.mark.parametrize("unit", UNITS)
def test_every_hardening_directive_is_commented(unit: str) -> None:
    """Each hardening directive has a comment right above it (or above the group of
    directives it belongs to) saying what it is for and when to loosen it."""
    lines = (SYSTEMD / unit).read_text().splitlines()
    # The API never sees /data at all.
    keys: tuple[str, ...] = HARDENING
    if unit == "catalogd-api.service":
        keys = (*(k for k in HARDENING if k != "ReadOnlyPaths"), "InaccessiblePaths")
    for key in keys:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        above = index - 1
        while above >= 0 and lines[above] and not lines[above].startswith("#"):
            above -= 1  # directives of one commented group
        assert above >= 0 and lines[above].startswith("#"), f"{unit}: {key} is not commented"
    comments = "\n".join(line for line in lines if line.startswith("#"))
    assert "Loosen" in comments


def test_drop_ins_change_what_they_say() -> None:
    remediation = directives((SYSTEMD / "catalogd.service.d" / "remediation.conf").read_text())
    assert remediation["ReadOnlyPaths"] == [""]  # cleared
    assert remediation["ReadWritePaths"] == ["/data"]
    assert remediation["CapabilityBoundingSet"] == ["CAP_CHOWN CAP_FOWNER"]
    inotify = directives((SYSTEMD / "catalogd.service.d" / "inotify-unprivileged.conf").read_text())
    assert inotify["CapabilityBoundingSet"] == ["", "CAP_DAC_READ_SEARCH"]
    assert inotify["SystemCallFilter"] == ["", "@system-service"]
    assert "CATALOGD_DAEMON_SOURCE=inotify" in inotify["Environment"]


def test_sysusers_and_tmpfiles_create_the_user_and_directories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sysusers = shutil.which("systemd-sysusers")
    tmpfiles = shutil.which("systemd-tmpfiles")
    assert sysusers and tmpfiles
    conf = SYSTEMD / "sysusers.d" / "catalogd.conf"
    result = subprocess.run(
        [sysusers, f"--root={root}", str(conf)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    passwd = (root / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("catalogd:"))
    uid, gid = int(entry.split(":")[2]), int(entry.split(":")[3])
    assert entry.endswith(":/var/lib/catalogd:/usr/sbin/nologin")
    conf = SYSTEMD / "tmpfiles.d" / "catalogd.conf"
    result = subprocess.run(
        [tmpfiles, "--create", f"--root={root}", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    state = (root / "var" / "lib" / "catalogd").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o7777) == (uid, gid, 0o750)
    config = (root / "etc" / "catalogd").stat()
    assert (config.st_uid, config.st_gid, config.st_mode & 0o7777) == (0, gid, 0o750)


def test_sysctl_drop_in_sets_existing_inotify_limits() -> None:
    text = (SYSTEMD / "sysctl.d" / "60-catalogd-inotify.conf").read_text()
    settings = dict(
        (key.strip(), value.strip())
        for key, _, value in (
            line.partition("=") for line in text.splitlines() if line and line[0] != "#"
        )
    )
    assert set(settings) >= {"fs.inotify.max_user_watches", "fs.inotify.max_queued_events"}
    for key, value in settings.items():
        assert Path("/proc/sys", *key.split(".")).is_file(), f"{key}: no such kernel setting"
        assert int(value) > 0, key
    assert int(settings["fs.inotify.max_user_watches"]) >= 1 << 20
    assert int(settings["fs.inotify.max_queued_events"]) >= 1 << 20


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ('[daemon]\nlisten = "no port here"\n', "daemon.listen"),
        ("[daemon]\nqueue_size = 1\n", "daemon.queue_size"),
        ('[store]\nurl = "mysql://x"\n', "store.url"),
        ('[log]\nformat = "xml"\n', "log.format"),
    ],
)
def test_a_bad_configuration_exits_78_naming_the_key(tmp_path: Path, config: str, key: str) -> None:
    """What systemd's RestartPreventExitStatus=78 relies on: ``catalogd run`` exits 78,
    and the message (the journal's last line) names the key."""
    (tmp_path / "data").mkdir()
    path = tmp_path / "catalogd.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOGD_", "NOTIFY_"))}
    result = subprocess.run(
        [*CATALOGD, "--config", str(path), "run", "--root", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"^catalogd: error: invalid configuration", result.stderr, re.M)
