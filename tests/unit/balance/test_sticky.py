"""Sticky sessions: signed cookies, learnt app sessions, cookie parsing (balance.sticky)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.balance.sticky import (
    LearnedSessions,
    StickyCookie,
    cookie_values,
    derive_key,
    request_cookie,
    set_cookie_pair,
)

SERVERS = ["http://10.0.0.5:8080", "http://10.0.0.6:8080", "http://10.0.0.7:8080"]
KEY = b"a secret shared by every node"


def sticky(servers: list[str] | None = None, key: bytes = KEY) -> StickyCookie:
    return StickyCookie("BASTION_AFFINITY", key, servers or SERVERS)


def cookie_of(set_cookie: bytes) -> bytes:
    """What a browser sends back for a Set-Cookie."""
    return set_cookie.split(b";")[0]


def test_round_trip_for_every_server() -> None:
    jar = sticky()
    for index in range(len(SERVERS)):
        header = jar.set_cookie(index, secure=False)
        assert jar.pinned([cookie_of(header)]) == index
        assert jar.pinned([b"lang=en; " + cookie_of(header) + b"; theme=dark"]) == index


def test_set_cookie_attributes_and_secure_behind_tls() -> None:
    jar = sticky()
    token = jar.token(1)
    assert jar.set_cookie(1, secure=False) == (
        b"BASTION_AFFINITY=" + token + b"; Path=/; HttpOnly; SameSite=Lax"
    )
    assert jar.set_cookie(1, secure=True).endswith(b"; SameSite=Lax; Secure")


def test_token_is_opaque_16_bytes_base64url() -> None:
    token = sticky().token(0)
    assert len(token) == 22 and b"10.0.0.5" not in token
    assert len(base64.urlsafe_b64decode(token + b"==")) == 16


def test_same_key_and_servers_give_the_same_tokens_in_another_instance() -> None:
    one, two = sticky(), sticky()
    assert [one.token(i) for i in range(3)] == [two.token(i) for i in range(3)]
    assert two.pinned([cookie_of(one.set_cookie(2, secure=True))]) == 2


def test_tokens_depend_on_the_key() -> None:
    assert sticky().token(0) != sticky(key=b"another key").token(0)
    pin = cookie_of(sticky().set_cookie(0, secure=False))
    assert sticky(key=b"another key").pinned([pin]) is None


def test_adding_a_server_keeps_existing_pins() -> None:
    header = cookie_of(sticky().set_cookie(1, secure=False))
    grown = sticky(["http://10.0.0.4:8080", *SERVERS])
    assert grown.pinned([header]) == 2  # same server, new position


@pytest.mark.parametrize(
    "cookie",
    [
        b"",
        b"BASTION_AFFINITY=",
        b"BASTION_AFFINITY=garbage",
        b"BASTION_AFFINITY=AAAAAAAAAAAAAAAAAAAAAA",
        b"bastion_affinity=%s",  # names are case-sensitive
        b"OTHER=%s",
        b"BASTION_AFFINITY=%s=",
        b"BASTION_AFFINITY=\xff\xfe",
    ],
)
def test_forged_or_garbled_cookie_is_none(cookie: bytes) -> None:
    jar = sticky()
    if b"%s" in cookie:
        cookie = cookie.replace(b"%s", jar.token(0))
    assert jar.pinned([cookie]) is None


def test_a_tampered_token_is_none() -> None:
    jar = sticky()
    token = bytearray(jar.token(0))
    token[5] = ord("A") if token[5] != ord("A") else ord("B")
    assert jar.pinned([b"BASTION_AFFINITY=" + bytes(token)]) is None


def test_cookie_split_over_http2_crumbs_and_an_unknown_first_value() -> None:
    jar = sticky()
    crumbs = [b"a=1", b"BASTION_AFFINITY=stale", b"BASTION_AFFINITY=" + jar.token(2)]
    assert jar.pinned(crumbs) == 2


def test_repin_only_when_the_request_went_elsewhere() -> None:
    jar = sticky()
    assert jar.repin(1, 1, secure=False) is None
    assert jar.repin(None, 0, secure=True) == jar.set_cookie(0, secure=True)
    assert jar.repin(1, 2, secure=False) == jar.set_cookie(2, secure=False)


def test_default_key_is_stable_and_order_independent() -> None:
    assert derive_key("app", SERVERS) == derive_key("app", list(reversed(SERVERS)))
    assert derive_key("app", SERVERS) != derive_key("api", SERVERS)
    assert derive_key("app", SERVERS) != derive_key("app", SERVERS[:2])


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", "é"])
def test_invalid_cookie_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        StickyCookie(name, KEY, SERVERS)
    with pytest.raises(ValueError):
        LearnedSessions(name)


def test_cookie_header_parsing_is_tolerant() -> None:
    header = b"  a=1;b = 2 ;;novalue; b=3;\tc=x=y ; =empty"
    assert list(cookie_values(header, b"b")) == [b"2", b"3"]
    assert list(cookie_values(header, b"c")) == [b"x=y"]
    assert list(cookie_values(header, b"novalue")) == []
    assert request_cookie([b"x=1", header], b"a") == b"1"
    assert request_cookie([], b"a") is None


@pytest.mark.parametrize(
    ("header", "pair"),
    [
        (b"JSESSIONID=abc123; Path=/; HttpOnly", (b"JSESSIONID", b"abc123")),
        (b" JSESSIONID = abc ;Secure", (b"JSESSIONID", b"abc")),
        (b"id=a=b", (b"id", b"a=b")),
        (b"id=", (b"id", b"")),
        (b"noequals; Path=/", None),
        (b"=value", None),
        (b"", None),
    ],
)
def test_set_cookie_pair(header: bytes, pair: tuple[bytes, bytes] | None) -> None:
    assert set_cookie_pair(header) == pair


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=20))
def test_parsers_never_crash_on_junk(junk: bytes, name: bytes) -> None:
    for value in cookie_values(junk, name):
        assert b";" not in value
    pair = set_cookie_pair(junk)
    assert pair is None or (pair[0] and b";" not in pair[0] + pair[1])
    assert sticky().pinned([junk]) is None


@given(st.lists(st.binary(max_size=60), max_size=4), st.integers(0, 2))
def test_a_real_pin_is_found_among_any_other_cookies(others: list[bytes], index: int) -> None:
    jar = sticky()
    junk = [other.replace(b"BASTION_AFFINITY", b"X") for other in others]
    assert jar.pinned([*junk, cookie_of(jar.set_cookie(index, secure=False))]) == index


def test_learn_maps_the_apps_session_to_the_server_that_set_it() -> None:
    table = LearnedSessions("JSESSIONID")
    assert table.learn([b"lang=en", b"JSESSIONID=s1; Path=/; HttpOnly"], 2, now=0.0)
    assert not table.learn([b"other=1"], 1, now=0.0)
    assert table.pinned([b"lang=en; JSESSIONID=s1"], now=1.0) == 2
    assert table.pinned([b"JSESSIONID=unknown"], now=1.0) is None
    assert table.pinned([], now=1.0) is None
    assert table.session([b"JSESSIONID=s1"]) == b"s1"


def test_learn_ttl_is_idle_time_and_refreshed_by_requests() -> None:
    table = LearnedSessions("JSESSIONID", ttl=60.0)
    table.learn([b"JSESSIONID=s1"], 0, now=0.0)
    assert table.lookup(b"s1", 50.0) == 0  # refreshed until 110
    assert table.lookup(b"s1", 100.0) == 0  # refreshed until 160
    assert table.lookup(b"s1", 160.0) is None
    assert len(table) == 0


def test_learn_table_evicts_the_least_recently_used() -> None:
    table = LearnedSessions("SID", max_entries=3, ttl=1000.0)
    for i, value in enumerate([b"a", b"b", b"c"]):
        table.remember(value, i, now=float(i))
    assert table.lookup(b"a", 3.0) == 0  # a is now the most recent
    table.remember(b"d", 1, now=4.0)
    assert len(table) == 3
    assert table.lookup(b"b", 5.0) is None
    assert [table.lookup(v, 5.0) for v in (b"a", b"c", b"d")] == [0, 2, 1]


def test_learn_table_drops_expired_entries_when_adding() -> None:
    table = LearnedSessions("SID", max_entries=10, ttl=10.0)
    table.remember(b"old1", 0, now=0.0)
    table.remember(b"old2", 0, now=1.0)
    table.remember(b"new", 1, now=20.0)
    assert len(table) == 1


def test_learn_ignores_empty_and_oversized_values() -> None:
    table = LearnedSessions("SID")
    assert not table.learn([b"SID=; Max-Age=0", b"SID=" + b"x" * 300], 0, now=0.0)
    assert len(table) == 0


def test_repin_moves_only_known_sessions() -> None:
    table = LearnedSessions("SID")
    table.learn([b"SID=s1"], 0, now=0.0)
    assert table.repin([b"SID=s1"], 2, now=1.0)
    assert table.pinned([b"SID=s1"], now=2.0) == 2
    assert not table.repin([b"SID=s1"], 2, now=3.0)  # already there
    assert not table.repin([b"SID=made-up"], 1, now=3.0)  # clients cannot fill the table
    assert not table.repin([], 1, now=3.0)
    assert len(table) == 1
