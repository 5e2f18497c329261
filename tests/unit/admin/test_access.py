"""Who may call the admin API: token, loopback rule, DNS-rebinding and cross-origin guards."""

from __future__ import annotations

import pytest

from bastion.admin.access import admit, is_loopback, same_origin

TOKEN = "s3cret-s3cret-s3cret"


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),  # all of 127.0.0.0/8
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # a dual-stack listener's view of IPv4 loopback
        (None, True),  # a unix socket's peer
        ("10.0.0.1", False),
        ("192.168.1.20", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
    ],
)
def test_loopback(peer: str | None, loopback: bool) -> None:
    assert is_loopback(peer) is loopback


def test_without_a_token_loopback_is_served_and_others_are_refused() -> None:
    assert admit(None, peer_host="127.0.0.1", host="127.0.0.1:9901", authorization=None) is None
    refusal = admit(None, peer_host="10.1.2.3", host="10.0.0.1:9901", authorization=None)
    assert refusal is not None and refusal.status == 403
    assert "loopback" in refusal.message
    # A token sent when none is configured changes nothing.
    sent = admit(None, peer_host="10.1.2.3", host="x", authorization=f"Bearer {TOKEN}")
    assert sent is not None and sent.status == 403


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:9901", True),
        ("localhost:9901", True),
        ("[::1]:9901", True),
        ("127.0.0.1", True),
        ("attacker.example:9901", False),  # DNS rebinding
        ("", False),
    ],
)
def test_without_a_token_host_must_name_loopback(host: str, allowed: bool) -> None:
    refusal = admit(None, peer_host="127.0.0.1", host=host, authorization=None)
    assert (refusal is None) is allowed


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.1.2.3"])
def test_with_a_token_every_client_must_send_it(peer: str) -> None:
    for authorization, why in (
        (None, "missing bearer token"),
        ("Bearer wrong", "wrong bearer token"),
        (f"Basic {TOKEN}", "wrong bearer token"),
        (f"Bearer {TOKEN}x", "wrong bearer token"),
    ):
        refusal = admit(TOKEN, peer_host=peer, host="h", authorization=authorization)
        assert refusal is not None
        assert (refusal.status, refusal.message) == (401, why)
        assert dict(refusal.headers)["WWW-Authenticate"].startswith("Bearer ")
    for good in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "):
        assert admit(TOKEN, peer_host=peer, host="any.example", authorization=good) is None


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        (None, "127.0.0.1:9901", True),  # not a browser, or a same-origin GET
        ("http://127.0.0.1:9901", "127.0.0.1:9901", True),
        ("http://LOCALHOST:9901", "localhost:9901", True),
        ("http://evil.example", "127.0.0.1:9901", False),
        ("http://127.0.0.1:9902", "127.0.0.1:9901", False),
        ("null", "127.0.0.1:9901", False),
    ],
)
def test_same_origin(origin: str | None, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same
