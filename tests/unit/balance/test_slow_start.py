"""Slow start: a recovered server's picks are accepted in a growing share (balance.slow_start)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Set

import pytest

from bastion.balance.slow_start import SlowStart, choose


@pytest.mark.parametrize(
    ("elapsed", "share"),
    [(0.0, 0.1), (1.5, 0.1), (3.0, 0.1), (15.0, 0.5), (27.0, 0.9), (30.0, 1.0), (99.0, 1.0)],
)
def test_share_grows_linearly_from_the_floor(elapsed: float, share: float) -> None:
    assert SlowStart(30.0).share(100.0, 100.0 + elapsed) == pytest.approx(share)


def test_no_ramp_without_a_recovery_or_with_zero_duration() -> None:
    assert SlowStart(30.0).share(None, 5.0) == 1.0
    assert SlowStart(0.0).share(10.0, 5.0) == 1.0  # clock before `since` and 0s: no division


@pytest.mark.parametrize("elapsed", [0.0, 7.5, 15.0, 22.5])
def test_admission_fraction_over_many_draws(elapsed: float) -> None:
    ramp = SlowStart(30.0)
    rng = random.Random(1234)
    draws = 20_000
    admitted = sum(ramp.admit(0.0, elapsed, rng.random()) for _ in range(draws))
    expected = max(0.1, elapsed / 30.0)
    assert admitted / draws == pytest.approx(expected, abs=0.015)


Pick = Callable[[Set[int]], int | None]


def round_robin(count: int) -> Pick:
    """A round-robin `pick(excluded)` over `count` servers."""
    state = {"next": 0}

    def pick(excluded: Set[int]) -> int | None:
        for _ in range(count):
            index = state["next"]
            state["next"] = (index + 1) % count
            if index not in excluded:
                return index
        return None

    return pick


def uniform(count: int, rng: random.Random) -> Pick:
    def pick(excluded: Set[int]) -> int | None:
        left = [index for index in range(count) if index not in excluded]
        return rng.choice(left) if left else None

    return pick


def test_choose_gives_a_ramping_server_its_share_of_a_fair_pool() -> None:
    shares = {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.25}
    rng = random.Random(7)
    draws = 40_000
    chosen = Counter(choose(uniform(4, rng), shares.__getitem__, rng.random) for _ in range(draws))
    # Server 3 is picked a quarter of the time and keeps a quarter of those: 1/16 overall.
    assert chosen[3] / draws == pytest.approx(1 / 16, abs=0.01)
    assert sum(chosen.values()) == draws and None not in chosen


def test_choose_over_round_robin_keeps_the_ramp_close_to_its_share() -> None:
    shares = {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.25}
    pick = round_robin(4)
    rng = random.Random(7)
    draws = 40_000
    chosen = Counter(choose(pick, shares.__getitem__, rng.random) for _ in range(draws))
    # A refusal moves the cycle on, so the ramping server is offered a little more often:
    # offered (1 + 0.75 x offered) / 4 per request, i.e. 4/13; accepted a quarter of that.
    assert chosen[3] / draws == pytest.approx(1 / 13, abs=0.01)


def test_choose_falls_back_to_the_most_ramped_when_every_server_refuses() -> None:
    shares = {0: 0.1, 1: 0.4, 2: 0.2}
    assert choose(round_robin(3), shares.__getitem__, lambda: 0.99) == 1


def test_choose_returns_none_for_an_empty_pool_and_survives_a_bad_balancer() -> None:
    assert choose(lambda excluded: None, lambda index: 1.0, lambda: 0.0) is None
    # A balancer that ignores `excluded` must not loop forever.
    assert choose(lambda excluded: 2, lambda index: 0.1, lambda: 0.9) == 2


@pytest.mark.parametrize("kwargs", [{"duration": -1.0}, {"duration": 1.0, "floor": 0.0}])
def test_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SlowStart(**kwargs)


def test_choose_never_picks_a_server_already_tried() -> None:
    shares = {0: 1.0, 1: 1.0, 2: 1.0}
    picked = [
        choose(uniform(3, random.Random(seed)), shares.__getitem__, random.random, [0, 2])
        for seed in range(20)
    ]
    assert set(picked) == {1}
    assert (
        choose(uniform(3, random.Random(0)), shares.__getitem__, random.random, [0, 1, 2]) is None
    )
