"""A search node for a benchmark: the one at ``url`` if given, else one of the
benchmark's own, started with ``scripts/elasticsearch.sh`` in a temporary directory on
a loopback port and stopped at the end (``CATALOGD_ES_HEAP`` sets its heap);
``engine="opensearch"`` starts OpenSearch instead (``scripts/opensearch.sh``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "elasticsearch.sh"
SCRIPTS = {"elasticsearch": SCRIPT, "opensearch": SCRIPT.with_name("opensearch.sh")}
NAMES = {"elasticsearch": "Elasticsearch", "opensearch": "OpenSearch"}


@contextmanager
def search_node(
    url: str | None, *, heap: str | None = None, engine: str = "elasticsearch"
) -> Iterator[str]:
    """The node's URL, for as long as the ``with`` block runs."""
    if url:
        yield url
        return
    script, name = SCRIPTS[engine], NAMES[engine]
    run_dir = tempfile.mkdtemp(prefix="catalogd-bench-es-")
    print(f"starting {name} ({script.name}) ...", file=sys.stderr, flush=True)
    env = dict(os.environ)
    if heap and "CATALOGD_ES_HEAP" not in env:
        env["CATALOGD_ES_HEAP"] = heap
    started = subprocess.run(
        [str(script), "start", run_dir], capture_output=True, text=True, check=False, env=env
    )
    if started.returncode != 0:
        sys.exit(f"cannot start {name}:\n{started.stderr}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(script), "stop", run_dir], capture_output=True, check=False)
