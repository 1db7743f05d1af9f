"""``[policy]``: the data policy as configuration, with the seed's defaults.

Every level of the layout has an expected owner, group and set of allowed directory
modes, written as the seed writes them (``"2750"``, ``"2775 or 2755"`` as
``["2775", "2755"]``). Entries inside a proposal's visits have no exact mode: their
directories must keep the setgid bit and nothing may carry a bit for others.

Owner and group names are templates. Besides ``{user_type}``, ``{beamline}``,
``{proposal}`` and ``{visit}`` they may use ``{service_user}``, ``{beamline_group}`` and
``{proposal_group}``, which are the layout's own templates (``[layout]``) filled in, so
a site renames its groups in one place.

The defaults (:class:`UserTypePolicy`) are the seed's table, for every user type: a
default never flags a mode the facility's own table allows (a ``proprietary`` beamline
directory at ``2755`` is clean). The one built-in override (:data:`DEFAULT_OVERRIDES`)
is outside the table: ``proprietary`` ACLs may name only the proposal group, since there
the beamline staff group is not part of the proposal group (``[layout]
strict_user_types``). ``[policy.user_types.<name>]`` then changes only the keys it names
for that user type; docs/policy.md shows the stricter proprietary beamline modes
(``2770`` or ``2750``) as such a configuration.

Example::

    [policy]
    disabled_rules = ["DP007"]
    [policy.severities]
    DP004 = "error"
    [policy.user_types.staff.beamline]
    modes = ["2775"]
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalogd.policy.rules import RULES
from catalogd.violations import Severity

_MODE = re.compile(r"^[0-7]{3,4}$")
#: The names a template may use.
TEMPLATE_FIELDS = (
    "user_type",
    "beamline",
    "proposal",
    "visit",
    "service_user",
    "beamline_group",
    "proposal_group",
)


def parse_mode(text: str) -> int:
    """``"2750"`` -> 0o2750. Raises ValueError for anything but 3 or 4 octal digits."""
    if not _MODE.match(text):
        raise ValueError(f"{text!r} is not an octal mode like '2750'")
    return int(text, 8)


def format_mode(mode: int) -> str:
    """0o2750 -> ``"2750"`` (always four digits)."""
    return f"{mode & 0o7777:04o}"


def _check_template(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        value.format(**{name: "x" for name in TEMPLATE_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"template {value!r} may only use {{{'}, {'.join(TEMPLATE_FIELDS)}}}"
        ) from exc
    return value


def _check_modes(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    for mode in value:
        parse_mode(mode)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelPolicy(_Model):
    """What a directory at one level of the layout must look like.

    ``None`` (or an empty ``modes``) leaves that property unchecked.
    """

    owner: str | None = None
    group: str | None = None
    modes: tuple[str, ...] = ()

    _owner = field_validator("owner", "group")(_check_template)
    _modes = field_validator("modes")(_check_modes)


class LevelOverride(_Model):
    """Part of a :class:`LevelPolicy`: only the keys given change."""

    owner: str | None = None
    group: str | None = None
    modes: tuple[str, ...] | None = None

    _owner = field_validator("owner", "group")(_check_template)
    _modes = field_validator("modes")(_check_modes)


_LEVELS = ("user_type", "beamline", "proposal", "visit", "area")


class UserTypePolicy(_Model):
    """The policy for one user type. The defaults are the seed's table."""

    user_type: LevelPolicy = LevelPolicy(owner="root", group="root", modes=("2755",))
    beamline: LevelPolicy = LevelPolicy(
        owner="{service_user}", group="{beamline_group}", modes=("2775", "2755")
    )
    proposal: LevelPolicy = LevelPolicy(
        owner="{service_user}", group="{proposal_group}", modes=("2750",)
    )
    visit: LevelPolicy = LevelPolicy(
        owner="{service_user}", group="{proposal_group}", modes=("2770",)
    )
    #: The raw and process directories (the layout's areas) of a visit.
    area: LevelPolicy = LevelPolicy(
        owner="{service_user}", group="{proposal_group}", modes=("2770",)
    )
    #: Everything below an area (and any other entry inside a visit).
    inside_owner: str | None = Field(
        default=None, description="Owner of entries inside a visit; unchecked when unset."
    )
    inside_group: str | None = "{proposal_group}"
    inside_dir_required_bits: str = Field(
        default="2000", description="Bits every directory inside a visit must have (setgid)."
    )
    inside_forbidden_bits: str = Field(
        default="0007", description="Bits no entry inside a visit may have (any 'o' bit)."
    )
    #: Who named ACL entries (access and default ACLs) may grant access to, from the
    #: proposal level down. Above it, named ACL entries may name the beamline group only.
    acl_allowed_users: tuple[str, ...] = ("{service_user}",)
    acl_allowed_groups: tuple[str, ...] = ("{proposal_group}", "{beamline_group}")
    #: Allow entries in a visit besides the layout's areas (raw, process).
    allow_other_areas: bool = False
    require_visit_date: bool = True

    _templates = field_validator("inside_owner", "inside_group")(_check_template)

    @field_validator("acl_allowed_users", "acl_allowed_groups")
    @classmethod
    def _template_list(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            _check_template(item)
        return value

    @field_validator("inside_dir_required_bits", "inside_forbidden_bits")
    @classmethod
    def _bits(cls, value: str) -> str:
        parse_mode(value)
        return value

    def level(self, name: str) -> LevelPolicy:
        policy: LevelPolicy = getattr(self, name)
        return policy


class UserTypeOverride(_Model):
    """``[policy.user_types.<name>]``: the keys of :class:`UserTypePolicy` to change."""

    user_type: LevelOverride | None = None
    beamline: LevelOverride | None = None
    proposal: LevelOverride | None = None
    visit: LevelOverride | None = None
    area: LevelOverride | None = None
    inside_owner: str | None = None
    inside_group: str | None = None
    inside_dir_required_bits: str | None = None
    inside_forbidden_bits: str | None = None
    acl_allowed_users: tuple[str, ...] | None = None
    acl_allowed_groups: tuple[str, ...] | None = None
    allow_other_areas: bool | None = None
    require_visit_date: bool | None = None

    def apply(self, base: UserTypePolicy) -> UserTypePolicy:
        """``base`` with the keys this override sets replaced (validated again).

        A key is set when it is not None (TOML has no null): the configuration loader
        validates the sections again, which marks every field as set, so
        ``model_fields_set`` cannot tell what the file named."""
        data: dict[str, Any] = base.model_dump()
        for key, value in self.model_dump(exclude_none=True).items():
            if key in _LEVELS:
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return UserTypePolicy.model_validate(data)


#: Built in beyond the seed's table (which has no ACL column): industrial users' data is
#: not visible beyond the proposal group, so a proprietary ACL may not name the beamline
#: group. The table's modes stay the default for every user type (issue 13).
DEFAULT_OVERRIDES: dict[str, UserTypeOverride] = {
    "proprietary": UserTypeOverride(acl_allowed_groups=("{proposal_group}",)),
}


class PolicySettings(_Model):
    """``[policy]``: the data policy. ``PolicySettings()`` is the seed's policy."""

    defaults: UserTypePolicy = UserTypePolicy()
    user_types: dict[str, UserTypeOverride] = Field(
        default_factory=dict,
        description="Per user type changes, applied over the defaults and the built-in "
        "overrides (DEFAULT_OVERRIDES: proprietary is stricter).",
    )
    severities: dict[str, Severity] = Field(
        default_factory=dict, description="Rule id -> severity, to change a rule's severity."
    )
    disabled_rules: tuple[str, ...] = ()
    check_acls: bool = Field(default=True, description="Read POSIX ACLs (an xattr per entry).")

    @model_validator(mode="after")
    def _known_rules(self) -> PolicySettings:
        unknown = (set(self.severities) | set(self.disabled_rules)) - set(RULES)
        if unknown:
            raise ValueError(f"unknown rule ids {sorted(unknown)}; known: {sorted(RULES)}")
        return self

    def for_user_type(self, user_type: str) -> UserTypePolicy:
        """The effective policy of one user type."""
        policy = self.defaults
        for overrides in (DEFAULT_OVERRIDES, self.user_types):
            override = overrides.get(user_type)
            if override is not None:
                policy = override.apply(policy)
        return policy

    def severity(self, rule: str) -> Severity:
        return self.severities.get(rule, RULES[rule].severity)

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled_rules
