"""SharedSessions: the learned sticky table in the node region — seen by every worker,
bounded per bucket, expiring, and never trusting a torn entry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bastion.state import NodeState, SharedSessions
from bastion.state import layout as lay


@pytest.fixture
def node() -> Iterator[NodeState]:
    created = NodeState.create()
    yield created
    created.close()


def test_a_session_learnt_by_one_worker_pins_on_another(node: NodeState) -> None:
    other = NodeState.attach(node.fd)
    mine = SharedSessions(node, "app", "SID", ttl=60)
    theirs = SharedSessions(other, "app", "SID", ttl=60)
    assert mine.learn([b"SID=abc; Path=/", b"other=1"], 7, now=1000.0)
    assert theirs.pinned([b"x=1; SID=abc"], now=1010.0) == 7
    assert theirs.pinned([b"SID=zzz"], now=1010.0) is None
    assert SharedSessions(other, "shop", "SID", ttl=60).lookup(b"abc", 1010.0) is None
    other.close()


def test_entries_expire_and_lookups_refresh_them(node: NodeState) -> None:
    sessions = SharedSessions(node, "app", "SID", ttl=100)
    sessions.remember(b"abc", 3, 1000.0)
    assert sessions.lookup(b"abc", 1050.0) == 3  # refreshed: now lives until 1150
    assert sessions.lookup(b"abc", 1140.0) == 3
    assert sessions.lookup(b"abc", 1300.0) is None


def test_repin_moves_known_sessions_only(node: NodeState) -> None:
    sessions = SharedSessions(node, "app", "SID", ttl=100)
    assert not sessions.repin([b"SID=new"], 2, 1000.0)
    sessions.remember(b"known", 1, 1000.0)
    assert sessions.repin([b"SID=known"], 2, 1001.0)
    assert sessions.lookup(b"known", 1002.0) == 2
    assert not sessions.remember(b"", 1, 1000.0)
    assert not sessions.remember(b"x" * 300, 1, 1000.0)


def test_a_full_bucket_replaces_the_entry_that_expires_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lay, "MIN_SESSIONS", lay.BUCKET)  # one bucket
    small = NodeState.create()
    try:
        sessions = SharedSessions(small, "app", "SID", ttl=100)
        for number in range(lay.BUCKET):
            sessions.remember(b"s%d" % number, number, 1000.0 + number)
        sessions.remember(b"newest", 9, 1010.0)
        assert sessions.lookup(b"s0", 1011.0) is None  # the oldest went
        assert [sessions.lookup(b"s%d" % n, 1011.0) for n in range(1, lay.BUCKET)] == [1, 2, 3]
        assert sessions.lookup(b"newest", 1011.0) == 9
    finally:
        small.close()


def entry_of(sessions: SharedSessions, value: bytes) -> int:
    key = sessions._hash(value)
    return next(e for e in sessions._entries(key) if (sessions.read(e) or (0,))[0] == key)


def test_a_write_in_progress_reads_as_a_miss(node: NodeState) -> None:
    sessions = SharedSessions(node, "app", "SID", ttl=100)
    sessions.remember(b"abc", 5, 1000.0)
    entry = entry_of(sessions, b"abc")
    base = entry * lay.ENTRY_SIZE // 4
    seq = node.ints[base + lay.E_SEQ_A // 4]
    node.ints[base + lay.E_SEQ_A // 4] = seq + 1  # a writer started and has not finished
    assert sessions.lookup(b"abc", 1001.0) is None
    node.ints[base + lay.E_SEQ_A // 4] = seq
    assert sessions.lookup(b"abc", 1001.0) == 5


def test_two_writers_interleaved_leave_an_entry_that_fails_its_check(node: NodeState) -> None:
    sessions = SharedSessions(node, "app", "SID", ttl=100)
    sessions.remember(b"abc", 5, 1000.0)
    entry = entry_of(sessions, b"abc")
    # a second writer put its slot in while the first wrote the rest (sequence numbers agree)
    node.ints[entry * lay.ENTRY_SIZE // 4 + lay.E_SLOT // 4] = 6
    assert sessions.read(entry) is None
    assert sessions.lookup(b"abc", 1001.0) is None
