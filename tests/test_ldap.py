# ldap3 ships no type hints (typeshed has them as types-ldap3):
# mypy: disable-error-code="import-untyped"
"""The LDAP directory layer (api/ldap.py) against a real slapd, in both layouts.

The session's slapd (tests/slapd_node.py) serves tests/ldap_fixtures.py: users in several
proposals, the beamline staff group nested in the visitor proposal groups but not in the
proprietary one, an auditor, a nesting cycle, a long chain, blank group names, and user
names full of filter metacharacters. Outages are real: slapd is stopped (connection
refused) or suspended (a hung server) while a test asks. The filter construction for
Active Directory, which slapd cannot evaluate, and the cache's clock are tested as pure
logic at the end.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ldap_fixtures as data
import pytest
from hypothesis import given
from hypothesis import strategies as st
from slapd_node import SlapdNode

from api.ldap import GroupCache, LdapDirectory
from api.ldap_query import IN_CHAIN_RULE, Queries, escape, group_name, is_valid_filter
from api.principal import DirectoryUnavailable
from catalogd.config import LdapSettings
from catalogd.errors import ConfigError

LAYOUTS = data.LAYOUTS
#: Names built to match someone else if they reached a filter unescaped.
WILDCARD_NAMES = ("*", "a*", "anna*", "an*a", "*nna", "ann*", "al*ce", "alice*", "*)(uid=*")
INJECTIONS = (
    "alice)(uid=*",
    "*)(|(uid=*",
    "alice)(|(objectClass=*)",
    "\\2a",
    "anna\\2a",
    "alice\x00",
    "uid=alice,ou=people,ou=rfc2307bis,dc=example,dc=org",
)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def directory(slapd: SlapdNode, layout: str, **overrides: object) -> LdapDirectory:
    return LdapDirectory(slapd.settings(layout, **overrides))


# -- authenticate ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_user_logs_in_with_their_password_and_only_with_it(
    slapd: SlapdNode, layout: str
) -> None:
    ldap = directory(slapd, layout)
    for user, password in data.PASSWORDS.items():
        assert ldap.authenticate(user, password), user
        assert not ldap.authenticate(user, password + "x"), user
        assert not ldap.authenticate(user, password.upper()), user
    # another user's password is no key either
    assert not ldap.authenticate("alice", data.PASSWORDS["bob"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_empty_password_is_refused_without_asking_the_directory(
    slapd: SlapdNode, layout: str
) -> None:
    ldap = directory(slapd, layout)
    assert not ldap.authenticate("alice", "")
    with slapd.down():
        # nothing is sent: even with the directory away the answer is a plain "no"
        assert not ldap.authenticate("alice", "")
        assert not ldap.authenticate("", "alice-pw")
        assert not ldap.authenticate("   ", "alice-pw")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unknown_users_do_not_log_in(slapd: SlapdNode, layout: str) -> None:
    ldap = directory(slapd, layout)
    assert not ldap.authenticate("mallory", "anything")
    assert not ldap.authenticate("x" * 5000, "anything")
    assert ldap.groups_of("mallory") == frozenset()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", WILDCARD_NAMES + INJECTIONS)
def test_wildcards_and_filter_syntax_in_a_name_never_log_in_as_someone(
    slapd: SlapdNode, layout: str, name: str
) -> None:
    ldap = directory(slapd, layout)
    for user, password in data.PASSWORDS.items():
        if user != name:
            assert not ldap.authenticate(name, password), (name, user)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_name_with_metacharacters_is_the_literal_user_of_that_name(
    slapd: SlapdNode, layout: str
) -> None:
    ldap = directory(slapd, layout)
    # "a*" is a real user; as a login it means that user, not alice, ann or anna
    assert ldap.authenticate("a*", data.PASSWORDS["a*"])
    assert not ldap.authenticate("a*", data.PASSWORDS["anna"])
    assert ldap.authenticate("o(k)", data.PASSWORDS["o(k)"])
    assert ldap.authenticate("b\\s", data.PASSWORDS["b\\s"])
    assert not ldap.authenticate("b\\5cs", data.PASSWORDS["b\\s"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_dn_given_as_user_name_is_not_bound_to(slapd: SlapdNode, layout: str) -> None:
    ldap = directory(slapd, layout)
    dn = data.user_dn(layout, "alice")
    assert not ldap.authenticate(dn, data.PASSWORDS["alice"])
    assert ldap.groups_of(dn) == frozenset()


# -- effective groups -------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_effective_groups_of_every_user(slapd: SlapdNode, layout: str) -> None:
    ldap = directory(slapd, layout)
    for user in data.PASSWORDS:
        assert ldap.groups_of(user) == data.EXPECTED[layout][user], user


def test_the_beamline_staff_reach_visitor_proposals_but_not_the_proprietary_one(
    slapd: SlapdNode,
) -> None:
    carol = directory(slapd, "rfc2307bis").groups_of("carol")
    assert {"biomax", "20170251-group", "20180042-group"} <= carol
    assert "20190007-group" not in carol


def test_a_nesting_cycle_terminates_with_every_group_on_it(slapd: SlapdNode) -> None:
    assert directory(slapd, "rfc2307bis").groups_of("erin") == {
        "cycle-a",
        "cycle-b",
        "20200012-group",
    }


def test_nesting_is_followed_to_max_depth_only(slapd: SlapdNode) -> None:
    shallow = directory(slapd, "rfc2307bis", max_depth=2)
    assert shallow.groups_of("frank") == {"level-1", "level-2", "level-3"}


def test_blank_and_alias_group_names_are_not_granted(slapd: SlapdNode) -> None:
    grace = directory(slapd, "rfc2307bis").groups_of("grace")
    assert grace == {"g-named", "20220001-group"}  # reached through the nameless group
    assert all(name.strip() for name in grace)
    # staff-alias also carries the cn "20190007-group": only its RDN name counts
    assert directory(slapd, "rfc2307bis").groups_of("henry") == {"staff-alias"}


def test_rfc2307_adds_the_primary_group(slapd: SlapdNode) -> None:
    assert "20170300-group" in directory(slapd, "rfc2307").groups_of("henry")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_metacharacters_in_a_name_do_not_widen_its_groups(slapd: SlapdNode, layout: str) -> None:
    ldap = directory(slapd, layout)
    # unescaped, (memberUid=a*) would match alice's, ann's and anna's groups too
    assert ldap.groups_of("a*") == {"20230001-group"}
    for name in WILDCARD_NAMES + INJECTIONS:
        if name not in data.PASSWORDS:
            assert ldap.groups_of(name) == frozenset(), name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_concurrent_callers_each_get_their_own_answer(slapd: SlapdNode, layout: str) -> None:
    ldap = directory(slapd, layout, cache_ttl_s=0)
    users = list(data.PASSWORDS) * 4

    def ask(user: str) -> tuple[str, frozenset[str], bool]:
        return user, ldap.groups_of(user), ldap.authenticate(user, data.PASSWORDS[user])

    with ThreadPoolExecutor(max_workers=8) as pool:
        for user, groups, logged_in in pool.map(ask, users):
            assert groups == data.EXPECTED[layout][user], user
            assert logged_in, user


# -- cache, outages, recovery ------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_groups_are_served_from_the_cache_within_the_ttl(slapd: SlapdNode, layout: str) -> None:
    clock = Clock()
    ldap = LdapDirectory(slapd.settings(layout, cache_ttl_s=60), clock=clock)
    expected = data.EXPECTED[layout]["carol"]
    assert ldap.groups_of("carol") == expected
    with slapd.down():
        clock.now += 59
        assert ldap.groups_of("carol") == expected  # the directory was not asked
        with pytest.raises(DirectoryUnavailable):
            ldap.groups_of("bob")  # never cached: no answer, and not an empty one


@pytest.mark.parametrize("layout", LAYOUTS)
def test_after_the_ttl_an_outage_fails_closed_and_answers_resume_after(
    slapd: SlapdNode, layout: str
) -> None:
    clock = Clock()
    ldap = LdapDirectory(slapd.settings(layout, cache_ttl_s=60), clock=clock)
    expected = data.EXPECTED[layout]["carol"]
    assert ldap.groups_of("carol") == expected
    with slapd.down():
        clock.now += 61
        for _ in range(2):  # the expired entry is not resurrected by a second try
            with pytest.raises(DirectoryUnavailable, match=slapd.url):
                ldap.groups_of("carol")
        with pytest.raises(DirectoryUnavailable):
            ldap.authenticate("carol", data.PASSWORDS["carol"])
    # slapd is back: the same object answers again, without a restart of its own
    assert ldap.groups_of("carol") == expected
    assert ldap.authenticate("carol", data.PASSWORDS["carol"])


def test_without_a_cache_every_call_asks_the_directory(slapd: SlapdNode) -> None:
    ldap = directory(slapd, "rfc2307bis", cache_ttl_s=0)
    assert ldap.groups_of("alice") == data.EXPECTED["rfc2307bis"]["alice"]
    with slapd.down(), pytest.raises(DirectoryUnavailable):
        ldap.groups_of("alice")


def test_a_hung_directory_times_out_as_unavailable(slapd: SlapdNode) -> None:
    ldap = directory(slapd, "rfc2307bis", timeout_s=1.0, cache_ttl_s=0)
    with slapd.frozen():
        began = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            ldap.groups_of("alice")
        with pytest.raises(DirectoryUnavailable):
            ldap.authenticate("alice", data.PASSWORDS["alice"])
        assert time.monotonic() - began < 10
    assert ldap.groups_of("alice") == data.EXPECTED["rfc2307bis"]["alice"]


def test_a_wrong_service_password_is_an_outage_not_a_wrong_user_password(
    slapd: SlapdNode,
) -> None:
    ldap = directory(slapd, "rfc2307bis", bind_password="not-the-secret")
    with pytest.raises(DirectoryUnavailable, match="service account"):
        ldap.authenticate("alice", data.PASSWORDS["alice"])
    with pytest.raises(DirectoryUnavailable, match="service account"):
        ldap.groups_of("alice")


def test_a_missing_base_is_an_error_not_an_empty_answer(slapd: SlapdNode) -> None:
    ldap = directory(slapd, "rfc2307bis", user_base="ou=nowhere,dc=example,dc=org")
    with pytest.raises(DirectoryUnavailable, match="No such object|noSuchObject"):
        ldap.groups_of("alice")


def test_the_directory_is_not_readable_anonymously(slapd: SlapdNode) -> None:
    """The test directory is as closed as a production one: without the service
    account's bind, nothing is found (so the tests above prove the service bind)."""
    ldap = directory(slapd, "rfc2307bis", bind_dn=None, bind_password=None)
    with pytest.raises(DirectoryUnavailable):
        ldap.authenticate("alice", data.PASSWORDS["alice"])


# -- TLS ------------------------------------------------------------------------------------

#: ldap3 2.9.1 checks the server's name with ssl.match_hostname, deprecated since Python
#: 3.7 (a DeprecationWarning, which this suite turns into an error).
MATCH_HOSTNAME = "ignore:ssl.match_hostname:DeprecationWarning"


@pytest.mark.filterwarnings(MATCH_HOSTNAME)
@pytest.mark.parametrize("how", ["start_tls", "ldaps"])
def test_tls_with_the_sites_ca(slapd: SlapdNode, how: str) -> None:
    tls: dict[str, object] = {"ca_file": slapd.ca_file}
    tls.update({"start_tls": True} if how == "start_tls" else {"url": slapd.ldaps_url})
    ldap = directory(slapd, "rfc2307bis", **tls)
    assert ldap.authenticate("carol", data.PASSWORDS["carol"])
    assert not ldap.authenticate("carol", "wrong")
    assert ldap.groups_of("carol") == data.EXPECTED["rfc2307bis"]["carol"]


@pytest.mark.filterwarnings(MATCH_HOSTNAME)
@pytest.mark.parametrize("how", ["start_tls", "ldaps"])
def test_an_untrusted_certificate_is_an_outage_never_plaintext(slapd: SlapdNode, how: str) -> None:
    tls: dict[str, object] = {"start_tls": True} if how == "start_tls" else {"url": slapd.ldaps_url}
    ldap = directory(slapd, "rfc2307bis", cache_ttl_s=0, **tls)  # the system's CAs only
    with pytest.raises(DirectoryUnavailable, match="certificate verify failed"):
        ldap.authenticate("carol", data.PASSWORDS["carol"])
    with pytest.raises(DirectoryUnavailable, match="certificate verify failed"):
        ldap.groups_of("carol")


# -- configuration ----------------------------------------------------------------------


def test_incomplete_or_invalid_settings_are_configuration_errors(slapd: SlapdNode) -> None:
    with pytest.raises(ConfigError, match="url"):
        LdapDirectory(LdapSettings())
    with pytest.raises(ConfigError, match="ca_file"):
        directory(slapd, "rfc2307bis", ca_file="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="ldap://"):
        slapd.settings("rfc2307bis", url="http://127.0.0.1:389")
    with pytest.raises(ConfigError, match="user_filter"):
        directory(slapd, "rfc2307bis", user_filter="(&(objectClass=posixAccount)")
    with pytest.raises(ValueError, match="attribute"):
        slapd.settings("rfc2307bis", member_attribute="member)(uid=*")
    with pytest.raises(ValueError, match="parentheses"):
        slapd.settings("rfc2307bis", group_filter="objectClass=group")


def test_site_attributes_and_filters_are_used(slapd: SlapdNode) -> None:
    # login by cn instead of uid (the fixtures set cn to the user name too)
    by_cn = directory(slapd, "rfc2307bis", user_attribute="cn")
    assert by_cn.authenticate("alice", data.PASSWORDS["alice"])
    # a group filter that excludes the staff group cuts its nesting too
    narrow = directory(
        slapd, "rfc2307bis", group_filter="(&(objectClass=groupOfNames)(!(cn=biomax)))"
    )
    assert narrow.groups_of("carol") == frozenset()


# -- pure logic: filters, names, cache ----------------------------------------------------


def ad_queries(**overrides: object) -> Queries:
    values: dict[str, object] = {
        "url": "ldaps://dc.example.org",
        "user_base": "OU=People,DC=example,DC=org",
        "group_base": "OU=Groups,DC=example,DC=org",
        "schema": "ad",
    }
    values.update(overrides)
    return Queries.from_settings(LdapSettings.model_validate(values))


def test_ad_resolves_nesting_in_one_in_chain_search() -> None:
    queries = ad_queries()
    dn = "CN=Smith\\, J*(x),OU=People,DC=example,DC=org"
    built = queries.direct_groups(name="jsmith", dn=dn, gid=None)
    assert built == (
        "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:="
        "CN=Smith\\5c, J\\2a\\28x\\29,OU=People,DC=example,DC=org))"
    )
    assert IN_CHAIN_RULE in built
    assert not queries.nested  # the DC follows the nesting, catalogd does not
    assert is_valid_filter(built)


def test_ad_user_lookup_by_samaccountname_excludes_computers() -> None:
    built = ad_queries().user("a*)(cn=*")
    assert built == (
        "(&(&(objectClass=user)(!(objectClass=computer)))(sAMAccountName=a\\2a\\29\\28cn=\\2a))"
    )


def test_rfc2307_filters_escape_the_name_and_take_only_a_numeric_gid() -> None:
    queries = Queries.from_settings(
        LdapSettings(url="ldap://x", user_base="o=x", group_base="o=x", schema="rfc2307")
    )
    assert queries.direct_groups(name="a*", dn="uid=a*,o=x", gid="5300") == (
        "(&(objectClass=posixGroup)(|(memberUid=a\\2a)(gidNumber=5300)))"
    )
    assert queries.direct_groups(name="a*", dn="uid=a*,o=x", gid="*") == (
        "(&(objectClass=posixGroup)(memberUid=a\\2a))"
    )


def test_nesting_queries_escape_the_dns_the_server_sent() -> None:
    queries = Queries.from_settings(
        LdapSettings(url="ldap://x", user_base="o=x", group_base="o=x", schema="rfc2307bis")
    )
    assert queries.groups_containing(["cn=a\\2Cb,o=x", "cn=(c),o=x"]) == (
        "(&(objectClass=groupOfNames)(|(member=cn=a\\5c2Cb,o=x)(member=cn=\\28c\\29,o=x)))"
    )


@given(st.text(max_size=40))
def test_any_name_is_one_literal_assertion_value(name: str) -> None:
    escaped = escape(name)
    assert not any(c in escaped for c in "*()\0")
    # every backslash starts a two-digit hex escape, and decoding them gives the name back
    decoded = re.sub(
        rb"\\([0-9a-fA-F]{2})", lambda m: bytes.fromhex(m[1].decode()), escaped.encode()
    )
    assert decoded == name.encode("utf-8")
    queries = ad_queries()
    assert is_valid_filter(queries.user(name))


def test_group_names_drop_blanks_and_aliases() -> None:
    assert group_name("cn=g,o=x", ["g"], "cn") == "g"
    assert group_name("cn=g,o=x", ["g", " ", ""], "cn") == "g"
    assert group_name("ou=blank,o=x", [" "], "cn") is None
    assert group_name("cn=ops,o=x", ["20190007-group", "ops"], "cn") == "ops"
    assert group_name("cn=a\\2Bb,o=x", ["a+b", "other"], "cn") == "a+b"
    # several names and the RDN names none of them (or is another attribute): no name
    assert group_name("cn=zzz,o=x", ["a", "b"], "cn") is None
    assert group_name("ou=ops,o=x", ["ops", "b"], "cn") is None


def test_the_cache_expires_and_can_be_off() -> None:
    clock = Clock()
    cache = GroupCache(10.0, clock)
    cache.put("alice", frozenset({"g"}))
    clock.now += 9.9
    assert cache.get("alice") == frozenset({"g"})
    clock.now += 0.2
    assert cache.get("alice") is None
    off = GroupCache(0.0, clock)
    off.put("alice", frozenset({"g"}))
    assert off.get("alice") is None


def test_the_cache_is_safe_across_threads() -> None:
    cache = GroupCache(60.0)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                user = f"u{(n * 7 + i) % 50}"
                cache.put(user, frozenset({user}))
                got = cache.get(user)
                assert got is None or got == frozenset({user})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_a_kept_password_check_spares_the_directory_until_it_expires(slapd: SlapdNode) -> None:
    clock = Clock()
    settings = slapd.settings("rfc2307bis", bind_cache_ttl_s=30.0)
    directory = LdapDirectory(settings, clock=clock)
    assert directory.authenticate("alice", "alice-pw")
    with slapd.down():
        assert directory.authenticate("alice", "alice-pw")  # kept: the directory is not asked
        with pytest.raises(DirectoryUnavailable):  # another password is never answered here
            directory.authenticate("alice", "not-alice-pw")
        with pytest.raises(DirectoryUnavailable):  # nor another user
            directory.authenticate("bob", "bob-pw")
        clock.now += 30.1
        with pytest.raises(DirectoryUnavailable):  # expired: asked again
            directory.authenticate("alice", "alice-pw")


def test_a_failed_bind_forgets_the_kept_check_and_off_keeps_none(slapd: SlapdNode) -> None:
    kept = LdapDirectory(slapd.settings("rfc2307bis", bind_cache_ttl_s=30.0), clock=Clock())
    assert kept.authenticate("alice", "alice-pw")
    assert not kept.authenticate("alice", "wrong")
    off = LdapDirectory(slapd.settings("rfc2307bis"), clock=Clock())  # the default: 0
    assert off.authenticate("alice", "alice-pw")
    with slapd.down():
        for directory in (kept, off):
            with pytest.raises(DirectoryUnavailable):
                directory.authenticate("alice", "alice-pw")
