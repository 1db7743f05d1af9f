"""Logs: one line per event, JSON on request, and no configured secret ever written."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_daemon import CATALOGD, clean_env, wait_for

from catalogd import logs
from catalogd.config import SECRET_MASK, load_settings

SECRET = 'Tr0ub4dor&3-"quoted"-secret'


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger writing through a catalogd formatter into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    logger = logging.getLogger(f"catalogd.test-logs.{id(buffer)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer, handler
    logger.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def leak_everywhere(logger: logging.Logger) -> int:
    """Log the secret in every way a careless call could; returns how many records."""
    logger.info("binding with %s", SECRET)
    logger.warning(f"password is {SECRET}")
    logger.error("request failed", extra={"auth": SECRET, "proposal": "20170251"})
    try:
        raise RuntimeError(f"cannot bind: {SECRET}\nsecond line")
    except RuntimeError:
        logger.exception("directory unreachable")
    logger.info("store at https://catalogd:an-unknown-password@es1:9200/ refused")
    return 5


def test_json_lines_parse_and_never_contain_a_secret(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, buffer, handler = captured
    redactor = logs.Redactor()
    redactor.add([SECRET])
    handler.setFormatter(logs.JsonFormatter(redactor))
    count = leak_everywhere(logger)
    out = lines(buffer)
    assert len(out) == count  # one line per event, the traceback included
    records = [json.loads(line) for line in out]
    assert SECRET not in buffer.getvalue()
    assert "an-unknown-password" not in buffer.getvalue()
    for record in records:
        assert {"ts", "level", "logger", "msg", "pid", "thread"} <= set(record)
        assert record["ts"].endswith("Z")
    assert records[0] == {**records[0], "level": "INFO", "msg": f"binding with {SECRET_MASK}"}
    assert records[2]["auth"] == SECRET_MASK and records[2]["proposal"] == "20170251"
    assert records[3]["level"] == "ERROR" and "RuntimeError" in records[3]["exc"]
    assert SECRET_MASK in records[3]["exc"]
    assert records[4]["msg"] == f"store at https://catalogd:{SECRET_MASK}@es1:9200/ refused"


def test_text_lines_are_one_per_event_and_masked(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, buffer, handler = captured
    redactor = logs.Redactor()
    redactor.add([SECRET])
    handler.setFormatter(logs.TextFormatter(redactor))
    count = leak_everywhere(logger)
    out = lines(buffer)
    assert len(out) == count
    assert SECRET not in buffer.getvalue() and "an-unknown-password" not in buffer.getvalue()
    assert out[0].split(" ", 3)[1:] == [
        "INFO",
        f"{logger.name}:",
        f"binding with {SECRET_MASK}",
    ]
    assert "Traceback" in out[3] and "\\nsecond line" in out[3]


def test_short_secrets_are_not_masked_everywhere() -> None:
    redactor = logs.Redactor()
    redactor.add(["ab"])
    assert redactor("absolutely fine") == "absolutely fine"


def test_the_settings_secrets_are_found(tmp_path: Path) -> None:
    secret_file = tmp_path / "ldap.secret"
    secret_file.write_text(SECRET + "\n")
    config = tmp_path / "catalogd.toml"
    config.write_text(
        f'[ldap]\nbind_password_file = "{secret_file}"\n'
        '[store]\nurl = "http://catalogd:es-password@es1:9200,http://es2:9200"\n'
    )
    found = logs.settings_secrets(load_settings(config))
    assert SECRET in found and "es-password" in found


def test_the_daemon_writes_json_lines_without_its_secrets(tmp_path: Path) -> None:
    """``catalogd run`` with ``[log] format = "json"``: every line of its standard
    error is a JSON object, from the start to the stop, at the configured level, and
    the LDAP bind password read from its file appears nowhere."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file.txt").write_text("x")
    secret_file = tmp_path / "ldap.secret"
    secret_file.write_text(SECRET + "\n")
    config = tmp_path / "catalogd.toml"
    good = (
        f'[ldap]\nurl = "ldap://127.0.0.1:1"\nbind_password_file = "{secret_file}"\n'
        f'[daemon]\nlisten = ""\nstate_dir = "{tmp_path / "state"}"\nquiet_period_s = 0.1\n'
        '[log]\nformat = "json"\nlevel = "DEBUG"\n'
    )
    config.write_text(good)
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [*CATALOGD, "--config", str(config), "run", "--root", str(tmp_path / "data")],
            env=clean_env(CATALOGD_STORE_URL=f"sqlite:///{tmp_path}/c.db"),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for(lambda: b"reconciled" in stderr.read_bytes(), "the reconcile")
        # A reload with a broken file is refused, and logged.
        config.write_text(good.replace('format = "json"', 'format = "yaml"'))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: b"not reloaded" in stderr.read_bytes(), "the refused reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stderr.read_text()
    assert SECRET not in text
    records = [json.loads(line) for line in text.splitlines()]
    levels = {record["level"] for record in records}
    assert {"INFO", "ERROR"} <= levels
    assert any("log.format" in record["msg"] for record in records if record["level"] == "ERROR")
    assert records[-1]["msg"] == "stopped"
