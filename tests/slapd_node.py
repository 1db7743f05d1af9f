# ldap3 ships no type hints (typeshed has them as types-ldap3):
# mypy: disable-error-code="import-untyped"
"""A real OpenLDAP slapd for the tests, one per test session.

Not the system's slapd service: :class:`SlapdNode` writes its own ``slapd.conf`` (Debian's
core, cosine, inetorgperson and nis schemas; one mdb database for ``dc=example,dc=org``)
into a temporary directory, loads :func:`ldap_fixtures.ldif` with ``slapadd`` before the
server starts, and runs ``/usr/sbin/slapd -d 0`` (in the foreground, so this process owns
it) on a free loopback port; as root it drops to the ``openldap`` user the package
creates. :meth:`SlapdNode.start` waits until catalogd's service account can bind and
search. :meth:`SlapdNode.stop` and :meth:`SlapdNode.start` take the directory down and
bring it back on the same port with the same data, for the outage tests;
:meth:`SlapdNode.frozen` suspends it (a hung server). It offers StartTLS on
:attr:`SlapdNode.url` and TLS on :attr:`SlapdNode.ldaps_url`, with a certificate for
127.0.0.1 from a test CA (:attr:`SlapdNode.ca_file`) made with ``cryptography``.

The access rules are a production directory's: nothing is readable anonymously,
passwords can only be used to bind, and the service account reads everything. When
slapd is missing, ``scripts/slapd.sh install`` installs it (Debian, as root); a server
that cannot be started fails the tests that need it, they are never skipped.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ldap_fixtures as data
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ldap3 import NONE, Connection, Server
from ldap3.core.exceptions import LDAPException
from ops_daemon import free_port

from catalogd.config import LdapSettings

SLAPD = Path(os.environ.get("CATALOGD_SLAPD", "/usr/sbin/slapd"))
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slapd.sh"
SCHEMAS = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")
#: The account slapd runs as when started by root (created by Debian's package).
RUN_AS = "openldap"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

CONFIG = """\
include {schemas}/core.schema
include {schemas}/cosine.schema
include {schemas}/inetorgperson.schema
include {schemas}/nis.schema
modulepath {modules}
moduleload back_mdb
pidfile {run}/slapd.pid
argsfile {run}/slapd.args
TLSCACertificateFile {run}/ca.pem
TLSCertificateFile {run}/server.pem
TLSCertificateKeyFile {run}/server.key
disallow bind_anon
require authc

database mdb
maxsize 104857600
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
directory {run}/db
index objectClass,uid,cn,memberUid,member,gidNumber eq

access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{service}" read
    by * none
"""


def write_certificates(directory: Path) -> None:
    """A test CA (``ca.pem``) and a server certificate for 127.0.0.1 and localhost
    signed by it (``server.pem``, ``server.key``), for StartTLS and ldaps."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "catalogd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(server.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


class SlapdNode:
    """A running slapd with the test directory; see the module docstring."""

    bind_dn = data.SERVICE_DN
    bind_password = data.SERVICE_PASSWORD
    suffix = data.SUFFIX
    users = data.PASSWORDS
    expected = data.EXPECTED

    def __init__(self, *, ldif: str | None = None, port: int | None = None) -> None:
        """Start a directory holding ``ldif`` (default: the test directory of
        :mod:`ldap_fixtures`) on ``port`` (default: a free one)."""
        if not SLAPD.exists():
            install = subprocess.run(
                [str(SCRIPT), "install"], capture_output=True, text=True, check=False
            )
            if install.returncode != 0:
                raise RuntimeError(f"scripts/slapd.sh install failed:\n{install.stderr}")
        self.run_dir = Path(tempfile.mkdtemp(prefix="catalogd-slapd-"))
        self.port = port or free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        #: The same directory over TLS from the first byte (ldaps), with a certificate
        #: for 127.0.0.1 signed by the test CA in :attr:`ca_file`.
        self.ldaps_url = f"ldaps://127.0.0.1:{free_port()}"
        self.ca_file = self.run_dir / "ca.pem"
        write_certificates(self.run_dir)
        self._process: subprocess.Popen[bytes] | None = None
        #: Seconds the last start took until the service account could search.
        self.start_seconds = 0.0
        config = self.run_dir / "slapd.conf"
        config.write_text(
            CONFIG.format(
                schemas=SCHEMAS,
                modules=MODULES,
                run=self.run_dir,
                suffix=data.SUFFIX,
                service=data.SERVICE_DN,
            ),
            encoding="utf-8",
        )
        (self.run_dir / "db").mkdir()
        ldif_file = self.run_dir / "directory.ldif"
        ldif_file.write_text(data.ldif() if ldif is None else ldif, encoding="utf-8")
        loaded = subprocess.run(
            ["slapadd", "-q", "-f", str(config), "-l", str(ldif_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        if loaded.returncode != 0:
            self.close()
            raise RuntimeError(f"slapadd could not load the test directory:\n{loaded.stderr}")
        self._owner = self._unprivileged_user()
        if self._owner is not None:
            for path in [self.run_dir, *self.run_dir.rglob("*")]:
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        self.start()

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(RUN_AS)
        except KeyError:
            return None

    # -- what tests use -----------------------------------------------------------------

    def user_base(self, layout: str) -> str:
        return data.user_base(layout)

    def group_base(self, layout: str) -> str:
        return data.group_base(layout)

    def settings(self, layout: str, **overrides: Any) -> LdapSettings:
        """``[ldap]`` settings for this server and ``layout`` (``rfc2307bis``/``rfc2307``)."""
        values: dict[str, Any] = {
            "url": self.url,
            "bind_dn": self.bind_dn,
            "bind_password": self.bind_password,
            "user_base": data.user_base(layout),
            "group_base": data.group_base(layout),
            "schema": layout,
            "timeout_s": 2.0,
        }
        values.update(overrides)
        return LdapSettings.model_validate(values)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start slapd (again) on the same port and wait until it answers."""
        if self.running:
            return
        listen = f"{self.url}/ {self.ldaps_url}/"
        argv = [str(SLAPD), "-f", str(self.run_dir / "slapd.conf"), "-h", listen]
        argv += ["-d", "0"]
        if self._owner is not None:
            argv += ["-u", RUN_AS, "-g", RUN_AS]
        began = time.monotonic()
        with open(self.run_dir / "slapd.log", "ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        deadline = began + START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = (self.run_dir / "slapd.log").read_text(errors="replace")
                raise RuntimeError(f"slapd did not start at {self.url}:\n{log_text[-2000:]}")
            time.sleep(0.02)
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop slapd; the data stays for :meth:`start`."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)

    @contextmanager
    def down(self) -> Iterator[None]:
        """The directory is unreachable inside the block and back after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """slapd is suspended (SIGSTOP) inside the block: connections are accepted by
        the kernel but nothing answers, as with a hung server."""
        assert self._process is not None and self.running
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _answers(self) -> bool:
        """Whether the service account can bind and search."""
        conn = Connection(
            Server(self.url, connect_timeout=1, get_info=NONE),
            self.bind_dn,
            self.bind_password,
            receive_timeout=1,
        )
        try:
            return bool(conn.bind() and conn.search(self.suffix, "(objectClass=organization)"))
        except LDAPException:
            return False
        finally:
            conn.unbind()
            if conn.socket is not None:  # ldap3 leaves a refused connection's socket open
                conn.socket.close()


@pytest.fixture(scope="session")
def slapd() -> Iterator[SlapdNode]:
    """The running directory; a failure to start it is a test failure, not a skip."""
    node = SlapdNode()
    atexit.register(node.close)  # also when the session is interrupted
    try:
        yield node
    finally:
        node.close()
