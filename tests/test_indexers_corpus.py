"""Byte-identical extraction of the real-shaped corpus (tests/nexus_corpus.py).

``tests/data/corpus_extract.jsonl`` holds the ``catalogd extract`` JSON lines of one round
of every shape of the corpus as the reader of commit ce09992 (before the speed work of
issue 14) wrote them. The fast reader must give the same bytes: in this process
(``isolation = "inline"``), through the worker pool and through the command itself.

Only what differs between two writes of the same corpus is normalised: the directory
it was written to, and the library versions h5py and nexusformat stamp into root
attributes. Run ``python tests/test_indexers_corpus.py --record`` only when the corpus
itself changes (a new shape), never to make a changed extraction pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import nexus_corpus
import pytest

from indexers.hdf5 import Hdf5Indexer
from indexers.nexus import NexusIndexer
from indexers.registry import Registry
from indexers.settings import IndexerSettings

GOLDEN = Path(__file__).parent / "data" / "corpus_extract.jsonl"
CATALOGD = str(Path(sys.executable).with_name("catalogd"))
PLACEHOLDER = "$CORPUS"
#: Root attributes holding library versions (they change with an upgrade, not with us).
_VERSIONS = re.compile(r'"(HDF5_Version|h5py_version|nexusformat_version)":"[^"]*"')


def normalise(line: str, directory: str) -> str:
    line = line.replace(directory, PLACEHOLDER)
    return _VERSIONS.sub(lambda m: f'"{m.group(1)}":"*"', line)


def extract_lines(paths: list[str], directory: str, **settings: object) -> list[str]:
    registry = Registry(
        [NexusIndexer(), Hdf5Indexer()], settings=IndexerSettings.model_validate(settings)
    )
    with registry:
        return [normalise(r.to_json_line(), directory) for r in registry.extract_many(paths)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    directory = tmp_path_factory.mktemp("corpus")
    return nexus_corpus.write_corpus(directory), str(directory)


def golden() -> list[str]:
    return GOLDEN.read_text(encoding="utf-8").splitlines()


def assert_same(lines: list[str], expected: list[str]) -> None:
    assert len(lines) == len(expected)
    for got, want in zip(lines, expected, strict=True):
        if got != want:  # the first differing file, whole, with its path
            assert json.loads(got) == json.loads(want)
            assert got == want  # same values, different bytes (key order, number forms)


def test_the_corpus_is_varied() -> None:
    lines = golden()
    records = [json.loads(line) for line in lines]
    assert len(records) >= 50
    assert {r["kind"] for r in records} == {"nexus", "hdf5"}
    assert all(r["ok"] for r in records)
    definitions = {e["definition"] for r in records for e in r["entries"] if e["definition"]}
    assert set(nexus_corpus.NXDL_APPS) <= definitions
    assert any(r.get("role") == "master" for r in records)
    assert any(r.get("master") for r in records)
    assert max(len(r["entries"]) for r in records) >= 5


def test_inline_extraction_is_byte_identical(corpus: tuple[list[str], str]) -> None:
    paths, directory = corpus
    assert_same(extract_lines(paths, directory, isolation="inline"), golden())
    # Every file (linked data files too) is closed again once read.
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == 0


def test_worker_pool_extraction_is_byte_identical(corpus: tuple[list[str], str]) -> None:
    paths, directory = corpus
    assert_same(extract_lines(paths, directory, workers=2), golden())


def test_extract_command_output_is_byte_identical(corpus: tuple[list[str], str]) -> None:
    paths, directory = corpus
    done = subprocess.run(
        [CATALOGD, "extract", *paths], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert_same([normalise(line, directory) for line in done.stdout.splitlines()], golden())


def record() -> None:
    """Write the golden file from the extraction in force (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = nexus_corpus.write_corpus(tmp)
        lines = extract_lines(paths, tmp, isolation="inline")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    print(f"{GOLDEN}: {len(lines)} lines")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(__doc__)
    sys.path.insert(0, str(Path(__file__).parent))
    record()
