"""The demo's directory: a real slapd with users of the demo tree's proposals.

``scripts/demo`` runs this beside ``catalogd run`` so that the search API has a
directory to log users in and resolve their groups from, as in production. It reuses
the test suite's slapd launcher (``tests/slapd_node.py``: its own slapd.conf and database
in a temporary directory, a loopback port, never the system's slapd service) with the
demo's own people, then writes ``catalogd.toml`` for the demo and waits for SIGTERM,
SIGINT or SIGHUP, or for the process that started it to end: ``scripts/demo`` execs
``catalogd run`` in its own place, so the directory stops with the daemon however the
daemon ends (Ctrl-C, ``kill``, even ``kill -9``) and no slapd is left behind.

    python scripts/demo_directory.py DEMO_DIR

Users (password = name + "-pw"): alice on visitor proposal 20170251, bob on 20180101,
nina on nanomax's 20170077, carol in the biomax beamline staff group (nested in the
biomax visitor proposal groups, not in the proprietary 20189001), erin on the
proprietary 20189001, dave an auditor.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import ldap_fixtures as data  # noqa: E402
from slapd_node import SlapdNode  # noqa: E402

LAYOUT = "rfc2307bis"
USERS = tuple(
    data.User(name, f"{name}-pw", 30000 + i)
    for i, name in enumerate(("alice", "bob", "nina", "carol", "erin", "dave"))
)
GROUPS = (
    data.Group("biomax", ("biomax",), 8000, users=("carol",)),
    data.Group("20170251-group", ("20170251-group",), 8001, users=("alice",), groups=("biomax",)),
    data.Group("20180101-group", ("20180101-group",), 8002, users=("bob",), groups=("biomax",)),
    data.Group("20170077-group", ("20170077-group",), 8003, users=("nina",)),
    data.Group("20189001-group", ("20189001-group",), 8004, users=("erin",)),
    data.Group("data-auditors", ("data-auditors",), 8005, users=("dave",)),
)


def config(node: SlapdNode, demo_dir: Path, listen: str) -> str:
    secret = demo_dir / "ldap.secret"
    secret.write_text(node.bind_password, encoding="utf-8")
    secret.chmod(0o600)
    return (
        f'[store]\nurl = "sqlite:///{demo_dir}/catalog.db"\n\n'
        f'[ldap]\nurl = "{node.url}"\nbind_dn = "{node.bind_dn}"\n'
        f'bind_password_file = "{secret}"\nuser_base = "{data.user_base(LAYOUT)}"\n'
        f'group_base = "{data.group_base(LAYOUT)}"\nschema = "{LAYOUT}"\n\n'
        f'[api]\nenabled = true\nlisten = "{listen}"\nauditor_groups = ["data-auditors"]\n\n'
        f'[daemon]\nlisten = ""\nstate_dir = "{demo_dir}/state"\n'
    )


#: How often the directory looks whether the process that started it is still there.
PARENT_POLL_S = 0.5


def main() -> int:
    parent = os.getppid()
    demo_dir = Path(sys.argv[1]).resolve()
    listen = os.environ.get("DEMO_API_LISTEN", "127.0.0.1:8080")
    node = SlapdNode(ldif=data.ldif(USERS, GROUPS, (LAYOUT,)))
    try:
        target = demo_dir / "catalogd.toml"
        staged = target.with_suffix(".toml.new")
        staged.write_text(config(node, demo_dir, listen), encoding="utf-8")
        staged.replace(target)  # scripts/demo waits for this file: the directory is up
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: stop.set())
        # Reparented (to init or a subreaper) once the daemon has ended, by any signal.
        while not stop.wait(PARENT_POLL_S) and os.getppid() == parent:
            pass
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
