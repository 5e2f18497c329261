"""Retry budget: 20% extra over a sliding window, plus a small reserve (balance.retry_budget)."""

from __future__ import annotations

import pytest

from bastion.balance.retry_budget import RetryBudget


def retries_granted(budget: RetryBudget, now: float, attempts: int) -> int:
    return sum(budget.try_retry(now) for _ in range(attempts))


def test_busy_upstream_retries_at_most_twenty_percent() -> None:
    budget = RetryBudget(ratio=0.2, window=10.0, min_per_second=0.0)
    for i in range(1000):
        budget.record_request(i / 100)  # 100 requests/s for 10 s
    assert budget.available(9.99) == 200
    assert retries_granted(budget, 9.99, 1000) == 200
    assert not budget.try_retry(9.99)


def test_retries_grow_with_requests_and_never_pass_the_ratio() -> None:
    budget = RetryBudget(ratio=0.2, window=10.0, min_per_second=0.0)
    granted = 0
    for i in range(500):  # every request fails and wants one retry
        now = i / 100
        budget.record_request(now)
        granted += budget.try_retry(now)
    assert granted == 100


def test_reserve_lets_a_quiet_upstream_retry() -> None:
    budget = RetryBudget(ratio=0.2, window=10.0, min_per_second=3.0)
    assert budget.available(0.0) == 30
    assert retries_granted(budget, 0.0, 100) == 30
    budget.record_request(1.0)
    budget.record_request(1.0)
    budget.record_request(1.0)
    budget.record_request(1.0)
    budget.record_request(1.0)
    assert retries_granted(budget, 1.0, 5) == 1  # 30 + 5 x 0.2


def test_the_window_slides_and_old_traffic_is_forgotten() -> None:
    budget = RetryBudget(ratio=0.2, window=10.0, min_per_second=0.0, buckets=10)
    for _ in range(100):
        budget.record_request(0.5)
    assert retries_granted(budget, 0.5, 10) == 10
    for _ in range(100):
        budget.record_request(5.5)
    assert budget.available(5.5) == 30  # 200 requests x 0.2 - 10 retries
    assert budget.available(10.5) == 20  # the first second's slice is gone, with its retries
    assert budget.available(15.5) == 0
    assert budget.available(1000.0) == 0


def test_a_clock_standing_still_or_stepping_back_keeps_counting() -> None:
    budget = RetryBudget(ratio=1.0, window=10.0, min_per_second=0.0)
    budget.record_request(5.0)
    budget.record_request(4.0)
    assert budget.available(3.0) == 2


def test_float_ratio_rounding_does_not_lose_a_retry() -> None:
    budget = RetryBudget(ratio=0.2, window=10.0, min_per_second=0.0)
    for _ in range(15):
        budget.record_request(0.0)
    assert retries_granted(budget, 0.0, 5) == 3


@pytest.mark.parametrize(
    "kwargs", [{"ratio": -0.1}, {"window": 0.0}, {"buckets": 0}, {"min_per_second": -1.0}]
)
def test_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)  # type: ignore[arg-type]
