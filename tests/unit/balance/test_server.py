"""The live server record: fullness and the peak-EWMA latency."""

from __future__ import annotations

import math

import pytest

from bastion.balance.server import LATENCY_DECAY, ServerState


def test_full_only_with_a_limit() -> None:
    unlimited = ServerState(0, "a")
    unlimited.in_flight = 1000
    limited = ServerState(1, "b", max_conns=2)
    limited.in_flight = 1
    assert not unlimited.full and not limited.full
    limited.in_flight = 2
    assert limited.full


def test_weight_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        ServerState(0, "a", weight=0)


def test_first_sample_is_the_estimate() -> None:
    server = ServerState(0, "a")
    assert server.latency_estimate(0.0) == 0.0
    server.observe_latency(0.2, now=100.0)
    assert server.latency_estimate(100.0) == 0.2


def test_a_slower_response_counts_in_full_at_once() -> None:
    server = ServerState(0, "a")
    server.observe_latency(0.01, now=0.0)
    server.observe_latency(0.5, now=0.001)
    assert server.latency == 0.5


def test_faster_responses_pull_the_average_down_with_time() -> None:
    server = ServerState(0, "a")
    server.observe_latency(1.0, now=0.0)
    server.observe_latency(0.001, now=0.01)  # right after: almost no weight
    before = server.latency
    assert before > 0.99
    server.observe_latency(0.001, now=0.01 + LATENCY_DECAY)  # one time constant later
    assert server.latency == pytest.approx(before / math.e + 0.001 * (1 - 1 / math.e))


def test_estimate_decays_without_samples_so_the_server_is_tried_again() -> None:
    server = ServerState(0, "a")
    server.observe_latency(2.0, now=0.0)
    assert server.latency_estimate(0.0) == 2.0
    assert server.latency_estimate(LATENCY_DECAY) == pytest.approx(2.0 / math.e)
    assert server.latency_estimate(10 * LATENCY_DECAY) < 0.001
    assert server.latency == 2.0  # reading changes nothing
