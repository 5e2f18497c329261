"""Balancing over real sockets: how requests spread over an upstream's servers, backup servers,
and sticky sessions (signed cookie, learned session cookie) with a browser-like cookie jar.

Every origin names itself in its answers, so a test counts who served what. Deterministic
algorithms (round robin, hash) are checked exactly or per key; random ones within a stated
tolerance, wide enough that a correct balancer fails far less than once in 10^4 runs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.certs import TestPKI
from tests.support.pool import (
    HealthLog,
    client,
    origin_pool,
    pool_config,
    served_by,
    server_entry,
    tally,
)
from tests.support.proxy import running_proxy

COOKIE = "BASTION_AFFINITY"
STICKY = f'sticky = {{ cookie = "{COOKIE}", secret = "0123456789abcdef0123456789abcdef" }}'
CHECKS = 'health = { path = "/healthz", interval = "50ms", timeout = "200ms", rise = 1, fall = 1 }'


def cookie_attributes(set_cookie: str) -> tuple[str, str, set[str]]:
    """Name, value and attribute names (lowercase, with values for Path/SameSite)."""
    pair, *attributes = (part.strip() for part in set_cookie.split(";"))
    name, _, value = pair.partition("=")
    return name, value, {attribute.lower() for attribute in attributes}


def affinity(response: httpx.Response) -> list[str]:
    """The sticky Set-Cookie header values of a response."""
    values = response.headers.get_list("set-cookie")
    return [value for value in values if value.startswith(f"{COOKIE}=")]


# -- algorithms ------------------------------------------------------------------------------


async def test_round_robin_follows_weights_3_to_1_smoothly() -> None:
    async with origin_pool("a", "b") as (a, b):
        config = pool_config([server_entry(a, weight=3), server_entry(b)])
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:
            first = [served_by(await http.get("/")) for _ in range(8)]
            counts = await tally(http, 200)
    assert first == ["a", "a", "b", "a"] * 2  # nginx's smooth order: b between a's turns
    assert abs(counts["a"] - 150) <= 2 and abs(counts["b"] - 50) <= 2, counts


@pytest.mark.parametrize("balance", ["least_conn", "random_two", "ewma"])
async def test_slow_server_gets_fewer_of_concurrent_requests(balance: str) -> None:
    """40 requests 10 ms apart; `slow` holds each for 150 ms. Round robin would give it 13;
    a load- or latency-aware balancer at most 8 (typically 2-4)."""
    async with origin_pool("slow", "fast1", "fast2") as origins:
        origins[0].delay = 0.15
        config = pool_config(origins, f'balance = "{balance}"')
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:

            async def one(index: int) -> str:
                await asyncio.sleep(index * 0.01)
                response = await http.get(f"/?i={index}")
                assert response.status_code == 200
                return served_by(response)

            counts = Counter(await asyncio.gather(*(one(i) for i in range(40))))
    assert counts["slow"] <= 8, counts
    assert counts["fast1"] + counts["fast2"] >= 32


async def test_ewma_prefers_the_fast_server_one_request_at_a_time() -> None:
    """Sequential requests never overlap, so only latency tells the two apart (least_conn would
    split them evenly): the 30 ms server gets at most 10% of 60."""
    async with origin_pool("slow", "fast") as (slow, fast):
        slow.delay = 0.03
        config = pool_config([slow, fast], 'balance = "ewma"')
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:
            counts = await tally(http, 60)
    assert counts["slow"] <= 6, counts


async def test_random_two_spreads_equal_servers_evenly() -> None:
    """150 sequential requests over 3 idle servers: 50 each expected, sd 5.8; +-25 allowed."""
    async with origin_pool("a", "b", "c") as origins:
        config = pool_config(origins, 'balance = "random_two"')
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:
            counts = await tally(http, 150)
    assert set(counts) == {"a", "b", "c"}
    assert all(25 <= count <= 75 for count in counts.values()), counts


HASH_KEYS: dict[str, Callable[[str], tuple[str, dict[str, str]]]] = {
    "uri": lambda key: (f"/item/{key}", {}),
    "header:X-User": lambda key: ("/", {"X-USER": key}),
    "cookie:uid": lambda key: ("/", {"cookie": f"theme=dark; uid={key}"}),
}


@pytest.mark.parametrize("hash_key", list(HASH_KEYS))
async def test_hash_sends_a_key_to_one_server_and_spreads_keys(hash_key: str) -> None:
    """90 keys, each sent twice: every key stays on one server, and each of the 3 servers
    owns at least 12 keys (30 expected)."""
    request = HASH_KEYS[hash_key]
    async with origin_pool("a", "b", "c") as origins:
        config = pool_config(origins, f'balance = "hash"\nhash_key = "{hash_key}"')
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:
            owners: dict[str, set[str]] = {}
            for _ in range(2):
                for number in range(90):
                    key = f"user{number}"
                    path, headers = request(key)
                    response = await http.get(path, headers=headers)
                    owners.setdefault(key, set()).add(served_by(response))
    assert all(len(servers) == 1 for servers in owners.values()), owners
    spread = Counter(next(iter(servers)) for servers in owners.values())
    assert set(spread) == {"a", "b", "c"} and min(spread.values()) >= 12, spread


async def test_hash_on_client_ip() -> None:
    """45 clients from 127.0.0.2..46: each stays on one server; each server gets ≥ 5."""
    async with origin_pool("a", "b", "c") as origins:
        config = pool_config(origins, 'balance = "hash"\nhash_key = "ip"')
        async with running_proxy(config) as proxy:
            owners: dict[str, Counter[str]] = {}
            for host in range(2, 47):
                address = f"127.0.0.{host}"
                async with client(proxy.ports[0], local_address=address) as http:
                    owners[address] = await tally(http, 3)
    assert all(len(counts) == 1 for counts in owners.values()), owners
    spread = Counter(next(iter(counts)) for counts in owners.values())
    assert set(spread) == {"a", "b", "c"} and min(spread.values()) >= 5, spread


async def test_hash_without_the_key_is_round_robin() -> None:
    async with origin_pool("a", "b", "c") as origins:
        config = pool_config(origins, 'balance = "hash"\nhash_key = "header:X-User"')
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:
            counts = await tally(http, 30)
    assert counts == {"a": 10, "b": 10, "c": 10}


async def test_hash_moves_only_the_keys_of_a_down_server_and_gives_them_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = HealthLog(caplog)
    keys = [f"k{number}" for number in range(60)]
    async with origin_pool("a", "b", "c") as origins:
        a = origins[0]
        config = pool_config(origins, f'balance = "hash"\nhash_key = "uri"\n{CHECKS}')
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:

            async def owners() -> dict[str, str]:
                return {key: served_by(await http.get(f"/item/{key}")) for key in keys}

            before = await owners()
            a.set_health(503)
            await events.wait(a, "down")
            during = await owners()
            a.set_health(200)
            await events.wait(a, "up")
            after = await owners()
    moved = {key for key in keys if during[key] != before[key]}
    assert moved and moved == {key for key in keys if before[key] == "a"}
    assert after == before


# -- backup servers ----------------------------------------------------------------------------


async def test_backup_idle_while_primaries_are_merely_busy() -> None:
    """Primaries at max_conns = 1 with 100 ms answers, 8 requests at once: they queue for the
    primaries; the backup gets none."""
    async with origin_pool("a", "b", "backup") as (a, b, backup):
        servers = [server_entry(a, max_conns=1), server_entry(b, max_conns=1)]
        config = pool_config([*servers, server_entry(backup, backup=True)])
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:
            responses = await asyncio.gather(*(http.get(f"/?delay=0.1&i={i}") for i in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert {served_by(r) for r in responses} == {"a", "b"}
    assert backup.hits == 0


async def test_backup_takes_over_when_health_checks_take_every_primary_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = HealthLog(caplog)
    async with origin_pool("a", "b", "backup") as (a, b, backup):
        config = pool_config([a, b, server_entry(backup, backup=True)], CHECKS)
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:
            assert set(await tally(http, 10)) == {"a", "b"}
            a.set_health(503)
            await events.wait(a, "down")
            assert set(await tally(http, 10)) == {"b"}  # one primary left: no backup yet
            b.set_health(503)
            await events.wait(b, "down")
            assert await tally(http, 10) == {"backup": 10}
            a.set_health(200)
            await events.wait(a, "up")
            assert await tally(http, 10) == {"a": 10}


async def test_backup_takes_over_when_every_primary_refuses_connections() -> None:
    """No health checks: the primaries' processes are gone. Connections are refused, the
    requests are retried, and every client request is answered by the backup (a short queue
    timeout only keeps a failure quick)."""
    async with origin_pool("a", "b", "backup") as (a, b, backup):
        upstream = 'retries = 2\nqueue = { timeout = "300ms" }'
        config = pool_config([a, b, server_entry(backup, backup=True)], upstream)
        async with running_proxy(config) as proxy, client(proxy.ports[0]) as http:
            await a.stop()
            await b.stop()
            statuses = [(await http.get("/", timeout=2.0)).status_code for _ in range(10)]
    assert statuses == [200] * 10
    assert backup.hits == 10


# -- sticky sessions: bastion's signed cookie ------------------------------------------------


async def test_sticky_cookie_pins_a_browser_to_one_server() -> None:
    async with origin_pool("a", "b", "c") as origins:
        async with running_proxy(pool_config(origins, STICKY)) as proxy:
            async with client(proxy.ports[0]) as http:
                first = await http.get("/")
                [set_cookie] = affinity(first)
                later = [await http.get(f"/?i={i}") for i in range(30)]
            async with client(proxy.ports[0]) as other:
                assert served_by(await other.get("/")) != served_by(first)  # no pin: balanced
    name, value, attributes = cookie_attributes(set_cookie)
    assert name == COOKIE and len(value) >= 16
    assert {"path=/", "httponly", "samesite=lax"} <= attributes
    assert "secure" not in attributes  # plain HTTP
    assert {served_by(response) for response in later} == {served_by(first)}
    assert not any(affinity(response) for response in later)  # pin right: no new cookie


async def test_sticky_cookie_repins_when_the_server_dies() -> None:
    async with origin_pool("a", "b", "c") as origins:
        by_name = {origin.name: origin for origin in origins}
        async with running_proxy(pool_config(origins, STICKY)) as proxy:
            async with client(proxy.ports[0]) as http:
                pinned = served_by(await http.get("/"))
                await by_name[pinned].stop()
                moved = await http.get("/")
                assert moved.status_code == 200
                assert served_by(moved) != pinned
                assert affinity(moved), "the client is re-pinned with a new cookie"
                after = [await http.get(f"/?i={i}") for i in range(20)]
    assert {served_by(response) for response in after} == {served_by(moved)}
    assert not any(affinity(response) for response in after)


async def test_forged_sticky_cookie_is_ignored() -> None:
    """A made-up value and a real-looking token signed with another secret pin nobody: the
    requests are balanced and each answer offers a genuine cookie."""
    async with origin_pool("a", "b", "c") as origins:
        async with running_proxy(pool_config(origins, STICKY)) as proxy:
            async with client(proxy.ports[0]) as http:
                genuine = affinity(await http.get("/"))[0].split(";")[0]
            other_secret = STICKY.replace("0123456789abcdef", "fedcba9876543210")
            async with running_proxy(pool_config(origins, other_secret)) as stranger:
                async with client(stranger.ports[0]) as http:
                    foreign = affinity(await http.get("/"))[0].split(";")[0]
            async with client(proxy.ports[0]) as http:
                responses = []
                for forged in [f"{COOKIE}=AAAAAAAAAAAAAAAAAAAAAA", foreign] * 15:
                    responses.append(await http.get("/", headers={"cookie": forged}))
                    http.cookies.clear()
    assert Counter(served_by(response) for response in responses) == {"a": 10, "b": 10, "c": 10}
    assert all(affinity(response) for response in responses)
    assert genuine.split("=", 1)[1] != foreign.split("=", 1)[1]


async def test_sticky_cookie_is_secure_over_tls(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path)
    cert = pki.server_cert("127.0.0.1")
    site_tls = f'tls = {{ certificate = "{cert.certificate}", key = "{cert.key}" }}'
    async with origin_pool("a", "b") as origins:
        config = pool_config(origins, STICKY, listen="tls = true", site=site_tls)
        async with running_proxy(config) as proxy:
            port = proxy.ports[0]
            async with client(port, scheme="https", verify=pki.client_context()) as http:
                first = await http.get("/")
                later = [served_by(await http.get(f"/?i={i}")) for i in range(10)]
    [set_cookie] = affinity(first)
    assert {"secure", "httponly", "samesite=lax"} <= cookie_attributes(set_cookie)[2]
    assert set(later) == {served_by(first)}  # the jar sends a Secure cookie back over TLS


# -- sticky sessions: the application's own session cookie -------------------------------------


async def test_sticky_learn_follows_the_app_session_cookie_to_its_server() -> None:
    learn = 'sticky = { learn = "JSESSIONID" }'
    async with origin_pool("a", "b", "c") as origins:
        async with running_proxy(pool_config(origins, learn)) as proxy:
            port = proxy.ports[0]
            async with client(port) as alice, client(port) as bob:
                alice_home = served_by(await alice.get("/login"))
                bob_home = served_by(await bob.get("/login"))
                assert alice_home != bob_home  # round robin between the two logins
                assert "JSESSIONID" in alice.cookies and COOKIE not in alice.cookies
                for index in range(15):
                    assert served_by(await alice.get(f"/cart?i={index}")) == alice_home
                    assert served_by(await bob.get(f"/cart?i={index}")) == bob_home
            async with client(port) as mallory:  # a value no server set pins nothing
                unknown = {"cookie": "JSESSIONID=made-up"}
                assert len(await tally(mallory, 6, headers=unknown)) == 3


async def test_sticky_learn_moves_a_session_whose_server_died() -> None:
    learn = 'sticky = { learn = "JSESSIONID" }'
    async with origin_pool("a", "b", "c") as origins:
        by_name = {origin.name: origin for origin in origins}
        async with running_proxy(pool_config(origins, learn)) as proxy:
            async with client(proxy.ports[0]) as http:
                home = served_by(await http.get("/login"))
                await by_name[home].stop()
                new_home = served_by(await http.get("/cart"))
                later = await tally(http, 15, "/cart")
    assert new_home != home
    assert later == {new_home: 15}


async def test_sticky_client_of_a_full_server_waits_for_it() -> None:
    async with origin_pool("a", "b") as (a, b):
        servers = [server_entry(a, max_conns=1), server_entry(b, max_conns=1)]
        async with running_proxy(pool_config(servers, STICKY)) as proxy:
            async with client(proxy.ports[0]) as http:
                home = served_by(await http.get("/"))
                busy = asyncio.create_task(http.get("/?delay=0.5"))  # fills `home`
                await asyncio.sleep(0.1)
                started = asyncio.get_running_loop().time()
                kept = await http.get("/")
                waited = asyncio.get_running_loop().time() - started
                assert served_by(await busy) == home
    assert served_by(kept) == home and kept.headers.get("set-cookie") is None
    assert waited >= 0.3  # it waited for its own server, which was busy until /?delay ended
