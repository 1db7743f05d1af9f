"""Audits of real trees, built as root with real users and groups.

One violation of every rule is planted, each at its own path; the audit must find
exactly those (and report no clean entry), through the API and through the CLI, and the
mended tree must report nothing and exit 0.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import as_nobody

from catalogd.cli import main
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig
from catalogd.policy import audit_tree, check_path, make_policy
from catalogd.policy import rules as R
from catalogd.policy.acl import (
    ACCESS_XATTR,
    GROUP,
    GROUP_OBJ,
    MASK,
    OTHER,
    USER,
    USER_OBJ,
    AclEntry,
    encode_acl,
)
from catalogd.store import MemoryStore
from catalogd.violations import Violation, ViolationState

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds trees owned by other users")


@dataclass(frozen=True)
class Ids:
    beamline: str  # the beamline name, also its staff group
    service: str
    p1: str  # proposal names; their groups are "<name>-group"
    p2: str
    outsider: str  # a user and a group the policy never allows
    uid: int
    bl_gid: int
    p1_gid: int
    p2_gid: int
    out_uid: int
    out_gid: int


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="module")
def ids() -> Iterator[Ids]:
    tag = "cdt" + secrets.token_hex(3)
    bl, p1, p2, out = f"{tag}bl", f"{tag}p1", f"{tag}p2", f"{tag}out"
    groups = [bl, f"{p1}-group", f"{p2}-group", out]
    users = [f"{bl}-service", out]
    try:
        for group in groups:
            _run("groupadd", group)
        for user, group in zip(users, (bl, out), strict=True):
            _run("useradd", "--no-create-home", "-N", "-g", group, user)
        names = NameCache()
        gid = names.gid_of
        uid = names.uid_of
        yield Ids(
            bl,
            users[0],
            p1,
            p2,
            out,
            uid(users[0]) or 0,
            gid(bl) or 0,
            gid(groups[1]) or 0,
            gid(groups[2]) or 0,
            uid(out) or 0,
            gid(out) or 0,
        )
    finally:
        for user in users:
            subprocess.run(["userdel", user], check=False, capture_output=True)
        for group in groups:
            subprocess.run(["groupdel", group], check=False, capture_output=True)


def mk(path: Path, uid: int, gid: int, mode: int, *, file: bool = False) -> Path:
    if file:
        path.write_bytes(b"data")
    else:
        path.mkdir()
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def set_acl(path: Path, *named: AclEntry) -> None:
    entries = (
        AclEntry(USER_OBJ, 6, None),
        AclEntry(GROUP_OBJ, 4, None),
        *named,
        AclEntry(MASK, 4, None),
        AclEntry(OTHER, 0, None),
    )
    os.setxattr(path, ACCESS_XATTR, encode_acl(entries), follow_symlinks=False)


def build_clean(root: Path, ids: Ids) -> dict[str, Path]:
    """A tree clean under the default policy; returns named places in it."""
    u = ids.uid
    mk(root, 0, 0, 0o755)
    places: dict[str, Path] = {}
    for user_type, p, gid, bl_mode in (
        ("visitor", ids.p1, ids.p1_gid, 0o2775),
        ("proprietary", ids.p2, ids.p2_gid, 0o2755),  # the seed's table holds here too
    ):
        top = mk(root / user_type, 0, 0, 0o2755)
        bl = mk(top / ids.beamline, u, ids.bl_gid, bl_mode)
        prop = mk(bl / p, u, gid, 0o2750)
        visit = mk(prop / "2024011008", u, gid, 0o2770)
        raw = mk(visit / "raw", u, gid, 0o2770)
        mk(visit / "process", u, gid, 0o2770)
        scan = mk(raw / "scan_001", u, gid, 0o2770)
        mk(scan / "frame.h5", u, gid, 0o640, file=True)
        mk(raw / "master.h5", ids.out_uid, gid, 0o660, file=True)  # any owner inside
        (raw / "latest").symlink_to("scan_001/frame.h5")
        places[user_type] = bl
        places[f"{user_type}-proposal"] = prop
        places[f"{user_type}-raw"] = raw
    set_acl(places["visitor-raw"] / "master.h5", AclEntry(GROUP, 4, ids.bl_gid))  # allowed
    return places


def plant(root: Path, ids: Ids, places: dict[str, Path]) -> set[tuple[str, str]]:
    """Plant one violation of every rule; returns the (path, rule) pairs expected."""
    u = ids.uid
    raw = places["visitor-raw"]
    prop = places["visitor-proposal"]
    g = ids.p1_gid
    planted = {
        mk(prop / "2024011209", 0, g, 0o2770): R.OWNER,
        mk(raw / "wrong-group.h5", u, ids.out_gid, 0o640, file=True): R.GROUP,
        mk(prop / "2024011310", u, g, 0o2775): R.MODE,
        mk(raw / "no-setgid", u, g, 0o770): R.SETGID,
        mk(raw / "public.h5", u, g, 0o644, file=True): R.OTHER_ACCESS,
        mk(raw / "acl.h5", u, g, 0o640, file=True): R.ACL,
        mk(prop / "visit-without-date", u, g, 0o2770): R.VISIT_DATE,
        mk(places["visitor"] / "README", u, ids.bl_gid, 0o644, file=True): R.UNEXPECTED,
        mk(root / "guests", 0, 0, 0o755): R.UNKNOWN_USER_TYPE,
        # a beamline directory mode the seed's table does not allow
        places["proprietary"]: R.MODE,
    }
    os.chmod(places["proprietary"], 0o2777)
    # ...and the beamline group may not be named in a proprietary ACL
    set_acl(places["proprietary-raw"] / "scan_001" / "frame.h5", AclEntry(GROUP, 4, ids.bl_gid))
    set_acl(raw / "acl.h5", AclEntry(USER, 4, ids.out_uid))
    expected = {(str(p), rule) for p, rule in planted.items()}
    expected.add((str(places["proprietary-raw"] / "scan_001" / "frame.h5"), R.ACL))
    (raw / "escape").symlink_to("/etc/passwd")
    expected.add((str(raw / "escape"), R.SYMLINK_ESCAPE))
    # the visit's name is no date, and its owner is wrong too: both are reported
    os.chown(prop / "visit-without-date", 0, g)
    expected.add((str(prop / "visit-without-date"), R.OWNER))
    # a name that is not UTF-8, world-readable
    bad = os.fsencode(str(raw)) + b"/bad-\xff-name.h5"
    fd = os.open(bad, os.O_CREAT | os.O_WRONLY, 0o644)
    os.fchown(fd, u, g)
    os.fchmod(fd, 0o644)
    os.close(fd)
    expected.add((os.fsdecode(bad), R.OTHER_ACCESS))
    # entries below an unknown user type are not checked
    mk(root / "guests" / "anything", 0, 0, 0o777)
    return expected


def mend(root: Path, ids: Ids, places: dict[str, Path]) -> None:
    """Mend by hand what --fix does not (ACLs, names, stray entries)."""
    raw = places["visitor-raw"]
    os.removexattr(raw / "acl.h5", ACCESS_XATTR)
    os.removexattr(places["proprietary-raw"] / "scan_001" / "frame.h5", ACCESS_XATTR)
    (raw / "escape").unlink()
    os.rename(
        places["visitor-proposal"] / "visit-without-date", places["visitor-proposal"] / "2024020108"
    )
    (places["visitor"] / "README").unlink()
    shutil.rmtree(root / "guests")


@pytest.fixture
def tree(tmp_path: Path, ids: Ids) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "data"
    return root, build_clean(root, ids)


def layout_for(root: Path) -> LayoutConfig:
    return LayoutConfig(root=str(root))


@pytest.mark.parametrize("processes", [1, 2])
def test_clean_tree_has_no_findings(tree: tuple[Path, dict[str, Path]], processes: int) -> None:
    root, _ = tree
    result = audit_tree(str(root), make_policy(None, layout_for(root)), processes=processes)
    assert result.findings == []
    assert result.entries == 21


@pytest.mark.parametrize("processes", [1, 2])
def test_every_planted_violation_is_found_and_nothing_else(
    tree: tuple[Path, dict[str, Path]], ids: Ids, processes: int
) -> None:
    root, places = tree
    expected = plant(root, ids, places)
    result = audit_tree(str(root), make_policy(None, layout_for(root)), processes=processes)
    assert {(v.path, v.rule) for v in result.findings} == expected
    assert {v.rule for v in result.findings} == set(R.RULES) - {R.UNREADABLE}


def test_findings_from_the_walking_processes_are_those_of_the_walk_in_this_one(
    tree: tuple[Path, dict[str, Path]], ids: Ids
) -> None:
    """The children send their findings back packed as values (walker._reduce_part):
    each must arrive whole, every field in its place, none lost or repeated."""
    root, places = tree
    plant(root, ids, places)
    policy = make_policy(None, layout_for(root))
    alone = audit_tree(str(root), policy, processes=1).findings
    forked = audit_tree(str(root), policy, processes=2).findings
    assert len(alone) > 5
    assert sorted(forked, key=repr) == sorted(alone, key=repr)
    assert {type(v) for v in forked} == {Violation}
    with pytest.raises(AttributeError):  # still frozen
        forked[0].path = "/elsewhere"  # type: ignore[misc]


def test_deep_trees_loops_and_vanishing_entries(
    tree: tuple[Path, dict[str, Path]], ids: Ids
) -> None:
    root, places = tree
    raw = places["visitor-raw"]
    deep = raw
    for _ in range(300):
        deep = mk(deep / "d", ids.uid, ids.p1_gid, 0o2770)
    leak = mk(deep / "leak.h5", ids.uid, ids.p1_gid, 0o604, file=True)
    (raw / "loop").symlink_to("loop")
    (raw / "up").symlink_to("..")
    gone = str(raw / "scan_001")

    def opener(path: str) -> int:
        if path == gone:
            raise FileNotFoundError(2, "No such file or directory", path)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)

    for processes in (1, 2):
        result = audit_tree(
            str(root), make_policy(None, layout_for(root)), opener=opener, processes=processes
        )
        assert [(v.path, v.rule) for v in result.findings] == [(str(leak), R.OTHER_ACCESS)]


def test_unreadable_directories_are_findings(tree: tuple[Path, dict[str, Path]], ids: Ids) -> None:
    root, places = tree
    locked = str(places["visitor-raw"] / "scan_001")

    def opener(path: str) -> int:
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)

    result = audit_tree(str(root), make_policy(None, layout_for(root)), opener=opener, processes=1)
    assert [(v.path, v.rule, v.actual) for v in result.findings] == [
        (locked, R.UNREADABLE, "Permission denied")
    ]


def test_unreadable_tree_as_an_unprivileged_user(public_tmp: Path) -> None:
    root = public_tmp / "data"
    (root / "visitor" / "secret").mkdir(parents=True)
    os.chmod(root, 0o755)
    os.chmod(root / "visitor", 0o755)
    os.chmod(root / "visitor" / "secret", 0o700)
    catalogd = shutil.which("catalogd") or str(Path(sys.executable).with_name("catalogd"))
    done = as_nobody(catalogd, "audit", str(root), "--format", "json", "--workers", "1")
    assert done.returncode == 1, done.stderr
    rules = {(r["path"], r["rule"]) for r in map(json.loads, done.stdout.splitlines())}
    assert (str(root / "visitor" / "secret"), R.UNREADABLE) in rules
    os.chmod(root, 0o700)
    done = as_nobody(catalogd, "audit", str(root))
    assert done.returncode == 2, done.stderr


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


def test_cli_json_csv_html_table_and_mending(
    tree: tuple[Path, dict[str, Path]], ids: Ids, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root, places = tree
    expected = plant(root, ids, places)
    out_json = tmp_path / "report.jsonl"
    assert main(["audit", str(root), "--format", "json", "-o", str(out_json)]) == 1
    records = [json.loads(line) for line in out_json.read_text("utf-8").splitlines()]
    assert {tuple(r) for r in records} >= {
        (
            "path",
            "rule",
            "severity",
            "expected",
            "actual",
            "message",
            "user_type",
            "beamline",
            "proposal",
            "visit",
        )
    }
    shown = {(r["path"], r["rule"]) for r in records}
    assert len(shown) == len(expected)
    [bad] = [r for r in records if "path_b64" in r]
    assert bad["path"].endswith("bad-\\xff-name.h5")
    assert os.fsdecode(__import__("base64").b64decode(bad["path_b64"])) in {p for p, _ in expected}

    out_csv = tmp_path / "report.csv"
    assert main(["audit", str(root), "--format", "csv", "-o", str(out_csv)]) == 1
    with out_csv.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert {(r["path"], r["rule"]) for r in rows} == shown

    out_html = tmp_path / "report.html"
    assert main(["audit", str(root), "--format", "html", "-o", str(out_html)]) == 1
    page = out_html.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script>" in page
    assert f"Beamline {ids.beamline}" in page and f"Proposal {ids.p1}" in page
    assert "http" not in page.split("<script>")[0].replace("http-equiv", "")

    assert main(["audit", str(root), "--format", "table"]) == 1
    table = capfd.readouterr().out
    assert "DP006" in table and "violations" in table

    # --fix alone is a dry run: it prints and changes nothing
    assert main(["audit", str(root), "--format", "json", "--fix"]) == 1
    captured = capfd.readouterr()
    assert "would chown" in captured.err and "would" in captured.err
    assert len(captured.out.splitlines()) == len(expected)
    # --max-actions refuses to act when more would be needed
    assert main(["audit", str(root), "--fix", "--apply", "--max-actions", "1"]) == 1
    assert "nothing was changed" in capfd.readouterr().err
    assert main(["audit", str(root), "--format", "json", "--no-store"]) == 1
    assert len(capfd.readouterr().out.splitlines()) == len(expected)

    # --fix --apply mends owners, groups and modes; the rest is left to people
    assert main(["audit", str(root), "--format", "json", "--fix", "--apply"]) == 1
    left = {(r["path"], r["rule"]) for r in map(json.loads, capfd.readouterr().out.splitlines())}
    fixable = {
        (p, r) for p, r in expected if r in {R.OWNER, R.GROUP, R.MODE, R.SETGID, R.OTHER_ACCESS}
    }
    assert left == {(display(p), r) for p, r in expected - fixable}
    assert os.stat(places["proprietary"]).st_mode & 0o7777 == 0o2775
    mend(root, ids, places)
    assert main(["audit", str(root), "--format", "json"]) == 0
    assert capfd.readouterr().out == ""


def display(path: str) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def test_usage_errors(tmp_path: Path) -> None:
    assert main(["audit", str(tmp_path / "missing")]) == 2
    assert main(["audit", str(tmp_path), "--apply"]) == 2
    assert main(["audit", str(tmp_path), "--format", "xml"]) == 2


def test_findings_are_recorded_with_history(tree: tuple[Path, dict[str, Path]], ids: Ids) -> None:
    root, places = tree
    expected = plant(root, ids, places)
    policy = make_policy(None, layout_for(root))
    store = MemoryStore()
    first = audit_tree(str(root), policy)
    store.record_audit(first.findings, scope=str(root), seen_at=1000.0)
    assert {v.key for v in store.violations()} == expected
    os.chmod(places["visitor-raw"] / "public.h5", 0o640)
    second = audit_tree(str(root), policy)
    store.record_audit(second.findings, scope=str(root), seen_at=2000.0)
    [resolved] = store.violations(state=ViolationState.RESOLVED)
    assert (resolved.path, resolved.rule, resolved.resolved_at) == (
        str(places["visitor-raw"] / "public.h5"),
        R.OTHER_ACCESS,
        2000.0,
    )
    still = store.violations()
    assert len(still) == len(expected) - 1
    assert all(v.first_seen == 1000.0 and v.last_seen == 2000.0 for v in still)


def test_check_path_for_the_daemon(tree: tuple[Path, dict[str, Path]], ids: Ids) -> None:
    root, places = tree
    policy = make_policy(None, layout_for(root))
    target = places["visitor-raw"] / "scan_001" / "frame.h5"
    assert check_path(str(target), policy) == []
    os.chmod(target, 0o604)
    assert [v.rule for v in check_path(str(target), policy)] == [R.OTHER_ACCESS]
    assert check_path(str(root / "gone"), policy) == []


def test_cli_records_in_a_store_and_lists_history(
    tree: tuple[Path, dict[str, Path]], ids: Ids, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("catalogd.store.sqlite")
    root, places = tree
    expected = plant(root, ids, places)
    url = f"sqlite://{tmp_path}/catalog.db"  # sqlite:///ABSOLUTE/PATH
    assert main(["audit", str(root), "--format", "json", "--store", url]) == 1
    capfd.readouterr()
    os.chmod(places["visitor-raw"] / "public.h5", 0o640)
    assert main(["audit", str(root), "--format", "json", "--store", url]) == 1
    capfd.readouterr()
    assert main(["violations", "--store", url, "--format", "json"]) == 0
    open_now = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert len(open_now) == len(expected) - 1
    assert all(r["first_seen"] and r["resolved_at"] is None for r in open_now)
    assert main(["violations", "--resolved", "--store", url, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capfd.readouterr().out)))
    assert [(r["rule"], bool(r["resolved_at"])) for r in rows] == [(R.OTHER_ACCESS, True)]


def test_fix_never_acts_on_an_entry_swapped_since_the_audit(
    tree: tuple[Path, dict[str, Path]], ids: Ids, tmp_path: Path
) -> None:
    from catalogd.policy.remedy import apply, plan

    root, places = tree
    raw = places["visitor-raw"]
    public = mk(raw / "public.h5", ids.uid, ids.p1_gid, 0o644, file=True)
    swapped = mk(raw / "swapped.h5", ids.uid, ids.p1_gid, 0o644, file=True)
    policy = make_policy(None, layout_for(root))
    result = audit_tree(str(root), policy, plan_fixes=True)
    actions = plan(result.fixes, policy.names)
    assert [a.path for a in actions] == [str(public), str(swapped)]
    # between the audit and the fix, one file is replaced by a link to a file elsewhere
    outside = mk(tmp_path / "outside.h5", 0, 0, 0o644, file=True)
    swapped.unlink()
    swapped.symlink_to(outside)
    report = apply(actions)
    assert [a.path for a in report.applied] == [str(public)]
    assert len(report.skipped) + len(report.failed) == 1
    assert os.stat(public).st_mode & 0o777 == 0o640
    assert os.lstat(outside).st_mode & 0o777 == 0o644
