"""The CLI contracts of DESIGN.md, through the real entry point."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from catalogd.cli import main

CATALOGD = str(Path(sys.executable).with_name("catalogd"))
VISIT = Path("visitor/biomax/20170251/2017112208")
SAMPLES = ("lysozyme", "thaumatin", "insulin")


def nexus(path: Path, title: str) -> None:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = title
        entry["start_time"] = "2017-11-22T08:15:00+01:00"


@pytest.fixture()
def small_tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    raw = root / VISIT / "raw"
    raw.mkdir(parents=True)
    (root / VISIT / "process").mkdir()
    for i, sample in enumerate(SAMPLES, start=1):
        nexus(raw / f"scan_{i:04d}.nxs", f"{sample} rotation")
    (root / VISIT / "process" / "notes.txt").write_text("notes\n", encoding="utf-8")
    return root


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    return subprocess.run(
        [CATALOGD, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def jsonl(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_cli_catalogue_round_trip_keeps_every_file_and_its_layout(
    small_tree: Path, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'catalog.db'}"
    scanned = run("scan", str(small_tree), "--store", store)
    assert scanned.returncode == 0, scanned.stderr
    assert "scanned 4 files" in scanned.stderr
    assert scanned.stdout == ""

    found = run("search", "--store", store, "--json")
    assert found.returncode == 0, found.stderr
    docs = jsonl(found.stdout)
    names = sorted(str(d["name"]) for d in docs)
    assert names == ["notes.txt", "scan_0001.nxs", "scan_0002.nxs", "scan_0003.nxs"]
    for doc in docs:
        assert (doc["user_type"], doc["beamline"], doc["proposal"], doc["visit"]) == (
            "visitor",
            "biomax",
            "20170251",
            "2017112208",
        )
        assert doc["visit_date"] == "2017-11-22"
        assert str(doc["path"]).startswith(str(small_tree / VISIT))
        assert isinstance(doc["indexed_at"], str) and doc["indexed_at"].startswith("20")
        assert isinstance(doc["entries"], list)

    # tmp_path holds the test name, which must not contain "scan" for this check.
    partial = jsonl(run("search", "scan", "--store", store, "--json").stdout)
    assert sorted(str(d["name"]) for d in partial) == names[1:]

    by_kind = {str(d["name"]): d["kind"] for d in docs}
    assert by_kind == {"notes.txt": "other", **{n: "nexus" for n in names[1:]}}
    [thaumatin] = jsonl(run("search", "THAUMATIN", "--store", store, "--json").stdout)
    assert thaumatin["name"] == "scan_0002.nxs"
    assert thaumatin["title"] == "thaumatin rotation"
    assert thaumatin["start_time"] == "2017-11-22T08:15:00+01:00"
    entries = thaumatin["entries"]
    assert isinstance(entries, list) and len(entries) == 1
    assert entries[0]["name"] == "entry" and entries[0]["title"] == "thaumatin rotation"


def test_search_table_for_people(small_tree: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'c.db'}"
    assert main(["scan", str(small_tree), "--store", store, "-q"]) == 0
    result = run("search", "notes", "--store", store)
    assert result.returncode == 0
    assert "notes.txt" in result.stdout and "1 files" in result.stdout


def test_undecodable_names_give_valid_json_with_exact_bytes(
    small_tree: Path, tmp_path: Path
) -> None:
    raw_name = os.fsencode(small_tree / VISIT / "raw") + b"/scan_\xff.h5"
    with open(raw_name, "wb") as f:
        f.write(b"not hdf5")
    store = f"sqlite:///{tmp_path / 'c.db'}"
    assert run("scan", str(small_tree), "--store", store).returncode == 0
    docs = jsonl(run("search", "scan_", "--store", store, "--json").stdout)
    odd = [d for d in docs if "path_b64" in d]
    assert len(odd) == 1
    assert base64.b64decode(str(odd[0]["path_b64"])) == raw_name
    assert str(odd[0]["path"]).endswith("scan_\\xff.h5")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "/nonexistent/tree", "--store", "memory://"], "No such file or directory"),
        (["scan", ".", "--store", "ftp://x"], "unknown store URL"),
        (["scan", ".", "--store", "sqlite://relative.db"], "invalid SQLite store URL"),
        (["search", "--sort", "colour", "--store", "memory://"], "Invalid value"),
        (["no-such-command"], "No such command"),
    ],
)
def test_user_mistakes_exit_2_without_a_traceback(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_store_is_a_clear_error(small_tree: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    result = run("scan", str(small_tree), "--store", f"sqlite:///{blocker}/sub/c.db")
    assert result.returncode == 69, result.stderr
    assert str(blocker) in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_tree_is_realistic_and_scannable(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert main(["demo", str(demo)]) == 0
    kinds = {p.suffix for p in demo.rglob("*") if p.is_file()}
    assert {".nxs", ".h5", ".txt", ".log"} <= kinds
    assert {p.name for p in demo.iterdir()} == {"visitor", "staff", "proprietary"}
    assert main(["demo", str(demo)]) == 2  # not empty any more
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(["scan", str(demo), "--store", store, "-q"]) == 0
    docs = jsonl(run("search", "--store", store, "--json", "--beamline", "biomax").stdout)
    assert docs and all(d["beamline"] == "biomax" for d in docs)
    assert {d["user_type"] for d in docs} == {"visitor", "proprietary"}
