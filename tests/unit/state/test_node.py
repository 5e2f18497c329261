"""NodeState: the slot table, worker columns, drains, health cells and generations, over a
real memfd region mapped twice in one process (as two workers would)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bastion.state import NodeState
from bastion.state import layout as lay
from bastion.state.node import NodeStateError


@pytest.fixture
def node() -> Iterator[NodeState]:
    created = NodeState.create(servers=4)
    yield created
    created.close()


@pytest.fixture
def workers(node: NodeState) -> Iterator[tuple[NodeState, NodeState]]:
    first, second = NodeState.attach(node.fd), NodeState.attach(node.fd)
    yield first, second
    first.close()
    second.close()


def bind(handle: NodeState, label: str, upstream: str = "app", max_conns: int = 0) -> int:
    return handle.bind(upstream, label, weight=2, max_conns=max_conns, backup=False).slot


def test_a_region_that_is_not_node_state_is_refused() -> None:
    fd = os.memfd_create("not-state")
    try:
        os.ftruncate(fd, lay.HEADER_SIZE)
        with pytest.raises(NodeStateError, match="not a bastion node-state region"):
            NodeState.attach(fd)
    finally:
        os.close(fd)


def test_every_handle_finds_the_same_slot_and_indexes_count_per_upstream(
    workers: tuple[NodeState, NodeState], node: NodeState
) -> None:
    first, second = workers
    a0 = bind(first, "10.0.0.1:80")
    b0 = bind(second, "10.0.0.9:80", upstream="other")
    a1 = bind(second, "10.0.0.2:80")
    assert bind(second, "10.0.0.1:80") == a0  # claimed once, found by the other worker
    assert bind(first, "10.0.0.2:80") == a1
    assert len({a0, a1, b0}) == 3
    listed = [(view.upstream, view.index, view.label, view.weight) for view in node.servers()]
    assert listed == [
        ("app", 0, "10.0.0.1:80", 2),
        ("app", 1, "10.0.0.2:80", 2),
        ("other", 0, "10.0.0.9:80", 2),
    ]
    assert node.slot_of("app", "10.0.0.3:80") is None


def test_a_key_too_long_and_a_full_table_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lay, "MIN_SLOTS", 2)
    small = NodeState.create(servers=0)
    try:
        with pytest.raises(NodeStateError, match="longer than"):
            small.claim("app", "x" * lay.KEY_MAX)
        small.claim("app", "a:1")
        small.claim("app", "b:1")
        with pytest.raises(NodeStateError, match="all 2 server slots"):
            small.claim("app", "c:1")
    finally:
        small.close()


def test_in_flight_is_summed_over_the_workers_columns(
    workers: tuple[NodeState, NodeState], node: NodeState
) -> None:
    first, second = workers
    assert first.column != second.column
    one = first.bind("app", "10.0.0.1:80", weight=1, max_conns=3, backup=False)
    two = second.bind("app", "10.0.0.1:80", weight=1, max_conns=3, backup=False)
    one.add_in_flight(1)
    one.add_in_flight(1)
    two.add_in_flight(1)
    assert one.in_flight_total() == two.in_flight_total() == 3
    assert node.servers()[0].in_flight == 3
    one.add_in_flight(-1)
    assert two.in_flight_total() == 2


def test_a_closed_or_dead_worker_takes_its_counts_with_it(node: NodeState) -> None:
    first, second = NodeState.attach(node.fd), NodeState.attach(node.fd)
    first.bind("app", "s:1", weight=1, max_conns=0, backup=False).add_in_flight(2)
    link = second.bind("app", "s:1", weight=1, max_conns=0, backup=False)
    link.add_in_flight(5)
    first.close()
    assert link.in_flight_total() == 5
    # a worker that died: its column is freed by reap (and by release_worker(pid))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    owner = (lay.H_COLUMNS + second.column * lay.COLUMN_ENTRY) // 4
    second.ints[owner] = int(dead.stdout)
    node.reap()
    assert link.in_flight_total() == 0
    third = NodeState.attach(node.fd)  # the freed column is claimed again
    assert third.column in (0, second.column)
    third.close()
    second.column = -1  # its column now belongs to others
    second.close()


def test_release_worker_frees_the_columns_of_that_pid(node: NodeState) -> None:
    worker = NodeState.attach(node.fd)
    worker.bind("app", "s:1", weight=1, max_conns=0, backup=False).add_in_flight(4)
    node.release_worker(os.getpid())
    assert node.servers()[0].in_flight == 0
    worker.column = -1
    worker.close()


def test_drain_and_enable_by_upstream_and_index(
    workers: tuple[NodeState, NodeState], node: NodeState
) -> None:
    first, _ = workers
    bind(first, "10.0.0.1:80")
    link = first.bind("app", "10.0.0.2:80", weight=1, max_conns=0, backup=False)
    before = node.changes
    assert node.drain("app", 1)
    assert link.drained and node.changes > before
    assert [view.state for view in node.servers()] == ["up", "drained"]
    assert node.drain("app", 1)  # idempotent
    assert node.enable("app", 1)
    assert not link.drained
    assert not node.drain("app", 2) and not node.drain("nope", 0)


def test_check_verdicts_and_ejections_are_seen_by_every_handle(
    workers: tuple[NodeState, NodeState], node: NodeState
) -> None:
    first, second = workers
    checker = first.bind("app", "s:1", weight=1, max_conns=0, backup=False)
    reader = second.bind("app", "s:1", weight=1, max_conns=0, backup=False)
    assert reader.health == lay.HEALTH_UNCHECKED
    before = node.changes
    checker.record_check(True, "status 200", 1000.0)
    assert reader.health == lay.HEALTH_UP and node.changes == before + 1
    checker.record_check(True, "status 204", 1001.0)  # same verdict: no change to announce
    assert node.changes == before + 1
    checker.record_check(False, "no answer within 2s" + "!" * 200, 1002.0)
    view = node.servers()[0]
    assert (view.health, view.checked_at, view.state) == ("down", 1002.0, "down")
    assert view.health_detail.startswith("no answer within 2s")
    assert len(view.health_detail) == lay.DETAIL_MAX
    reader.eject(4e9)
    assert checker.ejected_until == 4e9
    checker.record_check(True, "status 200", 1003.0)
    assert node.servers()[0].state == "ejected"


def test_servers_are_tagged_with_the_generation_that_uses_them(node: NodeState) -> None:
    old = NodeState.attach(node.fd)
    bind(old, "gone:1")
    bind(old, "stays:1")
    generation = node.begin_generation()
    assert generation == 1 == node.generation
    new = NodeState.attach(node.fd)
    bind(new, "stays:1")
    assert [view.label for view in node.servers(generation=generation)] == ["stays:1"]
    assert len(node.servers()) == 2
    old.close()
    new.close()
