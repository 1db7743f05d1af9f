"""The directory going away under the real ``catalogd serve``, with the session's slapd.

The data portal asks for a user with its service token; the user's groups come from
LDAP and are cached ``[ldap] cache_ttl_s``. With slapd stopped the API keeps answering
from the cache until the entry expires, then fails closed: 503, never an answer
computed without the user's groups (an empty or a wider view). When slapd is back the
API answers again by itself, without a restart. A Basic login needs a bind, so it is a
503 at once during the outage (not a 401: the password was not judged wrong).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import httpx
import ldap_fixtures as data
import pytest
from ops_daemon import CATALOGD, free_port
from reliability import Outcome, Recorder, wait_for
from slapd_node import SlapdNode

TTL_S = 4.0
LDAP_TIMEOUT_S = 1.0
TOKEN = "portal-secret-token-for-the-outage-test"
RAW = ("visitor", "biomax", "20170251", "2017112208", "raw")


@pytest.fixture
def api(tmp_path: Path, slapd: SlapdNode) -> Iterator[str]:
    """``catalogd serve`` on a catalogue of 20170251's files; its base URL."""
    raw = tmp_path.joinpath("data", *RAW)
    raw.mkdir(parents=True)
    for i in range(5):
        with h5py.File(raw / f"scan_{i}.nxs", "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry["title"] = f"lysozyme {i}"
    url = f"sqlite:///{tmp_path}/catalog.db"
    (tmp_path / "none.toml").write_text("")
    (tmp_path / "ldap.secret").write_text(data.SERVICE_PASSWORD)
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (tmp_path / "tokens.toml").write_text(f'data-portal = "{digest}"\n')
    settings = slapd.settings("rfc2307bis")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    env.update(
        CATALOGD_CONFIG=str(tmp_path / "none.toml"),
        CATALOGD_STORE_URL=url,
        CATALOGD_WATCH_ROOT=str(tmp_path / "data"),
        CATALOGD_LDAP_URL=str(settings.url),
        CATALOGD_LDAP_BIND_DN=str(settings.bind_dn),
        CATALOGD_LDAP_BIND_PASSWORD_FILE=str(tmp_path / "ldap.secret"),
        CATALOGD_LDAP_USER_BASE=str(settings.user_base),
        CATALOGD_LDAP_GROUP_BASE=str(settings.group_base),
        CATALOGD_LDAP_SCHEMA="rfc2307bis",
        CATALOGD_LDAP_CACHE_TTL_S=str(TTL_S),
        CATALOGD_LDAP_TIMEOUT_S=str(LDAP_TIMEOUT_S),
        CATALOGD_API_SERVICE_TOKENS_FILE=str(tmp_path / "tokens.toml"),
    )
    scan = subprocess.run(
        [*CATALOGD, "scan", str(tmp_path / "data"), "--store", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert scan.returncode in (0, 1), scan.stderr  # 1: the tree breaks the data policy
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [*CATALOGD, "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"catalogd serve exited: {(tmp_path / 'serve.log').read_text()}")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, "catalogd serve", 60)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        slapd.start()  # whatever happened, the session's directory is back


PORTAL = {"Authorization": f"Bearer {TOKEN}", "X-Catalogd-User": "alice"}


def search(base: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{base}/api/v1/search", params={"q": "lysozyme"}, headers=headers, timeout=10)


def test_ldap_stopped_fails_closed_after_the_cache_and_recovers(
    api: str, slapd: SlapdNode, reliability: Recorder
) -> None:
    first = search(api, PORTAL)
    assert first.status_code == 200, first.text
    assert first.json()["total"] == 5  # alice is in 20170251-group
    slapd.stop()
    stopped = time.monotonic()
    answers: list[tuple[float, int, int | None]] = []

    def closed() -> bool:
        response = search(api, PORTAL)
        total = response.json().get("total") if response.status_code == 200 else None
        answers.append((time.monotonic() - stopped, response.status_code, total))
        return response.status_code == 503

    wait_for(closed, "a 503 once the cache expired", TTL_S + 30)
    closed_after_s = answers[-1][0]
    basic = base64.b64encode(f"alice:{data.PASSWORDS['alice']}".encode()).decode()
    login = search(api, {"Authorization": f"Basic {basic}"})
    ready = httpx.get(f"{api}/readyz", timeout=10)
    slapd.start()
    restarted = time.monotonic()

    def open_again() -> bool:
        response = search(api, PORTAL)
        return response.status_code == 200 and response.json()["total"] == 5

    wait_for(open_again, "answers again after slapd is back", 60)
    recovered_s = time.monotonic() - restarted
    wrong = [a for a in answers if a[1] not in (200, 503) or (a[1] == 200 and a[2] != 5)]
    reliability.record(
        Outcome(
            group="fault",
            name="LDAP stopped under catalogd serve",
            load=f"{len(answers)} portal searches during the outage",
            fault=f"slapd stopped; groups cached {TTL_S:g} s",
            expected=len(answers),
            indexed=len(answers) - len(wrong),
            lost=0,
            recover_s=round(recovered_s, 1),
            details={
                "503_after_s": round(closed_after_s, 1),
                "answered_from_cache": sum(1 for a in answers if a[1] == 200),
                "wrong_answers": len(wrong),
                "basic_login_during_outage": login.status_code,
                "readyz_during_outage": ready.status_code,
            },
        )
    )
    assert wrong == []  # from the cache with alice's groups, or 503: nothing between
    assert closed_after_s <= TTL_S + LDAP_TIMEOUT_S + 3.0
    assert login.status_code == 503  # not 401: the password was not judged wrong
    assert "alice-pw" not in login.text
    assert ready.status_code == 503  # a load balancer stops sending requests
    assert ready.json()["checks"]["directory"] == "unavailable"
