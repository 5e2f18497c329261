"""Server health: active rise/fall, passive ejection with probation and backoff (balance.health)."""

from __future__ import annotations

import pytest

from bastion.balance.health import (
    ActiveHealth,
    Change,
    HealthEvent,
    PassiveHealth,
    PassivePolicy,
    PassiveState,
    ServerHealth,
)
from bastion.balance.server import ServerState
from bastion.balance.slow_start import SlowStart

POLICY = PassivePolicy(failures=5, window=10.0, eject=30.0, max_eject=120.0)


def changes(events: tuple[HealthEvent, ...]) -> list[Change]:
    return [event.change for event in events]


def fail_times(health: ServerHealth, *times: float) -> list[Change]:
    seen: list[Change] = []
    for now in times:
        seen += changes(health.failure(now))
    return seen


def test_active_falls_after_fall_failures_in_a_row() -> None:
    active = ActiveHealth(rise=2, fall=3)
    assert [active.record(False), active.record(False)] == [None, None]
    step = active.record(False)
    assert step is not None and step[0] is Change.DOWN
    assert not active.up


def test_active_success_breaks_a_failure_streak() -> None:
    active = ActiveHealth(rise=2, fall=3)
    for ok in (False, False, True, False, False):
        assert active.record(ok) is None
    assert active.up


def test_active_rises_after_rise_successes_in_a_row() -> None:
    active = ActiveHealth(rise=2, fall=1, up=False)
    assert active.record(True) is None
    assert active.record(False) is None  # streak broken
    assert active.record(True) is None
    step = active.record(True)
    assert step is not None and step[0] is Change.UP


def test_active_force_takes_a_verdict_without_counting() -> None:
    active = ActiveHealth(rise=5, fall=5)
    assert active.force(True) is None
    step = active.force(False, "node prober says down")
    assert step == (Change.DOWN, "node prober says down")


def test_five_failures_within_the_window_eject() -> None:
    server = ServerState(0, "10.0.0.5:8080")
    health = ServerHealth(server, passive=POLICY)
    assert fail_times(health, 0, 1, 2, 3) == []
    events = health.failure(4)
    assert changes(events) == [Change.EJECTED]
    assert not server.usable and not events[0].usable
    assert "5 failures within 10s; out for 30s" in str(events[0])
    assert events[0].alarming
    assert health.next_deadline == 34.0


def test_failures_spread_wider_than_the_window_do_not_eject() -> None:
    server = ServerState(0, "a")
    health = ServerHealth(server, passive=POLICY)
    assert fail_times(health, 0, 3, 6, 9, 10.5, 13.5, 16.5, 19.5, 21) == []
    assert server.usable


def test_successes_between_failures_do_not_reset_the_window_count() -> None:
    health = ServerHealth(ServerState(0, "a"), passive=POLICY)
    for now in (0, 1, 2, 3):
        health.failure(now)
        health.success(now + 0.5)
    assert changes(health.failure(4)) == [Change.EJECTED]


def test_ejection_ends_in_probation_and_a_success_recovers() -> None:
    server = ServerState(0, "a")
    health = ServerHealth(server, passive=POLICY)
    fail_times(health, 0, 1, 2, 3, 4)
    assert health.tick(33.9) == ()
    assert not server.usable
    events = health.tick(34.0)
    assert changes(events) == [Change.PROBATION] and events[0].usable and not events[0].alarming
    assert server.usable
    assert health.next_deadline is None
    assert changes(health.success(35)) == [Change.RECOVERED]
    assert health.passive is not None and health.passive.state is PassiveState.HEALTHY
    assert health.success(36) == ()


def test_one_failure_on_probation_re_ejects_for_twice_as_long_up_to_the_cap() -> None:
    server = ServerState(0, "a")
    health = ServerHealth(server, passive=POLICY)
    fail_times(health, 0, 1, 2, 3, 4)  # out 30 s, until 34
    durations = []
    now = 34.0
    for _ in range(4):
        health.tick(now)
        events = health.failure(now + 1)
        assert changes(events) == [Change.EJECTED]
        assert "failed on probation" in events[0].reason
        deadline = health.next_deadline
        assert deadline is not None
        durations.append(deadline - (now + 1))
        now = deadline
    assert durations == [60.0, 120.0, 120.0, 120.0]


def test_a_request_on_an_expired_ejection_starts_probation_first() -> None:
    health = ServerHealth(ServerState(0, "a"), passive=POLICY)
    fail_times(health, 0, 1, 2, 3, 4)
    assert changes(health.failure(40)) == [Change.PROBATION, Change.EJECTED]
    assert changes(health.tick(100.0)) == [Change.PROBATION]


def test_backoff_decays_while_the_server_stays_healthy() -> None:
    passive = PassiveHealth(POLICY)
    for now in range(5):
        passive.failure(now)  # ejected 30 s until 34: level 1
    passive.tick(34)
    passive.failure(35)  # on probation: 60 s until 95: level 2
    passive.tick(95)
    passive.success(96)
    step = None
    for now in range(155, 160):  # 60 s = two eject periods later: level back to 0
        step = passive.failure(now)
    assert step is not None and step[1].endswith("out for 30s")


def test_failures_during_an_ejection_are_ignored() -> None:
    health = ServerHealth(ServerState(0, "a"), passive=POLICY)
    fail_times(health, 0, 1, 2, 3, 4)
    assert fail_times(health, 5, 6, 7, 8, 9, 10) == []
    assert health.success(11) == ()
    assert health.next_deadline == 34.0


def test_active_down_and_passive_ejection_both_keep_the_server_out() -> None:
    server = ServerState(0, "a")
    health = ServerHealth(server, passive=POLICY, active=ActiveHealth(rise=1, fall=1))
    fail_times(health, 0, 1, 2, 3, 4)
    events = health.check(False, 5)
    assert changes(events) == [Change.DOWN] and not server.usable
    health.tick(34)  # passive probation, but active still down
    assert not server.usable
    events = health.check(True, 40)
    assert changes(events) == [Change.UP] and events[0].usable and server.usable
    assert health.usable_since == 40


def test_set_active_takes_the_nodes_verdict_on_a_worker() -> None:
    server = ServerState(0, "10.0.0.7:80")
    health = ServerHealth(server)
    events = health.set_active(False, 1.0)
    assert changes(events) == [Change.DOWN] and not server.usable
    assert str(events[0]) == (
        "server 10.0.0.7:80 down: health checker's verdict; it takes no requests"
    )
    assert health.set_active(False, 2.0) == ()
    assert changes(health.set_active(True, 3.0)) == [Change.UP] and server.usable


def test_check_without_active_checks_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="no active checks"):
        ServerHealth(ServerState(0, "a")).check(True, 0.0)


def test_server_starting_down_is_not_usable() -> None:
    server = ServerState(0, "a")
    ServerHealth(server, active=ActiveHealth(up=False))
    assert not server.usable


def test_passive_off_ignores_failures() -> None:
    server = ServerState(0, "a")
    health = ServerHealth(server, passive=None)
    assert fail_times(health, *range(50)) == [] and server.usable


def test_slow_start_ramps_from_when_the_server_became_usable() -> None:
    server = ServerState(0, "a")
    health = ServerHealth(server, passive=POLICY, slow_start=SlowStart(30.0))
    assert health.share(0.0) == 1.0  # usable from the start: no ramp
    fail_times(health, 0, 1, 2, 3, 4)
    health.tick(34.0)
    assert health.usable_since == 34.0
    assert health.share(34.0) == pytest.approx(0.1)
    assert health.share(49.0) == pytest.approx(0.5)
    assert health.admit(49.0, 0.49) and not health.admit(49.0, 0.51)
    assert health.share(64.0) == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"failures": 0}, {"window": 0.0}, {"eject": -1.0}, {"eject": 30.0, "max_eject": 10.0}],
)
def test_passive_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PassivePolicy(**kwargs)  # type: ignore[arg-type]
