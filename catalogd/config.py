"""Settings: one TOML file plus ``CATALOGD_<SECTION>_<KEY>`` environment overrides.

Validated once, in the CLI, then passed explicitly; nothing here reads the environment
at import time. Secrets (``ldap.bind_password``) may be given directly or read from a
file (``ldap.bind_password_file``) and are masked wherever settings are shown.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from catalogd import layout as layout_model
from catalogd.errors import ConfigError
from catalogd.policy.settings import PolicySettings
from catalogd.store import engine as engines
from indexers.settings import IndexerSettings

DEFAULT_CONFIG_PATH = Path("/etc/catalogd/catalogd.toml")
DEFAULT_STORE_URL = "sqlite:////var/lib/catalogd/catalog.db"
ENV_PREFIX = "CATALOGD_"
#: The environment variable naming the configuration file (``--config`` wins over it).
CONFIG_ENV = "CATALOGD_CONFIG"
SECRET_MASK = "**********"
#: An LDAP attribute description: a name (RFC 4512 keystring) or a numeric OID.
_LDAP_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatchSettings(Section):
    """``[watch]``: what to watch."""

    root: str = Field(default="/data", description="The data root: the top of the layout.")
    subtree: str | None = Field(
        default=None,
        description="The part of the data root `catalogd run` watches, reconciles and owns "
        "(None: all of it). Daemons on disjoint subtrees of one data root can share one "
        "catalogue: each deletes only documents below its own subtree.",
    )

    @field_validator("root", "subtree")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return layout_model.normalise_root(value)

    @model_validator(mode="after")
    def _subtree_below_root(self) -> WatchSettings:
        self.watched()
        return self

    def watched(self) -> str:
        """The directory the daemon watches: ``subtree``, else ``root``. Raises
        ValueError for a subtree outside the root."""
        if self.subtree is None:
            return self.root
        if layout_model.relative_parts(self.subtree, self.root) is None:
            raise ValueError(f"subtree {self.subtree} is not inside the data root {self.root}")
        return self.subtree


class StoreSettings(Section):
    """``[store]``: where the catalogue lives."""

    url: str = Field(
        default=DEFAULT_STORE_URL,
        description="sqlite:///ABSOLUTE/PATH.db (embedded) or http(s)://HOST:PORT[,...] "
        "(Elasticsearch, or OpenSearch: see engine).",
    )
    engine: engines.Engine = Field(
        default=engines.DEFAULT_ENGINE,
        description="What an http(s) store.url talks to: elasticsearch or opensearch. "
        "Opening a store on the other engine is an error (exit 78). A URL may say it "
        "itself with ?engine=NAME (which --store URL can use).",
    )
    spool_dir: str | None = Field(
        default=None,
        description="Where writes to Elasticsearch are kept while it cannot be reached "
        "(None: [daemon] state_dir/spool, else /var/lib/catalogd/spool).",
    )

    shards: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Primary shards of the Elasticsearch files index, applied when it is "
        "created and by `catalogd reindex` (1: exact facet counts; see docs/scale.md).",
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        description="Replicas of each Elasticsearch shard, applied when an index is created "
        "and by `catalogd reindex` (None: one wherever there is a second node).",
    )

    def index_options(self) -> dict[str, Any]:
        """The keywords of open_store that shape a new Elasticsearch index."""
        return {"shards": self.shards, "replicas": self.replicas}

    @field_validator("spool_dir")
    @classmethod
    def _absolute_spool(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        for url in value.split(","):
            parts = urlsplit(url.strip())
            if parts.scheme == "sqlite":
                if parts.netloc or not parts.path.startswith("/"):
                    raise ValueError("a SQLite URL is sqlite:///ABSOLUTE/PATH.db")
            elif parts.scheme in ("http", "https"):
                if not parts.hostname:
                    raise ValueError(f"{url!r} names no host")
                engines.url_engine(url)  # ValueError for an unknown parameter or engine
            elif parts.scheme != "memory":
                raise ValueError(f"{url!r}: use sqlite:///ABSOLUTE/PATH.db or http(s)://HOST:PORT")
        return value

    @model_validator(mode="after")
    def _one_engine(self) -> StoreSettings:
        scheme = urlsplit(self.url.split(",")[0].strip()).scheme
        if "engine" not in self.model_fields_set:
            return self
        if scheme not in ("http", "https") and self.engine != engines.DEFAULT_ENGINE:
            raise ValueError(
                f"engine = {self.engine!r} needs an http(s):// store.url, not {self.url!r}"
            )
        named = engines.url_engine(self.url) if scheme in ("http", "https") else None
        if named is not None and named != self.engine:
            raise ValueError(
                f"store.url says engine={named} but store.engine is {self.engine}: "
                "give the engine once"
            )
        return self

    def effective_url(self, option: str | None = None) -> str:
        """The store URL to open: ``option`` (``--store``) or ``url``, naming ``engine``
        unless it names one itself (:func:`catalogd.store.engine.with_engine`)."""
        return engines.with_engine(option or self.url, self.engine)


class LayoutSettings(Section):
    """``[layout]``: how the tree below the root is organised."""

    levels: tuple[str, ...] = layout_model.DEFAULT_LEVELS
    user_types: tuple[str, ...] = layout_model.DEFAULT_USER_TYPES
    strict_user_types: tuple[str, ...] = layout_model.DEFAULT_STRICT_USER_TYPES
    areas: tuple[str, ...] = layout_model.DEFAULT_AREAS
    proposal_group: str = layout_model.DEFAULT_PROPOSAL_GROUP
    beamline_group: str = layout_model.DEFAULT_BEAMLINE_GROUP
    service_user: str = layout_model.DEFAULT_SERVICE_USER

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if sorted(value) != sorted(layout_model.REQUIRED_LEVELS):
            raise ValueError(
                f"must name each of {sorted(layout_model.REQUIRED_LEVELS)} exactly once"
            )
        return value

    @field_validator("proposal_group", "beamline_group", "service_user")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(beamline="b", proposal="p")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"template {value!r} may only use {{beamline}} and {{proposal}}"
            ) from exc
        return value


class LdapSettings(Section):
    """``[ldap]``: the facility's directory, for logins and group membership."""

    url: str | None = None
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    bind_password_file: Path | None = None
    user_base: str | None = None
    group_base: str | None = None
    schema_: Literal["rfc2307", "rfc2307bis", "ad"] = Field(default="rfc2307bis", alias="schema")
    user_attribute: str | None = Field(
        default=None,
        description="The attribute holding the login name (default: uid; sAMAccountName for ad).",
    )
    user_filter: str | None = Field(
        default=None,
        description="Which entries below user_base are users (default: "
        "(objectClass=posixAccount); for ad (&(objectClass=user)(!(objectClass=computer)))).",
    )
    group_filter: str | None = Field(
        default=None,
        description="Which entries below group_base are groups (default: "
        "(objectClass=posixGroup), (objectClass=groupOfNames) or (objectClass=group) "
        "per schema).",
    )
    member_attribute: str | None = Field(
        default=None,
        description="The group attribute naming members (default: memberUid for rfc2307, "
        "member otherwise).",
    )
    group_name_attribute: str = Field(
        default="cn", description="The group attribute holding the group's name."
    )
    max_depth: int = Field(
        default=8, ge=1, le=64, description="Group nesting levels followed (rfc2307bis)."
    )
    cache_ttl_s: float = Field(
        default=60.0, ge=0.0, le=3600.0, description="How long a user's groups are reused."
    )
    bind_cache_ttl_s: float = Field(
        default=0.0,
        ge=0.0,
        le=3600.0,
        description="How long a user's successful password check is reused (0: every "
        "request binds).",
    )
    timeout_s: float = Field(
        default=5.0, gt=0.0, le=300.0, description="Connect and receive timeout per request."
    )
    start_tls: bool = Field(default=False, description="Upgrade ldap:// connections with StartTLS.")
    ca_file: Path | None = Field(
        default=None, description="CA certificates for ldaps:// or StartTLS (default: system's)."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _ldap_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("ldap", "ldaps", "ldapi") or not parts.netloc:
                raise ValueError("must be ldap://HOST[:PORT] or ldaps://HOST[:PORT]")
        return value

    @field_validator("user_attribute", "member_attribute", "group_name_attribute")
    @classmethod
    def _attribute_name(cls, value: str | None) -> str | None:
        if value is not None and not _LDAP_ATTRIBUTE.fullmatch(value):
            raise ValueError(f"{value!r} is not an LDAP attribute name")
        return value

    @field_validator("user_filter", "group_filter")
    @classmethod
    def _parenthesised(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("(") and value.endswith(")")):
            raise ValueError("an LDAP filter is written in parentheses, e.g. (objectClass=user)")
        return value

    @model_validator(mode="after")
    def _read_password_file(self) -> LdapSettings:
        if self.bind_password_file is not None and self.bind_password is None:
            try:
                secret = self.bind_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"bind_password_file: cannot read {self.bind_password_file}: "
                    f"{exc.strerror or exc}"
                ) from exc
            object.__setattr__(self, "bind_password", SecretStr(secret))
        return self


#: JWT signature algorithms with a public verification key: the only kind the API takes,
#: since the keys come from the issuer's published JWKS (a symmetric algorithm would
#: let anyone who can read that JWKS sign tokens).
OIDC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class ApiSettings(Section):
    """``[api]``: the search API."""

    listen: str = "127.0.0.1:8080"
    workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Processes `catalogd serve` runs on the one listen socket (default: "
        "the CPUs this process may use). `catalogd run` serves from one thread.",
    )
    enabled: bool = Field(
        default=False, description="Also serve the API from `catalogd run` (same process)."
    )
    auditor_groups: tuple[str, ...] = ("data-auditors",)
    admin_groups: tuple[str, ...] = ()
    oidc_issuer: str | None = Field(default=None, description="OpenID Connect issuer URL.")
    oidc_audience: str | None = Field(default=None, description="The `aud` tokens must carry.")
    oidc_jwks_url: str | None = Field(
        default=None, description="The issuer's JWKS (default: from its discovery document)."
    )
    oidc_algorithms: tuple[str, ...] = OIDC_ALGORITHMS
    oidc_username_claim: str = "preferred_username"
    oidc_leeway_s: float = Field(default=30.0, ge=0.0, le=600.0)
    oidc_jwks_cache_s: float = Field(default=300.0, gt=0.0)
    oidc_jwks_cooldown_s: float = Field(default=30.0, ge=0.0)
    service_tokens_file: Path | None = None
    login_max_failures: int = Field(default=10, ge=1, le=100_000)
    login_window_s: float = Field(default=300.0, gt=0.0)
    embargo_years: int = Field(default=0, ge=0, le=200)
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="Addresses of reverse proxies whose X-Forwarded-For is believed (the "
        "client address is what failed logins are counted by); empty: none.",
    )
    session_key_file: Path | None = Field(
        default=None,
        description="The key signing the web pages' login cookie, created (0600) when "
        "missing; share it between workers (None: a new key per process).",
    )
    session_max_age_s: float = Field(default=28800.0, gt=0.0, le=30 * 86400.0)

    def effective_workers(self) -> int:
        """``workers``, else the number of CPUs this process may run on."""
        if self.workers is not None:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT")
        return value

    @field_validator("oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http(s) URL")
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = [name for name in value if name not in OIDC_ALGORITHMS]
        if refused or not value:
            raise ValueError(f"choose one or more of {list(OIDC_ALGORITHMS)} (got {refused})")
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> ApiSettings:
        if self.oidc_issuer is not None and not self.oidc_audience:
            raise ValueError("oidc_audience is required when oidc_issuer is set")
        return self


class ScanSettings(Section):
    """``[scan]``: the tree walk."""

    workers: int = Field(
        default=4, ge=1, le=64, description="Processes walking the tree (at most the CPUs)."
    )
    batch_size: int = Field(default=500, ge=1, le=100_000, description="Documents per write.")
    cross_mounts: bool = False


#: Defaults of ``[daemon]``, with their units.
QUIET_PERIOD_S = 2.0
WRITER_TIMEOUT_S = 3600.0
RECONCILE_INTERVAL_S = 86400.0
POLL_INTERVAL_S = 300.0
QUEUE_SIZE = 100_000
EXTRACT_WORKERS = 2
STOP_TIMEOUT_S = 20.0
DAEMON_LISTEN = "127.0.0.1:9180"


class DaemonSettings(Section):
    """``[daemon]``: ``catalogd run``, the watching daemon."""

    source: Literal["auto", "fanotify", "inotify", "poll"] = Field(
        default="auto",
        description="Event source: fanotify when privileged and local, else inotify; "
        "'poll' never trusts events (see poll_only).",
    )
    poll_only: bool = Field(
        default=False,
        description="Rescan every poll_interval_s instead of watching: for GPFS, Lustre, "
        "NFS and CephFS, where inotify and fanotify see only this node's changes.",
    )
    quiet_period_s: float = Field(default=QUIET_PERIOD_S, ge=0.0, le=3600.0)
    writer_timeout_s: float = Field(default=WRITER_TIMEOUT_S, ge=0.0)
    reconcile_at_start: bool = True
    reconcile_interval_s: float = Field(default=RECONCILE_INTERVAL_S, ge=0.0)
    poll_interval_s: float = Field(default=POLL_INTERVAL_S, gt=0.0)
    queue_size: int = Field(default=QUEUE_SIZE, ge=100, le=10_000_000)
    extract_workers: int = Field(default=EXTRACT_WORKERS, ge=1, le=64)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    stop_timeout_s: float = Field(default=STOP_TIMEOUT_S, gt=0.0)
    state_dir: str | None = Field(
        default=None, description="Where the daemon writes status.json (None: nowhere)."
    )
    listen: str = Field(
        default=DAEMON_LISTEN,
        description="HOST:PORT of the daemon's /healthz, /readyz and /metrics ('' disables).",
    )

    @field_validator("state_dir")
    @classmethod
    def _absolute_dir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not host.strip("[]") or not port.isdigit() or int(port) > 65535:
                raise ValueError("must be HOST:PORT, [IPv6]:PORT, or empty to disable")
        return value

    @property
    def polling(self) -> bool:
        """No event source: the tree is rescanned every ``poll_interval_s``."""
        return self.poll_only or self.source == "poll"


class LogSettings(Section):
    """``[log]``: logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """The whole configuration; see the configuration reference in the README."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
    )

    watch: WatchSettings = WatchSettings()
    store: StoreSettings = StoreSettings()
    layout: LayoutSettings = LayoutSettings()
    ldap: LdapSettings = LdapSettings()
    api: ApiSettings = ApiSettings()
    scan: ScanSettings = ScanSettings()
    log: LogSettings = LogSettings()
    policy: PolicySettings = PolicySettings()
    indexers: IndexerSettings = IndexerSettings()
    daemon: DaemonSettings = DaemonSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def layout_config(self) -> layout_model.LayoutConfig:
        """The layout model for the configured root."""
        return layout_model.LayoutConfig(root=self.watch.root, **self.layout.model_dump())

    def layout_for(self, root: str, data_root: str | None = None) -> layout_model.LayoutConfig:
        """The layout for a command working on ``root`` (absolute): ``data_root`` when
        given, else the configured one when ``root`` is at or below ``[watch] root``,
        else ``root`` itself is taken as the data root."""
        configured = self.layout_config()
        if data_root is not None:
            chosen = layout_model.normalise_root(os.path.abspath(data_root))
        elif layout_model.relative_parts(root, configured.root) is not None:
            return configured
        else:
            chosen = root
        watch = self.watch.model_copy(update={"root": chosen})
        return self.model_copy(update={"watch": watch}).layout_config()

    def reading(self, layout: layout_model.LayoutConfig, **update: Any) -> IndexerSettings:
        """``[indexers]`` as catalogd reads the files of ``layout``'s tree: external links
        followed only below the data root (``link_root``, unless set) and, when that is
        the data root, only inside the linking file's own proposal (``link_scope_depth``,
        unless set), so no file's document carries values of another proposal's files."""
        indexers = self.indexers
        root = indexers.link_root or layout.root
        depth = indexers.link_scope_depth
        if depth is None and layout_model.normalise_root(os.path.abspath(root)) == layout.root:
            depth = layout.proposal_depth
        return indexers.model_copy(update={"link_root": root, "link_scope_depth": depth, **update})

    def public_dict(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked, None values left out."""
        data: dict[str, Any] = _drop_none(self.model_dump(mode="json", by_alias=True))
        return data


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def resolve_config_path(explicit: str | None, environ: dict[str, str] | None = None) -> Path | None:
    """The configuration file to read: ``--config``, else $CATALOGD_CONFIG, else the
    default path when it exists, else None (built-in defaults only)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read, merge and validate the configuration; ConfigError names the bad key."""
    if path is not None and not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist or is not a file")

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        loaded = _FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return Settings.model_validate(loaded.model_dump(by_alias=True))


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        env_name = ENV_PREFIX + "_".join(str(p).upper() for p in error["loc"][:2])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message} (environment: {env_name})")
    return "\n".join(lines)
