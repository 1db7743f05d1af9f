"""The facility's directory layout: what a path means.

``/data/<user-type>/<beamline>/<proposal>/<visit>/{raw,process}/...`` by default; the
order of the levels, the user types, the areas and the group-name templates come from
configuration (``[layout]``). :func:`classify` is pure: it looks at the path string only,
never at the disk, and classifies paths outside the layout instead of raising.

Paths are ``str`` as :func:`os.fsdecode` gives them, so names that are not valid UTF-8
carry their bytes as surrogate escapes and survive the round trip.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

#: The seed's layout: the levels below the data root, in order.
DEFAULT_LEVELS: tuple[str, ...] = ("user_type", "beamline", "proposal", "visit")
DEFAULT_USER_TYPES: tuple[str, ...] = ("visitor", "staff", "proprietary")
DEFAULT_AREAS: tuple[str, ...] = ("raw", "process")
DEFAULT_PROPOSAL_GROUP = "{proposal}-group"
DEFAULT_BEAMLINE_GROUP = "{beamline}"
DEFAULT_SERVICE_USER = "{beamline}-service"
#: User types whose beamline staff group is *not* a member of the proposal group.
DEFAULT_STRICT_USER_TYPES: tuple[str, ...] = ("proprietary",)

REQUIRED_LEVELS = frozenset(DEFAULT_LEVELS)
_VISIT_DATE = re.compile(r"^(\d{8})")


class Level(StrEnum):
    """How deep in the layout a path sits."""

    OUTSIDE = "outside"  # not under the data root, or not where the layout allows it
    ROOT = "root"
    USER_TYPE = "user_type"
    BEAMLINE = "beamline"
    PROPOSAL = "proposal"
    VISIT = "visit"
    AREA = "area"  # the raw/process (or other) directory of a visit
    INSIDE = "inside"  # anything below an area directory


#: The area of anything inside a visit that is not one of the configured areas.
OTHER_AREA = "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class LayoutConfig:
    """The site's layout; see ``[layout]`` in the configuration reference."""

    root: str = "/data"
    levels: tuple[str, ...] = DEFAULT_LEVELS
    user_types: tuple[str, ...] = DEFAULT_USER_TYPES
    strict_user_types: tuple[str, ...] = DEFAULT_STRICT_USER_TYPES
    areas: tuple[str, ...] = DEFAULT_AREAS
    proposal_group: str = DEFAULT_PROPOSAL_GROUP
    beamline_group: str = DEFAULT_BEAMLINE_GROUP
    service_user: str = DEFAULT_SERVICE_USER

    def __post_init__(self) -> None:
        if sorted(self.levels) != sorted(REQUIRED_LEVELS):
            raise ValueError(
                f"levels must name each of {sorted(REQUIRED_LEVELS)} once, got {list(self.levels)}"
            )
        object.__setattr__(self, "root", normalise_root(self.root))

    @property
    def proposal_depth(self) -> int:
        """How many levels below the root a proposal's directory is."""
        return self.levels.index("proposal") + 1

    def proposal_group_for(self, *, beamline: str, proposal: str) -> str:
        return self.proposal_group.format(beamline=beamline, proposal=proposal)

    def beamline_group_for(self, *, beamline: str) -> str:
        return self.beamline_group.format(beamline=beamline)

    def service_user_for(self, *, beamline: str) -> str:
        return self.service_user.format(beamline=beamline)


def normalise_root(root: str) -> str:
    """An absolute, normalised root without a trailing slash (``/`` stays ``/``)."""
    norm = posixpath.normpath(root)
    return norm if norm == "/" else norm.rstrip("/")


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """What the layout says about one path."""

    path: str
    level: Level
    user_type: str | None = None
    beamline: str | None = None
    proposal: str | None = None
    visit: str | None = None
    visit_date: dt.date | None = None
    #: ``raw``, ``process`` (the configured areas) or ``other``.
    area: str | None = None
    #: The path inside the visit directory ("" for the visit itself), e.g. ``raw/scan_1.nxs``.
    inner_path: str | None = None
    #: Why a path is outside the layout, for ``Level.OUTSIDE``.
    reason: str | None = None
    #: The name of the component that broke the layout (e.g. an unknown user type).
    extra: tuple[str, ...] = field(default=())

    @property
    def in_layout(self) -> bool:
        return self.level is not Level.OUTSIDE

    def fields(self) -> dict[str, str | None]:
        """The layout fields as plain strings, as documents and reports carry them."""
        return {
            "user_type": self.user_type,
            "beamline": self.beamline,
            "proposal": self.proposal,
            "visit": self.visit,
            "visit_date": self.visit_date.isoformat() if self.visit_date else None,
            "area": self.area,
            "inner_path": self.inner_path,
        }


def parse_visit_date(visit: str) -> dt.date | None:
    """The date a visit's name starts with (``YYYYMMDD...``), or None if it does not."""
    match = _VISIT_DATE.match(visit)
    if match is None:
        return None
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def relative_parts(path: str, root: str) -> tuple[str, ...] | None:
    """The components of ``path`` below ``root``; None when it is not below it."""
    norm = posixpath.normpath(path)
    if not norm.startswith("/"):
        return None
    if root == "/":
        rel = norm[1:]
    elif norm == root:
        rel = ""
    elif norm.startswith(root + "/"):
        rel = norm[len(root) + 1 :]
    else:
        return None
    return tuple(part for part in rel.split("/") if part)


def classify(path: str, config: LayoutConfig) -> Location:
    """Classify ``path`` (absolute) against the layout. Pure: touches no disk."""
    parts = relative_parts(path, config.root)
    if parts is None:
        return Location(path=path, level=Level.OUTSIDE, reason=f"not under {config.root}")
    if not parts:
        return Location(path=path, level=Level.ROOT)

    values: dict[str, str] = {}
    for depth, name in enumerate(config.levels):
        if depth >= len(parts):
            break
        values[name] = parts[depth]
    user_type = values.get("user_type")
    if user_type is not None and user_type not in config.user_types:
        return Location(
            path=path,
            level=Level.OUTSIDE,
            reason=f"unknown user type {user_type!r}",
            extra=(user_type,),
        )
    visit = values.get("visit")
    base = Location(
        path=path,
        level=Level.INSIDE,
        user_type=user_type,
        beamline=values.get("beamline"),
        proposal=values.get("proposal"),
        visit=visit,
        visit_date=parse_visit_date(visit) if visit is not None else None,
    )
    n_levels = len(config.levels)
    if len(parts) <= n_levels:
        return replace(base, level=Level(config.levels[len(parts) - 1]))
    inner = parts[n_levels:]
    area = inner[0] if inner[0] in config.areas else OTHER_AREA
    level = Level.AREA if len(inner) == 1 else Level.INSIDE
    return replace(base, level=level, area=area, inner_path="/".join(inner))


#: The levels the layout reserves for directories.
DIRECTORY_LEVELS = frozenset({Level.USER_TYPE, Level.BEAMLINE, Level.PROPOSAL, Level.VISIT})


def access_groups(
    location: Location, config: LayoutConfig, *, is_dir: bool = True
) -> tuple[str, ...]:
    """The groups allowed to see ``location``, from the layout alone.

    A file where the layout expects a directory (``/data/visitor/biomax/stray.txt``)
    takes the groups of the directory that holds it, not the name it would have as a
    proposal or visit.

    The group the policy says an entry must have, never the group it happens to have,
    so a wrongly set group cannot widen access. Membership is transitive and resolved
    from the directory (a beamline staff group nested in a proposal group sees it).
    Entries above a beamline, and entries outside the layout, have no access group:
    only administrators see them.
    """
    if not is_dir and location.level in DIRECTORY_LEVELS:
        return access_groups(classify(posixpath.dirname(location.path), config), config)
    if location.proposal is not None and location.beamline is not None:
        return (config.proposal_group_for(beamline=location.beamline, proposal=location.proposal),)
    if location.beamline is not None:
        return (config.beamline_group_for(beamline=location.beamline),)
    return ()
