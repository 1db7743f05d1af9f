from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalogd.layout import (
    OTHER_AREA,
    LayoutConfig,
    Level,
    access_groups,
    classify,
    parse_visit_date,
)

SEED = LayoutConfig()


def test_a_raw_file_has_every_layout_field() -> None:
    loc = classify("/data/visitor/biomax/20170251/2017112208/raw/scan_0001.nxs", SEED)
    assert loc.level is Level.INSIDE
    assert (loc.user_type, loc.beamline, loc.proposal, loc.visit) == (
        "visitor",
        "biomax",
        "20170251",
        "2017112208",
    )
    assert loc.visit_date == dt.date(2017, 11, 22)
    assert loc.area == "raw"
    assert loc.inner_path == "raw/scan_0001.nxs"


@pytest.mark.parametrize(
    ("path", "level"),
    [
        ("/data", Level.ROOT),
        ("/data/", Level.ROOT),
        ("/data/staff", Level.USER_TYPE),
        ("/data/staff/balder", Level.BEAMLINE),
        ("/data/staff/balder/20190002", Level.PROPOSAL),
        ("/data/staff/balder/20190002/2019050608", Level.VISIT),
        ("/data/staff/balder/20190002/2019050608/process", Level.AREA),
        ("/data/staff/balder/20190002/2019050608/process/a/b/c.h5", Level.INSIDE),
    ],
)
def test_levels(path: str, level: Level) -> None:
    assert classify(path, SEED).level is level


def test_process_and_other_areas() -> None:
    assert classify("/data/visitor/b/p/20200101/process/x", SEED).area == "process"
    assert classify("/data/visitor/b/p/20200101/snapshots/x", SEED).area == OTHER_AREA
    assert classify("/data/visitor/b/p/20200101/notes.txt", SEED).area == OTHER_AREA


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/srv/elsewhere/file", "not under /data"),
        ("/database/visitor", "not under /data"),
        ("relative/path", "not under /data"),
        ("/data/industry/biomax/p/v", "unknown user type 'industry'"),
    ],
)
def test_paths_outside_the_layout_are_classified_not_raised(path: str, reason: str) -> None:
    loc = classify(path, SEED)
    assert loc.level is Level.OUTSIDE
    assert not loc.in_layout
    assert loc.reason == reason


def test_visit_dates() -> None:
    assert parse_visit_date("2017112208") == dt.date(2017, 11, 22)
    assert parse_visit_date("20171122_beamtime") == dt.date(2017, 11, 22)
    assert parse_visit_date("20171399") is None  # month 13
    assert parse_visit_date("visit-1") is None
    assert classify("/data/visitor/b/p/commissioning", SEED).visit_date is None


def test_configured_levels_user_types_and_templates() -> None:
    site = LayoutConfig(
        root="/gpfs/exp/",
        levels=("beamline", "user_type", "proposal", "visit"),
        user_types=("academic", "industry"),
        proposal_group="p{proposal}",
        beamline_group="bl-{beamline}",
    )
    loc = classify("/gpfs/exp/nanomax/industry/42/20200101/raw/f.h5", site)
    assert (loc.beamline, loc.user_type, loc.proposal) == ("nanomax", "industry", "42")
    assert access_groups(loc, site) == ("p42",)
    assert access_groups(classify("/gpfs/exp/nanomax/industry", site), site) == ("bl-nanomax",)
    with pytest.raises(ValueError, match="levels must name"):
        LayoutConfig(levels=("user_type", "beamline", "proposal"))


def test_access_follows_the_path_not_the_files_group() -> None:
    inside = classify("/data/proprietary/biomax/20189001/2018120308/raw/f.h5", SEED)
    assert access_groups(inside, SEED) == ("20189001-group",)
    beamline_file = classify("/data/visitor/biomax/stray.txt", SEED)
    assert access_groups(beamline_file, SEED, is_dir=False) == ("biomax",)
    type_file = classify("/data/visitor/stray.txt", SEED)
    assert access_groups(type_file, SEED, is_dir=False) == ()
    visit_file = classify("/data/visitor/biomax/20170251/notes.txt", SEED)
    assert access_groups(visit_file, SEED, is_dir=False) == ("20170251-group",)
    assert access_groups(classify("/data/visitor", SEED), SEED) == ()
    assert access_groups(classify("/elsewhere/x", SEED), SEED) == ()


def test_undecodable_names_survive_classification() -> None:
    raw = b"/data/visitor/biomax/20170251/2017112208/raw/scan_\xff.h5"
    loc = classify(os.fsdecode(raw), SEED)
    assert loc.inner_path is not None
    assert os.fsencode(loc.inner_path) == b"raw/scan_\xff.h5"


segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\x00"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))


@given(st.lists(segment, max_size=9))
def test_classify_never_raises_and_round_trips_components(parts: list[str]) -> None:
    path = "/data/" + "/".join(parts)
    loc = classify(path, SEED)
    if loc.in_layout and len(parts) >= 4:
        assert [loc.user_type, loc.beamline, loc.proposal, loc.visit] == parts[:4]
        if len(parts) > 4:
            assert loc.inner_path == "/".join(parts[4:])
