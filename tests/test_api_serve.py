"""``catalogd serve`` and ``catalogd run`` with ``[api] enabled``, as real processes on
real sockets: they answer, refuse what they cannot do with a clear exit status, and stop
cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from api_support import ALICE, build_catalogue
from ops_daemon import CATALOGD, free_port
from test_notify import Listener

TIMEOUT_S = 60.0
#: A directory nobody answers at: the process must still start and serve /healthz.
LDAP_CONFIG = """\
[ldap]
url = "ldap://127.0.0.1:9"
user_base = "ou=people,dc=example,dc=org"
group_base = "ou=groups,dc=example,dc=org"
timeout_s = 2.0
"""


def wait_for(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    env["CATALOGD_DAEMON_LISTEN"] = ""  # the daemon's own listener is not under test here
    env["CATALOGD_API_WORKERS"] = "2"  # the same on every machine (default: its CPUs)
    return env


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "catalogd.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/catalog.db"\n\n{LDAP_CONFIG}', encoding="utf-8"
    )
    return path


def start(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*CATALOGD, *args], env=environment(), stdout=out, stderr=subprocess.STDOUT
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_answers_and_stops_on_sigterm(
    tmp_path: Path, config: Path, processes: list[subprocess.Popen[bytes]], workers: str
) -> None:
    build_catalogue(tmp_path).store.close()  # a catalogue with files in it
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    listen = f"127.0.0.1:{port}"
    proc = start(
        "--config", str(config), "serve", "--listen", listen, "--workers", workers, log=log
    )
    processes.append(proc)
    wait_for(lambda: answers(base + "/healthz"), "/healthz", proc)

    assert httpx.get(base + "/api/v1/search").status_code == 401
    # The directory does not answer: fail closed, with nothing about why in the answer.
    refused = httpx.get(base + "/api/v1/search", headers=ALICE, timeout=30.0)
    assert refused.status_code == 503
    assert "127.0.0.1:9" not in refused.text
    assert httpx.get(base + "/openapi.json").json()["info"]["title"] == "catalogd"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15.0) == 0, log.read_text()


def test_serve_without_a_directory_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "catalogd.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/catalog.db"\n', encoding="utf-8")
    result = subprocess.run(
        [*CATALOGD, "--config", str(config), "serve"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 78
    assert "[ldap] url" in result.stderr


def test_serve_on_an_address_in_use_says_so(config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CATALOGD, "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"],
            env=environment(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    assert result.returncode == 69
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_serve_refuses_a_listen_address_that_is_not_one(config: Path) -> None:
    result = subprocess.run(
        [*CATALOGD, "--config", str(config), "serve", "--listen", "localhost"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr


def test_run_serves_the_api_beside_the_daemon_when_enabled(
    tmp_path: Path, config: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    config.write_text(
        config.read_text() + f'\n[api]\nenabled = true\nlisten = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    (tmp_path / "data").mkdir()
    log = tmp_path / "run.log"
    proc = start("--config", str(config), "run", "--root", str(tmp_path / "data"), log=log)
    processes.append(proc)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(base + "/healthz"), "/healthz", proc)
    assert httpx.get(base + "/api/v1/search").status_code == 401

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30.0) == 0, log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/healthz")


@pytest.mark.parametrize("trusted", [False, True])
def test_forwarded_for_names_the_client_only_from_a_trusted_proxy(
    tmp_path: Path, config: Path, processes: list[subprocess.Popen[bytes]], trusted: bool
) -> None:
    """Failed logins are counted per client address. A client must not dodge the count
    by sending X-Forwarded-For itself; only a configured proxy may name the client."""
    text = config.read_text(encoding="utf-8").replace(
        "[ldap]",
        "[api]\nlogin_max_failures = 3\n"
        + ('trusted_proxies = ["127.0.0.1"]\n' if trusted else "")
        + "\n[ldap]",
    )
    config.write_text(text, encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(
        "--config",
        str(config),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        log=tmp_path / "serve.log",
    )
    processes.append(proc)
    wait_for(lambda: answers(base + "/healthz"), "/healthz", proc)
    statuses = [
        httpx.get(
            base + "/api/v1/search",
            headers={"Authorization": "Bearer not-a-token", "X-Forwarded-For": f"192.0.2.{i}"},
        ).status_code
        for i in range(5)
    ]
    if trusted:  # five different clients behind the proxy, one failure each
        assert statuses == [401] * 5
    else:  # one client, whatever it claims
        assert statuses == [401, 401, 401, 429, 429]


# -- several workers ---------------------------------------------------------------------
def start_workers(
    tmp_path: Path, config: Path, processes: list[subprocess.Popen[bytes]], workers: int
) -> str:
    """``catalogd serve --workers N``, once every worker serves; its base URL."""
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start(
        "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}",
        "--workers", str(workers), log=log,
    )  # fmt: skip
    processes.append(proc)
    wait_for(lambda: f"from {workers} workers" in log.read_text(), "every worker", proc)
    return f"http://127.0.0.1:{port}"


def worker_pids(
    base: str, path: str, count: int, *, parallel: int = 8, **headers: str
) -> list[tuple[int, str]]:
    """``count`` requests, each on a connection of its own, ``parallel`` at a time: each
    answer's (status, pid of the worker that gave it)."""

    def one(_: int) -> tuple[int, str]:
        answer = httpx.get(base + path, headers=headers, timeout=30.0)
        return answer.status_code, answer.headers["X-Catalogd-Worker"]

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(count)))


def test_two_workers_share_the_socket_and_both_answer(
    tmp_path: Path, config: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    build_catalogue(tmp_path).store.close()
    base = start_workers(tmp_path, config, processes, 2)
    answers_ = worker_pids(base, "/healthz", 60)
    assert {status for status, _ in answers_} == {200}
    pids = {pid for _, pid in answers_}
    assert len(pids) == 2, pids  # both workers took connections
    serve_pid = processes[0].pid
    for pid in pids:  # each a child of the serve process, not the process itself
        assert int(pid) != serve_pid
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[1]) == serve_pid
    assert httpx.get(base + "/api/v1/search").status_code == 401

    processes[0].send_signal(signal.SIGTERM)
    assert processes[0].wait(30.0) == 0, (tmp_path / "serve.log").read_text()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


def test_the_failed_login_limit_holds_across_workers(
    tmp_path: Path, config: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    config.write_text(
        config.read_text().replace("[ldap]", "[api]\nlogin_max_failures = 4\n\n[ldap]"),
        encoding="utf-8",
    )
    base = start_workers(tmp_path, config, processes, 2)
    bad = {"Authorization": "Bearer not-a-token"}
    # One after the other (attempts in flight at the same moment are each checked
    # before any of them has failed, with one worker as with several).
    answered = worker_pids(base, "/api/v1/search", 24, parallel=1, **bad)
    statuses = [status for status, _ in answered]
    # four failures in all, whichever worker each reached; then 429 from both
    assert statuses.count(401) == 4, answered
    assert statuses.count(429) == 20, answered
    assert len({pid for status, pid in answered if status == 429}) == 2, answered
    # a source that has not failed is not slowed down by another's failures
    assert httpx.get(base + "/api/v1/search").status_code == 401


def test_several_workers_notify_systemd_from_the_supervisor(
    tmp_path: Path, config: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """``NotifyAccess=main``: READY=1 once every worker serves, WATCHDOG=1 while they
    answer the supervisor's health pings, STOPPING=1 on SIGTERM; all from the main pid."""
    listener = Listener(str(tmp_path / "notify.sock"))
    try:
        env = environment()
        env.update(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="2000000")
        port = free_port()
        proc = subprocess.Popen(
            [*CATALOGD, "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(proc)
        ready = listener.wait("READY")
        assert ready["STATUS"] == "serving the catalogd API with 2 workers"
        pids = {pid for _, pid in worker_pids(f"http://127.0.0.1:{port}", "/healthz", 40)}
        assert len(pids) == 2  # READY came when both serve
        listener.receive(time.monotonic() + 3.5)
        assert len(listener.times("WATCHDOG")) >= 3, listener.messages
        proc.send_signal(signal.SIGTERM)
        assert listener.wait("STOPPING")["STOPPING"] == "1"
        assert proc.wait(30) == 0
    finally:
        listener.close()


def test_workers_do_not_outlive_a_killed_supervisor(
    tmp_path: Path, config: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    base = start_workers(tmp_path, config, processes, 2)
    pids = {pid for _, pid in worker_pids(base, "/healthz", 40)}
    assert len(pids) == 2
    processes[0].kill()  # SIGKILL: the supervisor cannot stop them itself
    processes[0].wait()
    deadline = time.monotonic() + TIMEOUT_S
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their supervisor"
        time.sleep(0.1)
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/healthz")
