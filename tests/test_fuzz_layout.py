"""Fuzzing the layout parser (catalogd/layout.py): any path, bytes or text, is
classified without raising, and what it says agrees with the path's components.

Paths come as :func:`os.fsdecode` gives them (surrogate escapes for bytes that are not
UTF-8) and as arbitrary text (lone surrogates included), under the data root and
anywhere else, with ``.``, ``..``, repeated and trailing slashes.
"""

from __future__ import annotations

import os
import posixpath

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability import Recorder, count_example

from catalogd.layout import (
    DIRECTORY_LEVELS,
    LayoutConfig,
    Level,
    access_groups,
    classify,
    relative_parts,
)

SEED = LayoutConfig()
OTHER = LayoutConfig(
    root="/srv/beam/",
    levels=("beamline", "user_type", "visit", "proposal"),
    user_types=("visitor", "industry"),
    areas=("raw",),
    proposal_group="g-{beamline}-{proposal}",
)
LAYOUTS = st.sampled_from([SEED, OTHER])

#: Components likely to hit the layout: the real names, dots, odd bytes.
names = st.one_of(
    st.sampled_from(
        ["visitor", "staff", "proprietary", "industry", "id11", "p1", "20240101", "raw",
         "process", ".", "..", "", "data", "srv", "beam"]
    ),
    st.text(st.characters(exclude_characters="/\x00"), min_size=1, max_size=10),
    st.binary(min_size=1, max_size=8).filter(lambda b: b"/" not in b and b"\x00" not in b)
    .map(os.fsdecode),
)  # fmt: skip
prefixes = st.sampled_from(["/data/", "/srv/beam/", "/", "", "data/", "//data//", "/data/../"])


@st.composite
def paths(draw: st.DrawFn) -> str:
    parts: list[str] = draw(st.lists(names, max_size=10))
    seps: list[str] = [draw(st.sampled_from(["/", "//", "/./"])) for _ in parts]
    body = "".join(p + s for p, s in zip(parts, seps, strict=True))
    trim: bool = draw(st.booleans())
    if parts and trim:
        body = body.rstrip("/")
    prefix: str = draw(prefixes)
    return prefix + body


any_text = st.text(max_size=60)  # every code point, lone surrogates included
any_bytes = st.binary(max_size=60).map(os.fsdecode)


#: The recorder is shared by a test's examples on purpose: it counts them.
SHARED = [HealthCheck.function_scoped_fixture]


@settings(max_examples=400, suppress_health_check=SHARED)
@given(path=st.one_of(paths(), any_text, any_bytes), layout=LAYOUTS)
def test_classify_never_raises_and_agrees_with_the_components(
    path: str, layout: LayoutConfig, reliability: Recorder
) -> None:
    count_example(reliability, "layout parser (classify)", "paths as any text or bytes")
    loc = classify(path, layout)
    groups = access_groups(loc, layout, is_dir=False) + access_groups(loc, layout)
    assert all(isinstance(g, str) and g for g in groups)
    assert loc.path == path
    parts = relative_parts(path, layout.root)
    if parts is None:  # not under the root (or relative)
        assert loc.level is Level.OUTSIDE and groups == ()
        return
    if loc.level is Level.OUTSIDE:  # under the root: only an unknown user type
        assert loc.extra and loc.extra[0] not in layout.user_types
        assert groups == ()
        return
    depth = len(parts)
    values = dict(zip(layout.levels, parts, strict=False))
    # Each level's value is set exactly when the path reaches that level.
    for name in ("user_type", "beamline", "proposal", "visit"):
        assert getattr(loc, name) == values.get(name)
    n = len(layout.levels)
    if depth == 0:
        assert loc.level is Level.ROOT
    elif depth <= n:
        assert loc.level is Level(layout.levels[depth - 1])
        assert loc.area is None and loc.inner_path is None
    else:
        assert loc.level is (Level.AREA if depth == n + 1 else Level.INSIDE)
        assert loc.inner_path == "/".join(parts[n:])
        assert loc.area == (parts[n] if parts[n] in layout.areas else "other")
    if loc.visit_date is not None:
        assert loc.visit is not None and loc.visit[:8] == loc.visit_date.strftime("%Y%m%d")
    # A proposal's group only where a proposal (and beamline) is known.
    if groups and loc.proposal is None:
        assert loc.beamline is not None
    if loc.level in DIRECTORY_LEVELS and path == posixpath.normpath(path):
        # A file where a directory belongs takes its directory's groups (a file's path,
        # as events and walks give it, is normalised: no "/." or trailing slash).
        assert access_groups(loc, layout, is_dir=False) == access_groups(
            classify(posixpath.dirname(posixpath.normpath(path)), layout), layout
        )


@given(path=st.one_of(paths(), any_bytes), layout=LAYOUTS)
def test_classification_depends_on_the_normalised_path_only(
    path: str, layout: LayoutConfig
) -> None:
    a, b = classify(path, layout), classify(posixpath.normpath(path), layout)
    assert (a.level, a.user_type, a.beamline, a.proposal, a.visit, a.area, a.inner_path) == (
        b.level, b.user_type, b.beamline, b.proposal, b.visit, b.area, b.inner_path,
    )  # fmt: skip


@given(
    raw=st.binary(min_size=1, max_size=40).filter(
        lambda b: b"\x00" not in b and b"/" not in b and b not in (b".", b"..")
    )
)
def test_undecodable_bytes_survive_in_every_field(raw: bytes) -> None:
    path = os.fsdecode(b"/data/visitor/id11/p1/20240101/raw/" + raw)
    loc = classify(path, SEED)
    assert loc.inner_path is not None and os.fsencode(loc.inner_path) == b"raw/" + raw
