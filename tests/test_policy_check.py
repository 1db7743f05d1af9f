"""The pure policy check, with fake stat results and a fake name service."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from catalogd.layout import LayoutConfig, classify
from catalogd.policy import EntryFacts, Policy, PolicySettings, UserTypeOverride
from catalogd.policy import rules as R
from catalogd.policy.acl import (
    GROUP,
    GROUP_OBJ,
    MASK,
    OTHER,
    USER,
    USER_OBJ,
    AclEntry,
    Acls,
    encode_acl,
    parse_acl,
)
from catalogd.policy.settings import LevelOverride
from catalogd.violations import Severity

USERS = {0: "root", 100: "bl-service", 200: "alice"}
GROUPS = {0: "root", 10: "bl", 20: "p1-group", 30: "p2-group", 40: "outsiders"}
LAYOUT = LayoutConfig(root="/data")
V = "/data/visitor/bl/p1/20240110a"


class FakeNames:
    def owner(self, uid: int) -> str | None:
        return USERS.get(uid)

    def group(self, gid: int) -> str | None:
        return GROUPS.get(gid)

    def uid_of(self, name: str) -> int | None:
        return {v: k for k, v in USERS.items()}.get(name)

    def gid_of(self, name: str) -> int | None:
        return {v: k for k, v in GROUPS.items()}.get(name)


def st(mode: int, uid: int = 100, gid: int = 20, kind: int = stat.S_IFDIR) -> os.stat_result:
    return os.stat_result((kind | mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))


def policy(settings: PolicySettings | None = None) -> Policy:
    return Policy(settings or PolicySettings(), LAYOUT, FakeNames())


def rules_of(
    path: str, result: os.stat_result, facts: EntryFacts | None = None, pol: Policy | None = None
) -> list[str]:
    found = (pol or policy()).check(classify(path, LAYOUT), result, facts or EntryFacts())
    return sorted(v.rule for v in found)


CLEAN = [
    ("/data", st(0o755, 0, 0)),
    ("/data/visitor", st(0o2755, 0, 0)),
    ("/data/visitor/bl", st(0o2775, 100, 10)),
    ("/data/visitor/bl", st(0o2755, 100, 10)),
    ("/data/visitor/bl/p1", st(0o2750)),
    (V, st(0o2770)),
    (V + "/raw", st(0o2770)),
    (V + "/process", st(0o2770)),
    (V + "/raw/scan", st(0o2770, 200)),
    (V + "/raw/scan/f.h5", st(0o640, 200, kind=stat.S_IFREG)),
    (V + "/raw/f.h5", st(0o660, 200, kind=stat.S_IFREG)),
    # the seed's table holds for proprietary too (issue 13): 2775 or 2755 is clean
    ("/data/proprietary/bl", st(0o2755, 100, 10)),
    ("/data/proprietary/bl", st(0o2775, 100, 10)),
]


@pytest.mark.parametrize(("path", "result"), CLEAN)
def test_clean_entries_have_no_findings(path: str, result: os.stat_result) -> None:
    assert rules_of(path, result) == []


DIRTY = [
    ("/data/visitor", st(0o2755, 100, 0), [R.OWNER]),
    ("/data/visitor/bl", st(0o2777, 100, 20), [R.GROUP, R.MODE]),
    ("/data/visitor/bl/p1", st(0o2755), [R.MODE]),
    ("/data/visitor/bl/p1", st(0o2750, 0, 10), [R.GROUP, R.OWNER]),
    (V, st(0o770), [R.MODE]),
    (V + "/raw", st(0o2770, 999, 999), [R.GROUP, R.OWNER]),
    (V + "/raw/scan", st(0o770), [R.SETGID]),
    (V + "/raw/scan", st(0o2775), [R.OTHER_ACCESS]),
    (V + "/raw/f.h5", st(0o644, kind=stat.S_IFREG), [R.OTHER_ACCESS]),
    (V + "/raw/f.h5", st(0o640, gid=30, kind=stat.S_IFREG), [R.GROUP]),
    ("/data/visitor/bl/p1/2024", st(0o2770), [R.VISIT_DATE]),
    ("/data/visitor/bl/p1/20241399", st(0o2770), [R.VISIT_DATE]),
    ("/data/visitor/bl/README", st(0o644, kind=stat.S_IFREG), [R.UNEXPECTED]),
    (V + "/notes", st(0o2770), [R.UNEXPECTED]),
    (V + "/notes.txt", st(0o664, kind=stat.S_IFREG), [R.OTHER_ACCESS, R.UNEXPECTED]),
    ("/data/guests", st(0o755, 0, 0), [R.UNKNOWN_USER_TYPE]),
    ("/data/notes.txt", st(0o644, 0, 0, kind=stat.S_IFREG), [R.UNEXPECTED]),
    ("/data/proprietary/bl", st(0o2777, 100, 10), [R.MODE]),
    # the seed's modes are the default for proprietary too: a stricter one is configured
    ("/data/proprietary/bl", st(0o2750, 100, 10), [R.MODE]),
]


@pytest.mark.parametrize(("path", "result", "expected"), DIRTY)
def test_violations(path: str, result: os.stat_result, expected: list[str]) -> None:
    assert rules_of(path, result) == sorted(expected)


def test_only_the_top_of_an_unknown_user_type_is_reported() -> None:
    assert rules_of("/data/guests/x/y", st(0o777)) == []
    assert rules_of("/elsewhere/x", st(0o777)) == []


def test_finding_fields() -> None:
    [found] = policy().check(classify(V + "/raw/f.h5", LAYOUT), st(0o644, kind=stat.S_IFREG))
    assert found.rule == R.OTHER_ACCESS
    assert found.severity == "critical"
    assert (found.expected, found.actual) == ("none of 0007", "0644")
    assert (found.user_type, found.beamline, found.proposal, found.visit) == (
        "visitor",
        "bl",
        "p1",
        "20240110a",
    )
    [mode] = policy().check(classify("/data/visitor/bl", LAYOUT), st(0o777, 100, 10))
    assert mode.expected == "2775 or 2755" and mode.actual == "0777"


def test_symlinks() -> None:
    link = st(0o777, 0, 0, kind=stat.S_IFLNK)
    inside = EntryFacts(link_target="../process/x")
    assert rules_of(V + "/raw/l", link, inside) == []
    assert rules_of(V + "/raw/l", link, EntryFacts(link_target="/data/visitor/bl/p1/x")) == []
    for target in ("/etc/passwd", "../../../../p2/secret", "../../../../p1-evil"):
        assert rules_of(V + "/raw/l", link, EntryFacts(link_target=target)) == [R.SYMLINK_ESCAPE]
    # a link where the layout has a directory is unexpected, and checked for escaping
    assert rules_of(V + "/raw", link, inside) == [R.UNEXPECTED]
    assert rules_of("/data/visitor/bl/p1", link, EntryFacts(link_target="/x")) == [
        R.UNEXPECTED,
        R.SYMLINK_ESCAPE,
    ]


def test_unreadable_entries_are_findings() -> None:
    error = PermissionError(13, "Permission denied", V + "/raw/x")
    found = policy().check(classify(V + "/raw/x", LAYOUT), None, EntryFacts(error=error))
    assert [(v.rule, v.actual) for v in found] == [(R.UNREADABLE, "Permission denied")]


def acls(*entries: AclEntry, default: tuple[AclEntry, ...] = ()) -> EntryFacts:
    return EntryFacts(acls=Acls(access=tuple(entries), default=default))


BASE = (
    AclEntry(USER_OBJ, 6, None),
    AclEntry(GROUP_OBJ, 4, None),
    AclEntry(MASK, 4, None),
    AclEntry(OTHER, 0, None),
)


def test_acls() -> None:
    f = st(0o640, kind=stat.S_IFREG)
    path = V + "/raw/f.h5"
    assert rules_of(path, f, acls(*BASE, AclEntry(GROUP, 4, 10))) == []  # the beamline group
    assert rules_of(path, f, acls(*BASE, AclEntry(USER, 4, 100))) == []  # the service user
    assert rules_of(path, f, acls(*BASE, AclEntry(USER, 0, 200))) == []  # grants nothing
    assert rules_of(path, f, acls(*BASE, AclEntry(USER, 4, 200))) == [R.ACL]
    assert rules_of(path, f, acls(*BASE, AclEntry(GROUP, 4, 40))) == [R.ACL]
    d = st(0o2770)
    assert rules_of(V + "/raw/d", d, acls(default=(AclEntry(OTHER, 4, None),))) == [R.ACL]
    # proprietary: not even the beamline group
    prop = "/data/proprietary/bl/p2/20240110a/raw/f.h5"
    assert rules_of(
        prop, st(0o640, gid=30, kind=stat.S_IFREG), acls(*BASE, AclEntry(GROUP, 4, 10))
    ) == [R.ACL]
    [found] = policy().check(classify(path, LAYOUT), f, acls(*BASE, AclEntry(USER, 5, 200)))
    assert found.actual == "user:alice:r-x"


def test_acl_xattr_round_trip() -> None:
    entries = (*BASE, AclEntry(USER, 5, 1234), AclEntry(GROUP, 7, 99))
    assert sorted(parse_acl(encode_acl(entries)), key=repr) == sorted(entries, key=repr)
    with pytest.raises(ValueError):
        parse_acl(b"\x02\x00\x00\x00\x01")
    with pytest.raises(ValueError):
        parse_acl(b"\x03\x00\x00\x00")


def test_settings_overrides_and_severities() -> None:
    settings = PolicySettings(
        user_types={"staff": UserTypeOverride(beamline=LevelOverride(modes=("2775",)))},
        severities={R.SETGID: Severity.CRITICAL},
        disabled_rules=(R.VISIT_DATE,),
    )
    pol = policy(settings)
    assert rules_of("/data/staff/bl", st(0o2755, 100, 10), pol=pol) == [R.MODE]
    assert rules_of("/data/visitor/bl", st(0o2755, 100, 10), pol=pol) == []
    # the override changed only the modes: owner and group still come from the defaults
    assert rules_of("/data/staff/bl", st(0o2775, 0, 10), pol=pol) == [R.OWNER]
    assert rules_of("/data/visitor/bl/p1/x", st(0o2770), pol=pol) == []
    [found] = pol.check(classify(V + "/raw/d", LAYOUT), st(0o770))
    assert found.severity == "critical"
    # the built-in proprietary ACL rule survives a site override of another key
    strict = PolicySettings(user_types={"proprietary": UserTypeOverride(inside_owner="root")})
    assert strict.for_user_type("proprietary").acl_allowed_groups == ("{proposal_group}",)
    assert strict.for_user_type("proprietary").beamline.modes == ("2775", "2755")
    assert strict.for_user_type("proprietary").inside_owner == "root"


POLICY_DOC = Path(__file__).resolve().parent.parent / "docs" / "policy.md"


def doc_examples() -> dict[str, str]:
    """The TOML blocks of docs/policy.md, by the heading they stand under."""
    examples: dict[str, str] = {}
    heading = ""
    lines = iter(POLICY_DOC.read_text("utf-8").splitlines())
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("# ")
        elif line == "```toml":
            block = []
            for inner in lines:
                if inner == "```":
                    break
                block.append(inner)
            examples[heading] = "\n".join(block) + "\n"
    return examples


def test_every_policy_doc_example_is_a_valid_configuration(tmp_path: Path) -> None:
    from catalogd.config import load_settings

    examples = doc_examples()
    assert "A stricter proprietary policy" in examples
    for text in examples.values():
        config = tmp_path / "catalogd.toml"
        config.write_text(text, encoding="utf-8")
        load_settings(config)  # ConfigError names the key when an example is wrong


def test_proprietary_beamline_at_2755_is_clean_by_default_and_flagged_by_the_strict_example(
    tmp_path: Path,
) -> None:
    from catalogd.config import load_settings

    beamline = ("/data/proprietary/bl", st(0o2755, 100, 10))
    assert rules_of(*beamline) == []
    config = tmp_path / "catalogd.toml"
    config.write_text(doc_examples()["A stricter proprietary policy"], encoding="utf-8")
    strict = policy(load_settings(config).policy)
    assert rules_of(*beamline, pol=strict) == [R.MODE]
    assert rules_of("/data/proprietary/bl", st(0o2750, 100, 10), pol=strict) == []
    # from a file, an override of the modes leaves the owner and group checked
    assert rules_of("/data/proprietary/bl", st(0o2750, 0, 40), pol=strict) == [R.OWNER, R.GROUP]
    # the stricter variant is proprietary's only: visitor keeps the seed's table
    assert rules_of("/data/visitor/bl", st(0o2755, 100, 10), pol=strict) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"severities": {"DP999": "error"}},
        {"disabled_rules": ["nope"]},
        {"defaults": {"proposal": {"modes": ["27x0"]}}},
        {"defaults": {"inside_group": "{nope}"}},
        {"unknown": 1},
    ],
)
def test_invalid_settings_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PolicySettings.model_validate(bad)


def test_settings_from_toml_shapes() -> None:
    settings = PolicySettings.model_validate(
        {"user_types": {"staff": {"proposal": {"modes": ["2770"]}, "allow_other_areas": True}}}
    )
    staff = settings.for_user_type("staff")
    assert staff.proposal.modes == ("2770",) and staff.proposal.group == "{proposal_group}"
    assert staff.allow_other_areas and not settings.for_user_type("visitor").allow_other_areas


def test_fix_for() -> None:
    pol = policy()
    fix = pol.fix_for(classify("/data/visitor/bl", LAYOUT), st(0o2777, 0, 20))
    assert fix is not None and (fix.uid, fix.gid, fix.mode) == (100, 10, 0o2775)
    fix = pol.fix_for(classify("/data/visitor/bl", LAYOUT), st(0o755, 100, 10))
    assert fix is not None and fix.mode == 0o2755 and fix.uid is None and fix.gid is None
    fix = pol.fix_for(classify(V + "/raw/d", LAYOUT), st(0o775, 200, 30))
    assert fix is not None and (fix.uid, fix.gid, fix.mode) == (None, 20, 0o2770)
    fix = pol.fix_for(classify(V + "/raw/f", LAYOUT), st(0o666, kind=stat.S_IFREG))
    assert fix is not None and fix.mode == 0o660
    assert pol.fix_for(classify(V + "/raw/f", LAYOUT), st(0o640, kind=stat.S_IFREG)) is None
    # never links, never outside the layout
    assert pol.fix_for(classify(V + "/raw/l", LAYOUT), st(0o777, kind=stat.S_IFLNK)) is None
    assert pol.fix_for(classify("/data/guests", LAYOUT), st(0o777)) is None
    # limited to the rules that found something
    fix = pol.fix_for(classify(V + "/raw/d", LAYOUT), st(0o775, 200, 30), rules=[R.GROUP])
    assert fix is not None and fix.mode is None and fix.gid == 20
    # an expected group that does not exist cannot be set
    fix = pol.fix_for(classify("/data/visitor/bl/p9", LAYOUT), st(0o2750))
    assert fix is not None and fix.gid is None and fix.problems


def test_docs_list_every_rule() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text("utf-8")
    for rule in R.RULES.values():
        assert f"| {rule.id} | {rule.name} | {rule.severity.value} |" in doc
    for key in PolicySettings.model_fields:
        assert f"`{key}`" in doc
