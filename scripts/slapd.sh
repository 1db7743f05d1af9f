#!/usr/bin/env bash
# OpenLDAP's slapd and the client tools, for the tests' throw-away directory.
#
#   scripts/slapd.sh install    install the Debian packages slapd and ldap-utils when
#                               slapd is missing (as root, non-interactively)
#
# The tests never use the system's slapd service: tests/slapd_node.py runs
# /usr/sbin/slapd itself, in a temporary directory with its own slapd.conf and database,
# on a free loopback port. So that the package does not start a directory of its own on
# port 389, debconf is told to skip the server configuration ("Omit OpenLDAP server
# configuration?" yes): the package then creates no database and its service has nothing
# to serve. A service that is already configured and running is left alone; the tests
# do not depend on it either way.
set -euo pipefail

SLAPD=${CATALOGD_SLAPD:-/usr/sbin/slapd}

say() { echo "slapd.sh: $*" >&2; }
die() {
    say "$*"
    exit 1
}

install() {
    if [ -x "$SLAPD" ] && command -v slapadd >/dev/null 2>&1 && command -v ldapsearch >/dev/null 2>&1; then
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "slapd is missing; as root: apt-get install slapd ldap-utils"
    command -v apt-get >/dev/null 2>&1 || die "slapd is missing and there is no apt-get"
    say "installing slapd and ldap-utils"
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slapd ldap-utils >/dev/null ||
        die "cannot install slapd ldap-utils"
    [ -x "$SLAPD" ] || die "installed slapd, but $SLAPD is missing"
}

case "${1:-}" in
install) install ;;
*) die "usage: $0 install" ;;
esac
