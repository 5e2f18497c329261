"""Whether a server may take requests: active checks, passive ejection, and their log lines.

Two judges decide, and a server is usable only when both agree:

- **active checks** (`ActiveHealth`): the results of periodic probes, counted as streaks —
  `fall` failures in a row take a server down, `rise` successes in a row bring it back up.
  The probing itself (sockets, timers, one prober per node) lives elsewhere and only feeds
  results in here.
- **passive tracking** (`PassiveHealth`): what real requests see. `failures` failures within
  `window` seconds eject the server for `eject` seconds; then it is on probation — usable, but
  one failure ejects it again for twice as long (up to `max_eject`), and one success ends the
  probation. The caller decides what a failure is (refused connection, 502/503/504, timeout).

`ServerHealth` joins both for one `ServerState`, keeps `ServerState.usable` in step and
returns a `HealthEvent` for every change so the caller can log it. It also remembers when the
server last became usable, for the slow-start ramp (`slow_start.SlowStart`).

Pure: no sockets, no asyncio, no clock — every method takes `now` (monotonic seconds). Nothing
here knows about configuration files, HTTP or logging.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from bastion.balance.server import ServerState
from bastion.balance.slow_start import SlowStart

# Ejections double from `eject` at most this many times in a row (2**16 * eject is past any cap).
_MAX_LEVEL = 16


class Change(enum.Enum):
    """What happened to a server's health."""

    UP = "up"  # active checks: `rise` successes in a row
    DOWN = "down"  # active checks: `fall` failures in a row
    EJECTED = "ejected"  # passive: too many failures, or a failure on probation
    PROBATION = "probation"  # passive: ejection over, usable again on trial
    RECOVERED = "recovered"  # passive: a success on probation
    DRAINED = "drained"  # an operator took it out of rotation (admin API)
    ENABLED = "enabled"  # an operator put it back


# A judge's verdict before it is tied to a server: what changed, and why (for the log).
Step = tuple[Change, str]


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """One change to log: `str(event)` is the message, `alarming` suggests WARNING over INFO."""

    index: int
    label: str
    change: Change
    reason: str
    usable: bool  # the server's usability after the change

    @property
    def alarming(self) -> bool:
        return self.change in (Change.DOWN, Change.EJECTED)

    def __str__(self) -> str:
        state = "takes requests" if self.usable else "takes no requests"
        return f"server {self.label} {self.change.value}: {self.reason}; it {state}"


class ActiveHealth:
    """Up/down from active check results: `fall` failures in a row → down, `rise` successes in
    a row → up. `up` is the starting state (default up, so a restart does not refuse traffic
    until the first probes have run)."""

    __slots__ = ("_streak", "fall", "rise", "up")

    def __init__(self, *, rise: int = 2, fall: int = 3, up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall are at least 1")
        self.rise = rise
        self.fall = fall
        self.up = up
        self._streak = 0  # results in a row that disagree with `up`

    def record(self, ok: bool) -> Step | None:
        """Count one check result; a change when it completes a streak."""
        if ok == self.up:
            self._streak = 0
            return None
        self._streak += 1
        needed = self.rise if ok else self.fall
        if self._streak < needed:
            return None
        return self._become(ok, f"{needed} health checks in a row {'passed' if ok else 'failed'}")

    def force(self, up: bool, reason: str = "health checker's verdict") -> Step | None:
        """Take a verdict reached elsewhere (the node's prober), with no streak counting."""
        if up == self.up:
            return None
        return self._become(up, reason)

    def _become(self, up: bool, reason: str) -> Step:
        self.up = up
        self._streak = 0
        return (Change.UP if up else Change.DOWN), reason


@dataclass(frozen=True, slots=True)
class PassivePolicy:
    """`passive = { failures, window, eject }`, in seconds; `max_eject` caps the doubling."""

    failures: int = 5
    window: float = 10.0
    eject: float = 30.0
    max_eject: float = 300.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError("passive failures is at least 1")
        if self.window <= 0 or self.eject <= 0:
            raise ValueError("passive window and eject are longer than 0s")
        if self.max_eject < self.eject:
            raise ValueError("passive max_eject is at least eject")


DEFAULT_PASSIVE = PassivePolicy()  # on unless configured off, as CONFIG.md says


class PassiveState(enum.Enum):
    HEALTHY = "healthy"
    EJECTED = "ejected"
    PROBATION = "probation"


class PassiveHealth:
    """Ejection by failures of real requests.

    Ejection lengths: `eject * 2**level`, capped at `max_eject`. Each ejection raises the level
    by one; each full `eject` period the server spends usable since its last ejection lowers it
    by one (as Envoy's outlier detection), so a server that fails on probation stays out ever
    longer, and one that recovered for good starts again from `eject`.
    """

    __slots__ = ("_failures", "_level", "_usable_since", "ejected_until", "policy", "state")

    def __init__(self, policy: PassivePolicy) -> None:
        self.policy = policy
        self.state = PassiveState.HEALTHY
        self.ejected_until = 0.0  # meaningful while EJECTED
        self._failures: deque[float] = deque(maxlen=policy.failures)  # times of recent ones
        self._level = 0
        self._usable_since = 0.0

    @property
    def ejected(self) -> bool:
        return self.state is PassiveState.EJECTED

    def tick(self, now: float) -> Step | None:
        """End an ejection whose time is up: the server goes on probation."""
        if self.state is not PassiveState.EJECTED or now < self.ejected_until:
            return None
        self.state = PassiveState.PROBATION
        self._usable_since = now
        return Change.PROBATION, "ejection time over; one failure ejects it again"

    def success(self, now: float) -> Step | None:
        """A request the server answered well (responses to requests sent before an
        ejection are ignored while it lasts)."""
        if self.state is not PassiveState.PROBATION:
            return None
        self.state = PassiveState.HEALTHY
        self._failures.clear()
        return Change.RECOVERED, "a request succeeded on probation"

    def failure(self, now: float) -> Step | None:
        """A request the server failed; an ejection when it is one too many."""
        if self.state is PassiveState.EJECTED:
            return None
        if self.state is PassiveState.PROBATION:
            return self._eject(now, "a request failed on probation")
        failures = self._failures
        failures.append(now)
        policy = self.policy
        if len(failures) < policy.failures or now - failures[0] > policy.window:
            return None
        return self._eject(now, f"{policy.failures} failures within {policy.window:g}s")

    def eject_until(self, deadline: float, now: float) -> Step | None:
        """Take an ejection decided elsewhere (another worker of the node) that lasts until
        `deadline`; nothing when already ejected at least that long, or when it is over."""
        if deadline <= now or (self.ejected and self.ejected_until >= deadline):
            return None
        self.state = PassiveState.EJECTED
        self.ejected_until = deadline
        self._failures.clear()
        return Change.EJECTED, f"ejected by another worker for {deadline - now:.3g}s"

    def _eject(self, now: float, why: str) -> Step:
        policy = self.policy
        rested = int(max(now - self._usable_since, 0.0) // policy.eject)
        level = max(self._level - rested, 0)
        duration = min(policy.eject * 2**level, policy.max_eject)
        self._level = min(level + 1, _MAX_LEVEL)
        self.state = PassiveState.EJECTED
        self.ejected_until = now + duration
        self._failures.clear()
        return Change.EJECTED, f"{why}; out for {duration:g}s"


class ServerHealth:
    """Everything that decides whether one server takes requests; writes `server.usable`.

    Every method returns the changes it caused, as `HealthEvent`s to log (usually none, as
    an empty tuple). Call `tick(now)` at `next_deadline` (or before picking) so that an
    ejection ends on time even when no request reaches the server.
    """

    __slots__ = ("active", "drained", "passive", "server", "slow_start", "usable_since")

    def __init__(
        self,
        server: ServerState,
        *,
        passive: PassivePolicy | None = DEFAULT_PASSIVE,
        active: ActiveHealth | None = None,
        slow_start: SlowStart | None = None,
    ) -> None:
        self.server = server
        self.passive = PassiveHealth(passive) if passive is not None else None
        self.active = active  # None: no active checks, the server counts as up
        self.slow_start = slow_start
        # When the server last went from unusable to usable; None: usable from the start,
        # so no ramp (every server starting together would ramp together for nothing).
        self.usable_since: float | None = None
        self.drained = False  # an operator's drain: no new requests, in-flight ones finish
        server.usable = self._judged_usable()

    @property
    def next_deadline(self) -> float | None:
        """When `tick` has something to do: the end of the current ejection."""
        passive = self.passive
        return passive.ejected_until if passive is not None and passive.ejected else None

    def tick(self, now: float) -> tuple[HealthEvent, ...]:
        passive = self.passive
        if passive is None or not passive.ejected:
            return ()
        return self._settle(now, passive.tick(now))

    def success(self, now: float) -> tuple[HealthEvent, ...]:
        """A request this server answered well."""
        passive = self.passive
        if passive is None or passive.state is PassiveState.HEALTHY:
            return ()  # the usual case, on every response: nothing to do
        expired = passive.tick(now)
        return self._settle(now, expired, passive.success(now))

    def failure(self, now: float) -> tuple[HealthEvent, ...]:
        """A request this server failed (the caller decides what counts)."""
        passive = self.passive
        if passive is None:
            return ()
        expired = passive.tick(now)
        return self._settle(now, expired, passive.failure(now))

    def check(self, ok: bool, now: float) -> tuple[HealthEvent, ...]:
        """One active check result (on the node that probes)."""
        if self.active is None:
            raise ValueError(f"server {self.server.label} has no active checks configured")
        return self._settle(now, self.active.record(ok))

    def set_active(self, up: bool, now: float) -> tuple[HealthEvent, ...]:
        """The active verdict reached by the node's prober (on every other worker); starts
        active tracking if the server had none."""
        if self.active is None:
            self.active = ActiveHealth()
        return self._settle(now, self.active.force(up))

    def set_drained(self, drained: bool, now: float) -> tuple[HealthEvent, ...]:
        """Take the server out of rotation (`drained`) or put it back, whatever its health."""
        if drained == self.drained:
            return ()
        self.drained = drained
        if drained:
            return self._settle(now, (Change.DRAINED, "at an operator's request"))
        return self._settle(now, (Change.ENABLED, "at an operator's request"))

    def eject_until(self, deadline: float, now: float) -> tuple[HealthEvent, ...]:
        """A passive ejection decided by another worker, until `deadline` (monotonic)."""
        passive = self.passive
        if passive is None:
            return ()
        return self._settle(now, passive.eject_until(deadline, now))

    def share(self, now: float) -> float:
        """The slow-start share of its normal traffic the server may take now (1.0: all)."""
        if self.slow_start is None:
            return 1.0
        return self.slow_start.share(self.usable_since, now)

    def admit(self, now: float, random_value: float) -> bool:
        """Accept the balancer's pick of this server? `random_value` uniform in [0, 1)."""
        return random_value < self.share(now)

    def judged_usable(self) -> bool:
        """Whether the active and passive verdicts let the server take requests."""
        return self._judged_usable()

    def _judged_usable(self) -> bool:
        active_up = self.active is None or self.active.up
        passive_ok = self.passive is None or not self.passive.ejected
        return active_up and passive_ok and not self.drained

    def _settle(self, now: float, *steps: Step | None) -> tuple[HealthEvent, ...]:
        done = [step for step in steps if step is not None]
        if not done:
            return ()
        server = self.server
        usable = self._judged_usable()
        if usable and not server.usable:
            self.usable_since = now
        server.usable = usable
        return tuple(
            HealthEvent(server.index, server.label, change, reason, usable)
            for change, reason in done
        )
