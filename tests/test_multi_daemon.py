"""Several daemons, one catalogue: two ``catalogd run`` processes on disjoint subtrees of
one data root (``--subtree``, ``[watch] subtree``), writing to one Elasticsearch alias at
once, on the session's real node.

Each daemon classifies paths against the whole data root (the layout fields and access
groups are those of the one layout), watches and reconciles only its own subtree, and
so never deletes another's documents; ids are the path's, so a file moved from one
subtree to the other ends with exactly one document, at its new path.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from es_node import Node, es_node, prefix
from ops_daemon import CATALOGD, CatalogdProcess, clean_env, wait_for, write_nexus

from catalogd.document import FileDocument, document_id
from catalogd.store.elasticsearch import ElasticsearchStore

__all__ = ["es_node", "prefix"]  # fixtures used below

pytestmark = pytest.mark.slow

VISITS = {
    "biomax": "visitor/biomax/20170251/2017112208/raw",
    "nanomax": "visitor/nanomax/20180042/2018030108/raw",
}


class SubtreeDaemon(CatalogdProcess):
    """``catalogd run --root DATA --subtree DATA/visitor/BEAMLINE`` with a state
    directory (and spool) of its own."""

    def __init__(self, tmp: Path, beamline: str, url: str) -> None:
        self.beamline = beamline
        self.root = tmp / "data"
        self.subtree = self.root / "visitor" / beamline
        home = tmp / beamline
        home.mkdir(exist_ok=True)
        self.state = home / "state"
        self.log = home / f"daemon-{time.monotonic_ns()}.log"
        (home / "none.toml").write_text("")
        self.env = clean_env(
            CATALOGD_CONFIG=str(home / "none.toml"),
            CATALOGD_DAEMON_QUIET_PERIOD_S="0.2",
            CATALOGD_DAEMON_EXTRACT_WORKERS="1",
            CATALOGD_DAEMON_STATE_DIR=str(self.state),
            CATALOGD_DAEMON_LISTEN="",
        )
        self.args = [
            *CATALOGD,
            "-v",
            "run",
            "--root",
            str(self.root),
            "--subtree",
            str(self.subtree),
            "--store",
            url,
        ]
        self.start()

    def start(self) -> None:
        self.launch(self.args, self.env)

    def stop(self) -> None:
        assert self.terminate() == 0, self.output()


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    dirs = {}
    for beamline, visit in VISITS.items():
        dirs[beamline] = tmp_path / "data" / visit
        dirs[beamline].mkdir(parents=True)
    return dirs


@pytest.fixture
def catalogue(es_node: Node, prefix: str) -> Iterator[ElasticsearchStore]:
    store = ElasticsearchStore.from_url(es_node.store_url(prefix))
    try:
        yield store
    finally:
        store.close()


def documents(store: ElasticsearchStore) -> dict[str, FileDocument]:
    """Every stored document by path (a duplicate path fails the test)."""
    store.flush()
    docs = list(store.iter_documents())
    paths = [d.path for d in docs]
    assert len(paths) == len(set(paths)), paths
    return {d.path: d for d in docs}


def names(store: ElasticsearchStore) -> set[str]:
    return {os.path.basename(p) for p in documents(store)}


def test_two_daemons_on_disjoint_subtrees_share_one_alias(
    es_node: Node, prefix: str, tree: dict[str, Path], tmp_path: Path, catalogue: ElasticsearchStore
) -> None:
    url = es_node.store_url(prefix)
    for beamline, raw in tree.items():
        for i in range(3):
            write_nexus(raw / f"{beamline}_{i}.nxs", f"{beamline} scan {i}")
    daemons = {beamline: SubtreeDaemon(tmp_path, beamline, url) for beamline in VISITS}
    try:
        # Both reconciled their subtree at start, into the one alias.
        everything = {f"{b}_{i}.nxs" for b in VISITS for i in range(3)}
        wait_for(lambda: names(catalogue) == everything, "both subtrees in the catalogue")
        for doc in documents(catalogue).values():
            # Classified against the whole data root, not the subtree.
            assert doc.beamline in VISITS and doc.user_type == "visitor", doc
            assert doc.access_groups == (f"{doc.proposal}-group",)
        for daemon in daemons.values():
            assert daemon.status()["root"] == str(daemon.subtree)

        # Writes at once from both.
        for i in range(3, 23):
            for beamline, raw in tree.items():
                write_nexus(raw / f"{beamline}_{i}.nxs", f"{beamline} scan {i}")
        everything = {f"{b}_{i}.nxs" for b in VISITS for i in range(23)}
        wait_for(lambda: names(catalogue) == everything, "the files both daemons saw")

        # A file moved from one subtree to the other: one document, at its new path.
        old = tree["biomax"] / "biomax_0.nxs"
        new = tree["nanomax"] / "moved_from_biomax.nxs"
        os.rename(old, new)
        wait_for(
            lambda: str(new) in documents(catalogue) and str(old) not in documents(catalogue),
            "the moved file's document at its new path only",
        )
        moved = documents(catalogue)[str(new)]
        assert moved.id == document_id(str(new))
        assert moved.beamline == "nanomax" and moved.proposal == "20180042"
        assert sum(1 for p in documents(catalogue) if p.endswith("moved_from_biomax.nxs")) == 1

        # nanomax's daemon stops; one of its files goes while nobody watches it.
        daemons["nanomax"].stop()
        gone = tree["nanomax"] / "nanomax_1.nxs"
        gone.unlink()
        # biomax's daemon restarts: its reconcile at start (a complete pass) does not
        # delete nanomax's documents, not even the one whose file is gone.
        daemons["biomax"].stop()
        daemons["biomax"].start()
        assert daemons["biomax"].status()["last_reconcile"]["root"] == str(
            daemons["biomax"].subtree
        )
        assert str(gone) in documents(catalogue)
        assert {p for p in documents(catalogue) if "/nanomax/" in p} >= {
            str(tree["nanomax"] / f"nanomax_{i}.nxs") for i in range(23)
        }
        # The owner's reconcile at start deletes it.
        daemons["nanomax"].start()
        wait_for(lambda: str(gone) not in documents(catalogue), "the owner deleting it")
        expected = (everything - {"biomax_0.nxs", "nanomax_1.nxs"}) | {"moved_from_biomax.nxs"}
        assert names(catalogue) == expected
        for daemon in daemons.values():
            assert daemon.status()["store"]["state"] == "ok"
    finally:
        for daemon in daemons.values():
            daemon.kill()


def test_a_subtree_outside_the_data_root_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "none.toml").write_text("")
    done = subprocess.run(
        [
            *CATALOGD,
            "run",
            "--root",
            str(tmp_path / "data"),
            "--subtree",
            str(tmp_path / "elsewhere"),
            "--store",
            f"sqlite:///{tmp_path}/catalog.db",
        ],
        env=clean_env(CATALOGD_CONFIG=str(tmp_path / "none.toml")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"subtree {tmp_path / 'elsewhere'} is not inside the data root" in done.stderr
