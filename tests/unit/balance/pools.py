"""Pools of `ServerState`s for the balancer tests, and counting what balancers pick."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from bastion.balance.balancer import Balancer
from bastion.balance.server import ServerState


def pool(*weights: int) -> list[ServerState]:
    """Servers labelled a, b, c, … with these weights."""
    return [
        ServerState(index, chr(ord("a") + index), weight=weight)
        for index, weight in enumerate(weights)
    ]


def labelled(*labels: str) -> list[ServerState]:
    """Servers of weight 1 with these labels."""
    return [ServerState(index, label) for index, label in enumerate(labels)]


def sequence(balancer: Balancer, picks: int) -> str:
    """The labels of `picks` picks in a row, joined (servers must have one-letter labels)."""
    chosen = [balancer.pick(None) for _ in range(picks)]
    return "".join(server.label if server else "-" for server in chosen)


def shares(balancer: Balancer, picks: int, keys: Sequence[bytes] | None = None) -> dict[str, float]:
    """The fraction of `picks` picks (one per key when keys are given) each label got."""
    counts: Counter[str] = Counter()
    for number in range(picks):
        server = balancer.pick(keys[number] if keys else None)
        counts[server.label if server else "-"] += 1
    return {label: count / picks for label, count in counts.items()}
