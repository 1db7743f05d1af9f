"""External links stay inside the linking file's proposal (``indexers.link_scope_depth``).

A user who may write into their own proposal's directory can write an HDF5 file whose
links point into another proposal's files. Whatever the catalogue reads through such a
link lands in the user's own document, which the user may search, so catalogd run, scan
and extract open linked files only inside the linking file's own proposal, and do not
even look whether a file of another proposal exists (the document would tell).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import pytest

CATALOGD = str(Path(sys.executable).with_name("catalogd"))
MINE = Path("visitor/i03/mx1001/20261201")
THEIRS = Path("visitor/i03/mx2002/20261201")
SECRET = "the other proposal's sample"
OWN = "my own processed title"


def linked_source(path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_group("g")["title"] = title


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A proposal's file linking into its own proposal, into another one (a file that
    exists and one that does not) and to a missing file of its own."""
    root = tmp_path / "data"
    own = root / MINE / "process" / "own.h5"
    theirs = root / THEIRS / "raw" / "secret.h5"
    linked_source(own, OWN)
    linked_source(theirs, SECRET)
    crafted = root / MINE / "raw" / "crafted.nxs"
    crafted.parent.mkdir()
    with h5py.File(crafted, "w") as f:
        f["own"] = h5py.ExternalLink("../process/own.h5", "/g")
        f["other"] = h5py.ExternalLink(str(theirs), "/g")
        f["guess"] = h5py.ExternalLink(str(root / THEIRS / "raw" / "guessed.h5"), "/g")
        f["gone"] = h5py.ExternalLink("missing.h5", "/g")
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = h5py.SoftLink("/other/title")
        entry["program_name"] = h5py.SoftLink("/own/title")
    return root


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    return subprocess.run(
        [CATALOGD, *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=120,
        check=False,
    )


def extract(tree: Path, **env: str) -> dict[str, Any]:
    result = run("extract", str(tree / MINE / "raw" / "crafted.nxs"), **env)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_extract_follows_links_only_inside_the_files_own_proposal(tree: Path) -> None:
    doc = extract(tree, CATALOGD_WATCH_ROOT=str(tree))
    text = json.dumps(doc)
    assert SECRET not in text
    [entry] = doc["entries"]
    assert entry["title"] is None
    assert entry["program_name"] == OWN
    exists = {Path(f["path"]).name: f["exists"] for f in doc["links"]["files"]}
    # Another proposal's files are never looked at: whether one exists is not told.
    assert exists == {"own.h5": True, "missing.h5": False, "secret.h5": None, "guessed.h5": None}
    assert doc["links"]["missing"] == 1
    assert doc["data_file_count"] == 1
    assert any("not followed" in w for w in doc["warnings"])


def test_scope_depth_zero_widens_to_the_whole_data_root(tree: Path) -> None:
    """The setting is what decides: 0 follows links anywhere below the data root."""
    doc = extract(tree, CATALOGD_WATCH_ROOT=str(tree), CATALOGD_INDEXERS_LINK_SCOPE_DEPTH="0")
    [entry] = doc["entries"]
    assert entry["title"] == SECRET
    exists = {Path(f["path"]).name: f["exists"] for f in doc["links"]["files"]}
    assert exists["secret.h5"] is True and exists["guessed.h5"] is False


def test_scanned_document_carries_nothing_of_another_proposal(tree: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'catalog.db'}"
    scanned = run("scan", str(tree), "--store", store, "-q")
    assert scanned.returncode == 0, scanned.stderr
    found = run("search", "crafted", "--store", store, "--json")
    assert found.returncode == 0, found.stderr
    [doc] = [json.loads(line) for line in found.stdout.splitlines()]
    assert SECRET not in found.stdout
    [entry] = doc["entries"]
    assert entry["title"] is None and entry["program_name"] == OWN
    # The other proposal's own document still has its title, for its own members.
    [theirs] = [
        json.loads(x)
        for x in run("search", "secret", "--store", store, "--json").stdout.splitlines()
    ]
    assert theirs["proposal"] == "mx2002"


def test_a_file_above_any_proposal_opens_no_linked_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    linked_source(root / MINE / "raw" / "x.h5", SECRET)
    stray = root / "visitor" / "i03" / "stray.nxs"
    with h5py.File(stray, "w") as f:
        f["x"] = h5py.ExternalLink(str(root / MINE / "raw" / "x.h5"), "/g")
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = h5py.SoftLink("/x/title")
    result = run("extract", str(stray), CATALOGD_WATCH_ROOT=str(root))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert SECRET not in result.stdout
    assert doc["entries"][0]["title"] is None
    assert [f["exists"] for f in doc["links"]["files"]] == [None]
