"""Learned sticky sessions shared by the workers of a node (`sticky = { learn = NAME }`).

The table is a fixed array of entries in the node-state region, in buckets of `BUCKET`: a
session lives in the bucket its key hash names (the key: upstream name and session value,
BLAKE2b — the same in every process, unlike Python's `hash`), and an insert takes a matching
or expired entry of that bucket, else replaces the one that expires first. So the table never
grows, and the least recently used sessions go first when it is full.

Torn writes: entries are written without a lock. A writer stores `seq_a`, then the fields and
a check word mixing them, then `seq_b`; a reader reads `seq_b`, the fields, then `seq_a`, and
takes the entry only when both sequence numbers agree and the check word matches. A reader
racing a writer sees different sequence numbers; two writers interleaving on one entry leave
fields that fail the check. Either way the entry is a miss: the request is balanced normally.

The interface is `LearnedSessions`' (pinned / learn / repin / session), with slot numbers
(`SlotLink.slot`) as server indexes and wall-clock times as `now`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from bastion.balance.sticky import MAX_LEARNT_VALUE, cookie_values, request_cookie, set_cookie_pair
from bastion.state import layout as lay
from bastion.state.node import NodeState

_INTS, _LONGS = lay.ENTRY_SIZE // 4, lay.ENTRY_SIZE // 8
_SEQ_A, _SEQ_B, _SLOT, _CHECK = (
    lay.E_SEQ_A // 4,
    lay.E_SEQ_B // 4,
    lay.E_SLOT // 4,
    lay.E_CHECK // 4,
)
_KEY, _EXPIRY = lay.E_KEY // 8, lay.E_EXPIRY // 8
_REFRESH = 0.1  # a lookup rewrites an entry's expiry only once this share of its ttl passed


class SharedSessions:
    """One upstream's learned sessions in the node's shared table."""

    __slots__ = (
        "_buckets",
        "_doubles",
        "_first",
        "_ints",
        "_longs",
        "_name",
        "_prefix",
        "name",
        "ttl",
    )

    def __init__(self, node: NodeState, upstream: str, name: str, *, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("the learn table keeps sessions for longer than 0s")
        self.name = name
        self._name = name.encode("ascii")
        self.ttl = ttl
        self._prefix = upstream.encode() + b"\x00"
        self._ints = node.ints
        self._longs = node.longs
        self._doubles = node.doubles
        self._first = node.sessions_at // lay.ENTRY_SIZE  # entry number of the table's start
        self._buckets = node.session_capacity // lay.BUCKET

    def _hash(self, value: bytes) -> int:
        digest = hashlib.blake2b(self._prefix + value, digest_size=8).digest()
        return int.from_bytes(digest, "little", signed=True) or 1  # 0 marks an empty entry

    def _entries(self, key: int) -> range:
        start = self._first + (key % self._buckets) * lay.BUCKET
        return range(start, start + lay.BUCKET)

    # -- one entry ------------------------------------------------------------------------

    def read(self, entry: int) -> tuple[int, int, float] | None:
        """(key, slot, expiry) of a consistent entry; None when empty or torn."""
        ints, longs = self._ints, self._longs
        base4, base8 = entry * _INTS, entry * _LONGS
        seq_b = ints[base4 + _SEQ_B]
        slot = ints[base4 + _SLOT]
        key = longs[base8 + _KEY]
        expiry_bits = longs[base8 + _EXPIRY]
        expiry = self._doubles[base8 + _EXPIRY]
        check = ints[base4 + _CHECK]
        seq_a = ints[base4 + _SEQ_A]
        if seq_a != seq_b or key == 0 or check != _check(key, slot, expiry_bits):
            return None
        return key, slot, expiry

    def write(self, entry: int, key: int, slot: int, expiry: float) -> None:
        ints, longs = self._ints, self._longs
        base4, base8 = entry * _INTS, entry * _LONGS
        seq = (ints[base4 + _SEQ_A] + 1) & 0x7FFFFFFF
        ints[base4 + _SEQ_A] = seq
        ints[base4 + _SLOT] = slot
        longs[base8 + _KEY] = key
        self._doubles[base8 + _EXPIRY] = expiry
        ints[base4 + _CHECK] = _check(key, slot, longs[base8 + _EXPIRY])
        ints[base4 + _SEQ_B] = seq

    # -- LearnedSessions' interface ---------------------------------------------------------

    def session(self, cookie_headers: Iterable[bytes]) -> bytes | None:
        """The app's session value in a request's Cookie headers."""
        return request_cookie(cookie_headers, self._name)

    def lookup(self, value: bytes, now: float) -> int | None:
        """The slot of the server that set session `value`, if remembered (refreshes it)."""
        key = self._hash(value)
        for entry in self._entries(key):
            found = self.read(entry)
            if found is None or found[0] != key:
                continue
            slot, expiry = found[1], found[2]
            if expiry <= now:
                return None
            if expiry < now + self.ttl * (1.0 - _REFRESH):
                self.write(entry, key, slot, now + self.ttl)
            return slot
        return None

    def pinned(self, cookie_headers: Iterable[bytes], now: float) -> int | None:
        """The slot a request belongs to, by the app's session cookie it carries."""
        for header in cookie_headers:
            for value in cookie_values(header, self._name):
                slot = self.lookup(value, now)
                if slot is not None:
                    return slot
        return None

    def learn(self, set_cookie_headers: Iterable[bytes], slot: int, now: float) -> bool:
        """Remember the session values the server of `slot` sets in a response."""
        learnt = False
        for header in set_cookie_headers:
            pair = set_cookie_pair(header)
            if pair is not None and pair[0] == self._name:
                learnt = self.remember(pair[1], slot, now) or learnt
        return learnt

    def repin(self, cookie_headers: Iterable[bytes], slot: int, now: float) -> bool:
        """Move a known session to `slot`; unknown values are not added."""
        value = self.session(cookie_headers)
        if value is None or self.lookup(value, now) in (None, slot):
            return False
        return self.remember(value, slot, now)

    def remember(self, value: bytes, slot: int, now: float) -> bool:
        """Map session `value` to `slot`: its own entry, else a free or expired one of its
        bucket, else the one expiring first."""
        if not value or len(value) > MAX_LEARNT_VALUE:
            return False
        key = self._hash(value)
        chosen, soonest = -1, float("inf")
        for entry in self._entries(key):
            found = self.read(entry)
            if found is None or found[2] <= now:
                expiry = -1.0  # empty, torn or expired: free to take
            elif found[0] == key:
                chosen = entry
                break
            else:
                expiry = found[2]
            if expiry < soonest:
                chosen, soonest = entry, expiry
        self.write(chosen, key, slot, now + self.ttl)
        return True


def _check(key: int, slot: int, expiry_bits: int) -> int:
    """A word that changes with every field: an entry mixing two writes fails it."""
    folded = key ^ (expiry_bits >> 3) ^ (slot << 35) ^ (slot * 0x9E3779B1)
    return (folded ^ (folded >> 31)) & 0x7FFFFFFF
