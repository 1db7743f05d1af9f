#!/usr/bin/env bash
# A throw-away OpenSearch node for the tests (tests/os_node.py) and for trying the store
# on OpenSearch by hand: scripts/elasticsearch.sh with CATALOGD_ENGINE=opensearch, so
# the same commands (fetch | start RUN_DIR | stop RUN_DIR), the same loopback-only,
# small-heap, unprivileged-user node; see that script for the details.
CATALOGD_ENGINE=opensearch exec "$(dirname "${BASH_SOURCE[0]}")/elasticsearch.sh" "$@"
