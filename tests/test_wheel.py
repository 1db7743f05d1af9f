"""The package builds into a wheel that installs with pip into a fresh virtual
environment, as docs/operations.md tells operators to do, and its command runs."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from catalogd import __version__

PROJECT = Path(__file__).resolve().parent.parent


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_builds_installs_and_runs(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, PROJECT)
    (wheel,) = wheels.glob("catalogd-*.whl")
    assert wheel.name.startswith(f"catalogd-{__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        points = archive.read(entry_points).decode()
    assert {"catalogd/py.typed", "catalogd/cli/status.py", "indexers/nexus.py"} <= names
    assert not any(name.startswith("tests/") for name in names)
    assert "catalogd = catalogd.cli:main" in points
    assert "nexus = indexers.nexus:NexusIndexer" in points

    target = tmp_path / "opt" / "catalogd"
    venv.EnvBuilder(with_pip=True).create(target)
    run(target / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
    version = run(target / "bin" / "catalogd", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"catalogd, version {__version__}"
    # The installed command works outside the source tree: a real command end to end.
    (tmp_path / "none.toml").touch()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("x")
    scan = run(
        target / "bin" / "catalogd",
        "--config",
        tmp_path / "none.toml",
        "scan",
        tmp_path / "data",
        "--store",
        f"sqlite:///{tmp_path}/c.db",
        cwd=tmp_path,
    )
    assert "scanned 1 files" in scan.stdout + scan.stderr
