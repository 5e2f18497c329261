"""Sticky sessions: send a client back to the server that holds its session.

Two ways, as `sticky = {...}` says:

- **cookie** (`StickyCookie`): bastion inserts its own cookie naming the server. The value is
  a token, not an address: the first 16 bytes of HMAC-SHA256(key, server identity), base64url.
  It is stateless — any worker of any node with the same key and server identities reads it the
  same way, no table shared — and it depends only on the server's identity, so adding or
  removing other servers keeps existing pins. With `secret` set, clients cannot forge a pin;
  without it the key is derived from the upstream name and its configured servers
  (`derive_key`), which hides the servers' addresses but can be recomputed by whoever knows
  them — set `secret` to make pins unforgeable.
- **learn** (`LearnedSessions`): bastion watches the app's own session cookie (`JSESSIONID`…)
  in the origin's Set-Cookie and remembers which server set each value, in a bounded LRU table
  with an idle TTL. That table lives in one process.

Re-pinning is the caller's: when the pinned server is unusable the balancer picks another and
the caller calls `StickyCookie.repin` (a Set-Cookie to add) or `LearnedSessions.repin`.

Also the two cookie parsers both modes need (RFC 6265 §5.2 and §5.4, tolerant, never raising).
Header values are bytes, as on the data path. Pure: clocks are passed in as `now`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence

# Bytes of the HMAC kept in a token: 128 bits, 22 characters of base64url.
TOKEN_BYTES = 16
# Session values longer than this are not learnt (bounds the learn table's memory).
MAX_LEARNT_VALUE = 256

_WHITESPACE = b" \t"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a valid cookie name
_KEY_CONTEXT = b"bastion sticky cookie key v1\x00"


def cookie_values(header: bytes, name: bytes) -> Iterator[bytes]:
    """The values of cookie `name` in one Cookie header value, in order (RFC 6265 §5.4:
    `a=1; b=2`; names are case-sensitive). Spaces around names and values are ignored,
    pairs without `=` skipped."""
    for pair in header.split(b";"):
        key, equals, value = pair.partition(b"=")
        if equals and key.strip(_WHITESPACE) == name:
            yield value.strip(_WHITESPACE)


def request_cookie(cookie_headers: Iterable[bytes], name: bytes) -> bytes | None:
    """The first value of cookie `name` across all Cookie header values of a request (HTTP/2
    clients may split cookies over several header fields)."""
    for header in cookie_headers:
        for value in cookie_values(header, name):
            return value
    return None


def set_cookie_pair(header: bytes) -> tuple[bytes, bytes] | None:
    """The name and value set by one Set-Cookie header value (RFC 6265 §5.2: the part before
    the first `;`, split at the first `=`, trimmed); None when it sets nothing usable."""
    pair = header.split(b";", 1)[0]
    key, equals, value = pair.partition(b"=")
    name = key.strip(_WHITESPACE)
    if not equals or not name:
        return None
    return name, value.strip(_WHITESPACE)


def derive_key(upstream: str, servers: Sequence[str]) -> bytes:
    """The cookie key when no `secret` is configured: from the upstream's name and its servers
    as configured (not as resolved, so DNS changes keep the key); order does not matter."""
    material = b"\x00".join(item.encode() for item in [upstream, *sorted(servers)])
    return hashlib.sha256(_KEY_CONTEXT + material).digest()


class StickyCookie:
    """`sticky = { cookie = NAME, secret = ... }`: the server named by a signed cookie.

    `servers` are the identities of the upstream's servers (their URLs), by index; tokens are
    computed once here. The same key and identities give the same tokens everywhere.
    """

    __slots__ = ("_by_token", "_name", "_tokens", "name")

    def __init__(self, name: str, key: bytes, servers: Sequence[str]) -> None:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"sticky cookie name {name!r} is not a valid cookie name")
        if not key:
            raise ValueError("sticky cookie key is empty")
        self.name = name
        self._name = name.encode("ascii")
        self._tokens = tuple(self._sign(key, identity) for identity in servers)
        self._by_token: dict[bytes, int] = {}
        for index, token in enumerate(self._tokens):
            self._by_token.setdefault(token, index)  # a repeated identity: its first index

    @staticmethod
    def _sign(key: bytes, identity: str) -> bytes:
        digest = hmac.new(key, identity.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:TOKEN_BYTES]).rstrip(b"=")

    def token(self, index: int) -> bytes:
        """The cookie value naming server `index`."""
        return self._tokens[index]

    def pinned(self, cookie_headers: Iterable[bytes]) -> int | None:
        """The server a request's cookie names; None when absent, unknown, forged or garbled.

        The token is looked up in a dict: bytes hashing is keyed per process (SipHash), so
        lookup time tells an attacker nothing about how close a guess came; the final
        comparison is constant-time.
        """
        for header in cookie_headers:
            for value in cookie_values(header, self._name):
                index = self._by_token.get(value)
                if index is not None and hmac.compare_digest(value, self._tokens[index]):
                    return index
        return None

    def set_cookie(self, index: int, *, secure: bool) -> bytes:
        """The Set-Cookie header value pinning a client to server `index`; `secure` when the
        client came over TLS."""
        value = b"%s=%s; Path=/; HttpOnly; SameSite=Lax" % (self._name, self._tokens[index])
        return value + b"; Secure" if secure else value

    def repin(self, pinned: int | None, chosen: int, *, secure: bool) -> bytes | None:
        """The Set-Cookie to add to the response when the request was sent to `chosen` but
        its cookie named `pinned` (or nothing); None when the pin is already right."""
        return None if pinned == chosen else self.set_cookie(chosen, secure=secure)


class LearnedSessions:
    """`sticky = { learn = NAME }`: the server that issued each value of the app's session
    cookie, most recently used last, forgotten after `ttl` seconds without a request or when
    `max_entries` newer ones push it out."""

    __slots__ = ("_entries", "_name", "max_entries", "name", "ttl")

    def __init__(self, name: str, *, max_entries: int = 100_000, ttl: float = 1800.0) -> None:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"sticky learn cookie name {name!r} is not a valid cookie name")
        if max_entries < 1 or ttl <= 0:
            raise ValueError("the learn table holds at least 1 entry for longer than 0s")
        self.name = name
        self._name = name.encode("ascii")
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[bytes, tuple[int, float]] = OrderedDict()  # → index, expiry

    def __len__(self) -> int:
        return len(self._entries)

    def session(self, cookie_headers: Iterable[bytes]) -> bytes | None:
        """The app's session value in a request's Cookie headers."""
        return request_cookie(cookie_headers, self._name)

    def lookup(self, value: bytes, now: float) -> int | None:
        """The server that set session `value`, if still remembered (refreshes its TTL)."""
        entry = self._entries.get(value)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[value]
            return None
        self._entries[value] = (entry[0], now + self.ttl)
        self._entries.move_to_end(value)
        return entry[0]

    def pinned(self, cookie_headers: Iterable[bytes], now: float) -> int | None:
        """The server a request belongs to, by the app's session cookie it carries."""
        for header in cookie_headers:
            for value in cookie_values(header, self._name):
                index = self.lookup(value, now)
                if index is not None:
                    return index
        return None

    def learn(self, set_cookie_headers: Iterable[bytes], index: int, now: float) -> bool:
        """Remember the session values server `index` sets in a response; True if any."""
        learnt = False
        for header in set_cookie_headers:
            pair = set_cookie_pair(header)
            if pair is not None and pair[0] == self._name:
                learnt = self.remember(pair[1], index, now) or learnt
        return learnt

    def repin(self, cookie_headers: Iterable[bytes], index: int, now: float) -> bool:
        """Move a known session to server `index` (its server was unusable and the request
        went there). Unknown values are not added, so clients cannot fill the table."""
        value = self.session(cookie_headers)
        if value is None or self.lookup(value, now) in (None, index):
            return False
        return self.remember(value, index, now)

    def remember(self, value: bytes, index: int, now: float) -> bool:
        """Map session `value` to server `index`; empty or oversized values are ignored."""
        if not value or len(value) > MAX_LEARNT_VALUE:
            return False
        entries = self._entries
        entries[value] = (index, now + self.ttl)
        entries.move_to_end(value)
        while entries:  # expired entries sit at the front: least recently used first
            oldest = next(iter(entries.values()))
            if len(entries) <= self.max_entries and oldest[1] > now:
                break
            entries.popitem(last=False)
        return True
