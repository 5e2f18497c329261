"""The retry budget of an upstream: retries may add at most `ratio` to its traffic.

Each request the clients send deposits; each retry withdraws. Over a sliding `window` a retry
is allowed while

    retries + 1  <=  ratio * requests  +  min_per_second * window

The second term is a small reserve so an upstream with little traffic can still retry (as in
Finagle's and Linkerd's budgets); under load the first term rules, so when every server fails
the proxy sends at most `1 + ratio` times the client traffic instead of `1 + retries` times.
Retries do not deposit: `ratio` is retries per original request.

The window is kept as `buckets` fixed slices of counters, so memory and time per call stay
constant however busy the upstream is. Pure: `now` (monotonic seconds) is passed in.
"""

from __future__ import annotations

# Absorbs float error in `ratio * requests` (0.2 * 15 is 3.0000000000000004).
_EPSILON = 1e-9


class RetryBudget:
    """Per upstream: `record_request(now)` for every client request, `try_retry(now)` before
    every retry (which it counts when it allows it)."""

    __slots__ = (
        "_requests",
        "_retries",
        "_slot",
        "_slot_width",
        "_total_requests",
        "_total_retries",
        "min_per_second",
        "ratio",
        "window",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        window: float = 10.0,
        min_per_second: float = 3.0,
        buckets: int = 10,
    ) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ValueError("retry budget ratio and reserve are not negative")
        if window <= 0 or buckets < 1:
            raise ValueError("retry budget window is longer than 0s, with at least 1 bucket")
        self.ratio = ratio
        self.window = window
        self.min_per_second = min_per_second
        self._slot_width = window / buckets
        self._requests = [0] * buckets
        self._retries = [0] * buckets
        self._total_requests = 0
        self._total_retries = 0
        self._slot: int | None = None  # the slice `now` fell in at the last call

    def record_request(self, now: float) -> None:
        """Deposit: one request from a client (not a retry)."""
        self._requests[self._advance(now)] += 1
        self._total_requests += 1

    def try_retry(self, now: float) -> bool:
        """Withdraw one retry if the budget allows it; False means do not retry."""
        bucket = self._advance(now)
        if self._total_retries + 1 > self._allowance() + _EPSILON:
            return False
        self._retries[bucket] += 1
        self._total_retries += 1
        return True

    def available(self, now: float) -> int:
        """How many retries the budget would allow right now (for metrics and the admin API)."""
        self._advance(now)
        return max(int(self._allowance() - self._total_retries + _EPSILON), 0)

    def _allowance(self) -> float:
        return self.ratio * self._total_requests + self.min_per_second * self.window

    def _advance(self, now: float) -> int:
        """Forget the slices that left the window; the bucket index for `now`."""
        slot = int(now // self._slot_width)
        buckets = len(self._requests)
        last = self._slot
        if last is None or slot - last >= buckets:
            self._clear()
        elif slot > last:
            for gone in range(last + 1, slot + 1):
                i = gone % buckets
                self._total_requests -= self._requests[i]
                self._total_retries -= self._retries[i]
                self._requests[i] = 0
                self._retries[i] = 0
        else:
            slot = last  # the clock stood still (or stepped back): stay in the current slice
        self._slot = slot
        return slot % buckets

    def _clear(self) -> None:
        for counts in (self._requests, self._retries):
            for i in range(len(counts)):
                counts[i] = 0
        self._total_requests = 0
        self._total_retries = 0
