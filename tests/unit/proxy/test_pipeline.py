"""The pipeline's own small parts (bastion.proxy.pipeline)."""

from __future__ import annotations

import re

from bastion.proxy.pipeline import RequestIds


def test_request_ids_are_a_per_process_prefix_then_a_counter() -> None:
    ids = RequestIds()
    first, second = ids.next(), ids.next()
    assert re.fullmatch(r"[0-9a-f]{20}", first) and re.fullmatch(r"[0-9a-f]{20}", second)
    assert first[:12] == second[:12]
    assert (int(first[12:], 16), int(second[12:], 16)) == (1, 2)
    assert RequestIds().next()[:12] != first[:12]  # random: 1 in 2**48 to collide
