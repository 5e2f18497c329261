"""The live side of one upstream: which server takes each attempt, and what happened to it.

`UpstreamRuntime` joins the pure pieces of bastion.balance into the one decision the core
asks for per attempt, `acquire(ctx, tried)`:

1. a sticky pin (signed cookie or learned session) names a server that can take the request;
2. otherwise the balancer picks among the primaries (backups only when no primary is usable),
   and a server ramping up after recovery (slow start) may turn part of its picks down;
3. the chosen server is counted in flight. When every usable server is at `max_conns`, the
   request waits in the upstream's FIFO queue (a future); when no server is usable at all,
   NO_SERVER (503).

`release(...)` ends an attempt: the in-flight count, the latency average, passive health
(its state changes are logged) and the next queued request. Active check results arrive by
`report_check`. `replace_servers` swaps in a new server set (from DNS): servers that stay keep
their state, health and sticky pins; a server that left only finishes what it has in flight.
`ServerState.index` is a stable id (never reused), not a position. Nothing here touches
sockets; the queue's futures are the only asyncio.

Workers of one node share what they learn through `share(node)` (bastion.state): each server
is linked to its slot, in-flight counts go to this worker's column there (`max_conns` is
judged by the node-wide sum), health verdicts, ejections and drains written by any process
are taken in when the node's change counter moved (one integer read per request), learned
sticky sessions live in the node's table, and the queue polls for slots other workers free.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, cast

from bastion.balance.balancer import Balancer
from bastion.balance.health import ActiveHealth, HealthEvent, PassivePolicy, ServerHealth
from bastion.balance.retry_budget import RetryBudget
from bastion.balance.select import build_balancer
from bastion.balance.server import ServerState
from bastion.balance.slow_start import SlowStart, choose
from bastion.balance.sticky import LearnedSessions, StickyCookie, derive_key, request_cookie
from bastion.errors import ErrorKind, ProxyError
from bastion.http.headers import header_value
from bastion.proxy.server_set import (
    LiveServer,
    NamedEntry,
    ServerPlan,
    ServerSpec,
    named_entries,
    server_plan,
    static_specs,
)
from bastion.proxy.waiting_room import WaitingRoom
from bastion.state import NodeState, SharedSessions, SlotLink
from bastion.state.layout import HEALTH_UNCHECKED, HEALTH_UP
from bastion.state.node import NodeStateError

if TYPE_CHECKING:
    from bastion.config.model import UpstreamSettings
    from bastion.proxy.context import RequestContext

log = logging.getLogger(__name__)

KeyOf = Callable[["RequestContext"], bytes | None]
RETIRED_KEPT = 256  # servers that left the set, still found by id (pinned NTLM connections)
QUEUE_POLL = 0.005  # seconds: how often a worker's queue looks for slots others freed
EJECTION_SLACK = 0.05  # seconds: a shared ejection this close to ours is ours


class UpstreamRuntime:
    """Server choice, health, stickiness, retry budget and queue of one upstream."""

    def __init__(
        self,
        name: str,
        settings: UpstreamSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._clock = clock
        self._wall = wall  # times shared with other processes are wall-clock
        self._node: NodeState | None = None
        self._links: dict[int, SlotLink] = {}  # by server id, servers of the set
        self._by_slot: dict[int, ServerState] = {}  # slot number -> server of the set
        self._seen = 0  # the node's change counter when its cells were last read
        self._rng = rng or random.Random()
        self._settings = settings
        self.static: tuple[ServerSpec, ...] = static_specs(settings)
        self.named: tuple[NamedEntry, ...] = named_entries(settings)
        self.states: tuple[ServerState, ...] = ()
        self.healths: dict[int, ServerHealth] = {}  # by ServerState.index (a stable id)
        self.check_details: dict[int, str] = {}  # what each server's last active check saw
        self._by_id: dict[int, LiveServer] = {}
        self._by_key: dict[tuple[str, str, int], LiveServer] = {}
        self._retired: OrderedDict[int, LiveServer] = OrderedDict()
        self._next_id = 0
        self._primary: Balancer | None = None
        self._backup: Balancer | None = None
        self._primaries: tuple[ServerState, ...] = ()
        self._position: dict[int, int] = {}  # server id -> its place in the sticky cookie
        self.listeners: list[Callable[[], None]] = []  # told after the set changed
        self._key_of = _key_extractor(settings.hash_key) if settings.balance == "hash" else None
        self._ramping = settings.slow_start > 0
        self._next_deadline: float | None = None  # the earliest end of an ejection
        self.retries = settings.retries
        self.budget = RetryBudget(ratio=settings.retry_budget)
        self.room: WaitingRoom[ServerState] = WaitingRoom(
            settings.queue.max, settings.queue.timeout
        )
        self.cookie: StickyCookie | None = None
        self.learned: LearnedSessions | SharedSessions | None = None
        sticky = settings.sticky
        self._cookie_key = b""
        if sticky is not None and sticky.cookie is not None:
            # Without a secret the key depends on the upstream's name only, so adding or
            # removing a server keeps every other pin.
            self._cookie_key = sticky.secret.encode() if sticky.secret else derive_key(name, ())
        elif sticky is not None and sticky.learn is not None:
            self.learned = LearnedSessions(
                sticky.learn, max_entries=sticky.max_entries, ttl=sticky.ttl
            )
        self.replace_servers(self.static)

    # -- the server set -----------------------------------------------------------------

    def replace_servers(self, specs: Iterable[ServerSpec]) -> None:
        """Serve by `specs` from now on (the first of a repeated key counts).

        A server whose (scheme, address, port) stays keeps its state and health (its weight
        and limits follow the new spec); new ones start fresh; removed ones are dropped, their
        requests in flight still end by `release`. Balancers and sticky tokens are rebuilt:
        a token names a server's identity, so pins to servers that stay keep working.
        """
        states: list[LiveServer] = []
        by_key: dict[tuple[str, str, int], LiveServer] = {}
        for spec in specs:
            if spec.key in by_key:
                continue
            state = self._by_key.get(spec.key)
            if state is None or state.spec.tls_name != spec.tls_name:
                state = self._new_server(spec)
            elif state.spec != spec:
                state.spec = spec
                state.weight, state.max_conns = spec.weight, spec.max_conns
                state.backup = spec.backup
            by_key[spec.key] = state
            states.append(state)
        for old in self._by_key.values():
            if by_key.get(old.spec.key) is not old:
                self._retire(old)
        self._by_key = by_key
        self._by_id = {state.index: state for state in states}
        self.states = tuple(states)
        self._rebuild()
        for listener in list(self.listeners):
            listener()
        if self.room:
            self.room.slot_freed()

    def _new_server(self, spec: ServerSpec) -> LiveServer:
        state = LiveServer(self._next_id, spec, server_plan(spec, self._settings))
        self._next_id += 1
        self.healths[state.index] = self._health(state, self._settings)
        if self._node is not None:
            self._link(state)
        return state

    def _retire(self, state: LiveServer) -> None:
        self.healths.pop(state.index, None)
        link = self._links.pop(state.index, None)
        if link is not None and self._by_slot.get(link.slot) is state:
            del self._by_slot[link.slot]
        self.check_details.pop(state.index, None)
        self._retired[state.index] = state
        while len(self._retired) > RETIRED_KEPT:
            self._retired.popitem(last=False)

    def _rebuild(self) -> None:
        settings, clock = self._settings, self._clock
        primaries = [state for state in self.states if not state.backup]
        backups = [state for state in self.states if state.backup]
        self._primary = (
            build_balancer(settings.balance, primaries, rng=self._rng, clock=clock)
            if primaries
            else None
        )
        self._backup = (
            build_balancer(settings.balance, backups, rng=self._rng, clock=clock)
            if backups
            else None
        )
        self._primaries = tuple(primaries)
        sticky = settings.sticky
        if sticky is not None and sticky.cookie is not None:
            live = cast("tuple[LiveServer, ...]", self.states)
            identities = [state.spec.identity for state in live]
            self.cookie = StickyCookie(sticky.cookie, self._cookie_key, identities)
            self._position = {state.index: at for at, state in enumerate(self.states)}
        self._plan_tick()

    def inherit(self, old: UpstreamRuntime) -> None:
        """After a reload: servers that stay keep what the old runtime learnt of them —
        whether health checks have them down, an ejection in progress, their latency — so a
        dead server does not get traffic again until its checks catch up."""
        now = self._clock()
        for state in self.states:
            previous = old._by_key.get(cast(LiveServer, state).spec.key)
            if previous is None:
                continue
            state.latency, state.latency_at = previous.latency, previous.latency_at
            health, before = self.healths[state.index], old.healths.get(previous.index)
            if before is None:
                continue
            if health.active is not None and before.active is not None:
                health.active.up = before.active.up
            if (
                health.passive is not None
                and before.passive is not None
                and health.passive.policy == before.passive.policy
            ):
                health.passive = before.passive
            health.usable_since = before.usable_since
            health.drained = before.drained
            state.usable = health.judged_usable()
        self._plan_tick()
        self._tick_if_due(now)

    # -- node state shared with the other workers -----------------------------------------

    def share(self, node: NodeState) -> None:
        """Keep this upstream's per-node state in `node`, with the node's other workers: from
        now on the servers' slots say what every worker sees (see the module docstring)."""
        self._node = node
        sticky = self._settings.sticky
        if self.learned is not None and sticky is not None and sticky.learn is not None:
            self.learned = SharedSessions(node, self.name, sticky.learn, ttl=sticky.ttl)
        self.room.poll = QUEUE_POLL
        self._seen = node.changes
        for state in self.states:
            self._link(state)

    def _link(self, state: ServerState) -> None:
        """Bind `state` to its slot and take in what the node knows of it."""
        node = cast(NodeState, self._node)
        try:
            link = node.bind(
                self.name,
                state.label,
                weight=state.weight,
                max_conns=state.max_conns,
                backup=state.backup,
            )
        except NodeStateError as error:
            log.warning("upstream %s: %s not shared: %s", self.name, state.label, error)
            return
        self._links[state.index] = link
        self._by_slot[link.slot] = state
        state.shared = link
        self._take_in(state, link)

    def _sync(self) -> None:
        """The node's change counter moved: re-read the slots of this upstream's servers."""
        self._seen = cast(NodeState, self._node).changes
        for state in self.states:
            link = self._links.get(state.index)
            if link is not None:
                self._take_in(state, link)
        if self.room:
            self.room.slot_freed()

    def _take_in(self, state: ServerState, link: SlotLink) -> None:
        """Apply the slot's drain, active verdict and ejection to the local health."""
        health = self.healths.get(state.index)
        if health is None:
            return
        now = self._clock()
        events = list(health.set_drained(link.drained, now))
        verdict = link.health
        if verdict != HEALTH_UNCHECKED and health.active is not None:
            events += health.set_active(verdict == HEALTH_UP, now)
        until = link.ejected_until
        passive = health.passive
        if until and passive is not None:
            deadline = now + (until - self._wall())
            if not (passive.ejected and abs(passive.ejected_until - deadline) < EJECTION_SLACK):
                events += health.eject_until(deadline, now)
        if events:
            self._plan_tick()
            for event in events:
                log.debug("upstream %s: %s (from the node's shared state)", self.name, event)

    def _publish_ejection(self, state: ServerState, health: ServerHealth, now: float) -> None:
        """This worker ejected `state`: every worker of the node honours it."""
        link = self._links.get(state.index)
        passive = health.passive
        if link is not None and passive is not None and passive.ejected:
            link.eject(self._wall() + (passive.ejected_until - now))

    def _session_now(self) -> float:
        """The learn table's clock: wall-clock when shared between processes."""
        return self._wall() if self._node is not None else self._clock()

    def _learnt(self, index: int | None) -> ServerState | None:
        """The server a learn-table entry names (a slot number when shared)."""
        if index is None:
            return None
        return self._by_slot.get(index) if self._node is not None else self._by_id.get(index)

    def _learn_index(self, state: ServerState) -> int | None:
        """What the learn table stores for `state` (its slot number when shared)."""
        if self._node is None:
            return state.index
        link = self._links.get(state.index)
        return link.slot if link is not None else None

    def _tick_if_due(self, now: float) -> None:
        if self._next_deadline is not None and now >= self._next_deadline:
            self._tick()

    def server_plan(self, state: ServerState) -> ServerPlan:
        """How to reach `state` (also after it left the set)."""
        return cast(LiveServer, state).plan

    def state_of(self, index: int) -> ServerState | None:
        """The server with this id, in the set or recently left; None when forgotten."""
        return self._by_id.get(index) or self._retired.get(index)

    @staticmethod
    def _health(state: ServerState, settings: UpstreamSettings) -> ServerHealth:
        passive = settings.passive
        policy = (
            PassivePolicy(
                failures=passive.failures,
                window=passive.window,
                eject=passive.eject,
                max_eject=max(passive.eject, min(300.0, passive.eject * 10)),
            )
            if passive.failures > 0
            else None
        )
        health = settings.health
        return ServerHealth(
            state,
            passive=policy,
            active=ActiveHealth(rise=health.rise, fall=health.fall) if health else None,
            slow_start=SlowStart(settings.slow_start) if settings.slow_start > 0 else None,
        )

    # -- choosing ---------------------------------------------------------------------

    def acquire(
        self, ctx: RequestContext, tried: Collection[ServerState] = ()
    ) -> ServerState | asyncio.Future[ServerState]:
        """The server for this attempt, counted in flight, or a future of it (the queue).

        Raises NO_SERVER when no server is usable, QUEUE_FULL when the queue is full.
        """
        node = self._node
        if node is not None and node.changes != self._seen:
            self._sync()
        if self._next_deadline is not None and self._clock() >= self._next_deadline:
            self._tick()
        if not self.room:
            state = self._take(ctx, tried)
            if state is not None:
                return state
        if not self._any_usable(tried):
            raise ProxyError(ErrorKind.NO_SERVER, f"no usable server in upstream {self.name}")
        if node is not None:
            return self.room.enter(lambda: self._take_shared(ctx, tried))
        return self.room.enter(lambda: self._take(ctx, tried))

    def _take_shared(
        self, ctx: RequestContext, tried: Collection[ServerState]
    ) -> ServerState | None:
        """`_take` for a queued request of a worker sharing node state (the queue polls)."""
        node = cast(NodeState, self._node)
        if node.changes != self._seen:
            self._sync()
        return self._take(ctx, tried)

    def _take(self, ctx: RequestContext, tried: Collection[ServerState]) -> ServerState | None:
        """Count the request in flight on the server it goes to; None: it must wait."""
        state = self._pinned(ctx)
        if state is None or not state.usable or state in tried:
            key = self._key_of(ctx) if self._key_of is not None else None
            state = self._pick(key, tried)
            while state is not None and state.shared is not None and state.full:
                tried = {*tried, state}  # full across the node: balancers see local counts
                state = self._pick(key, tried)
        elif state.full:
            return None  # a pinned client waits for its server rather than losing its session
        if state is None:
            return None
        return self.occupy(state)

    @staticmethod
    def occupy(state: ServerState) -> ServerState:
        """Count a request in flight on `state` (`release` ends it)."""
        state.in_flight += 1
        shared = state.shared
        if shared is not None:
            shared.add_in_flight(1)
        return state

    def _pinned(self, ctx: RequestContext) -> ServerState | None:
        """The server a sticky pin names (its id noted in `ctx` for re-pinning)."""
        state: ServerState | None = None
        if self.cookie is not None:
            position = self.cookie.pinned(_cookie_headers(ctx.head.headers))
            state = self.states[position] if position is not None else None
        elif self.learned is not None:
            index = self.learned.pinned(_cookie_headers(ctx.head.headers), self._session_now())
            state = self._learnt(index)
        ctx.sticky_index = state.index if state is not None else None
        return state

    def _pick(self, key: bytes | None, tried: Collection[ServerState]) -> ServerState | None:
        state = self._pick_tier(self._primary, key, tried) if self._primary is not None else None
        if state is None and self._backup is not None and not self._any_primary_usable(tried):
            state = self._pick_tier(self._backup, key, tried)
        return state

    def _pick_tier(
        self, balancer: Balancer, key: bytes | None, tried: Collection[ServerState]
    ) -> ServerState | None:
        pick = balancer.pick
        if not self._ramping:
            return pick(key, tried)
        now = self._clock()
        healths = self.healths
        return choose(
            lambda excluded: pick(key, excluded),
            lambda state: healths[state.index].share(now),
            self._rng.random,
            tried,
        )

    def has_other_server(self, tried: Collection[ServerState], current: ServerState | None) -> bool:
        """Whether a server other than `tried` and `current` is usable (a retry could go)."""
        return any(
            state.usable and state is not current and state not in tried for state in self.states
        )

    def _any_primary_usable(self, tried: Collection[ServerState]) -> bool:
        """A primary could take this request (if not busy): backups stay out of it."""
        return any(state.usable and state not in tried for state in self._primaries)

    def _any_usable(self, tried: Collection[ServerState]) -> bool:
        return any(state.usable and state not in tried for state in self.states)

    def sticky_set_cookie(self, ctx: RequestContext, state: ServerState) -> bytes | None:
        """The Set-Cookie that (re)pins the client to `state`, when the cookie mode needs one;
        in learn mode a client whose pinned server failed over is moved in the table."""
        if self.cookie is not None:
            chosen = self._position.get(state.index)
            if chosen is None:
                return None  # the server left the set while the request was on it
            pinned = None if ctx.sticky_index is None else self._position.get(ctx.sticky_index)
            return self.cookie.repin(pinned, chosen, secure=ctx.client.tls is not None)
        if self.learned is not None and ctx.sticky_index not in (None, state.index):
            index = self._learn_index(state)
            if index is not None:
                self.learned.repin(_cookie_headers(ctx.head.headers), index, self._session_now())
        return None

    def learn_session(
        self, state: ServerState, response_headers: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """Learn mode: remember the session cookie the server just set."""
        if self.learned is not None:
            set_cookies = [value for name, value in response_headers if name == b"set-cookie"]
            index = self._learn_index(state)
            if set_cookies and index is not None:
                self.learned.learn(set_cookies, index, self._session_now())

    # -- results ----------------------------------------------------------------------

    def release(self, state: ServerState, *, failed: bool, latency: float | None = None) -> None:
        """An attempt on `state` is over: `failed` counts for passive health."""
        state.in_flight -= 1
        shared = state.shared
        if shared is not None:
            shared.add_in_flight(-1)
        now = self._clock()
        health = self.healths.get(state.index)
        if health is None:
            pass  # the server left the set (DNS): nothing to track any more
        elif failed:
            events = health.failure(now)
            self._log(events)
            if events and shared is not None:
                self._publish_ejection(state, health, now)
        else:
            if latency is not None:
                state.observe_latency(latency, now)
                if shared is not None:
                    shared.set_latency(state.latency)
            self._log(health.success(now))
        if self.room:
            self.room.slot_freed()

    def report_check(self, index: int, passed: bool, detail: str) -> None:
        """One active health check result (from the node's checker), by server id."""
        health = self.healths.get(index)
        if health is None:
            return  # the server left the set while it was being checked
        self.check_details[index] = detail
        events = health.check(passed, self._clock())
        self._log(events, f" (check: {detail})")
        link = self._links.get(index)
        if link is not None and health.active is not None:
            link.record_check(health.active.up, detail, self._wall())
        if events and self.room:
            self.room.slot_freed()

    def set_drained(self, index: int, drained: bool) -> bool:
        """Drain the server with id `index` (no new requests, sticky pins included; those in
        flight finish) or enable it again; False when no server of the set has that id."""
        health = self.healths.get(index)
        if health is None:
            return False
        self._log(health.set_drained(drained, self._clock()))
        if self.room:
            self.room.slot_freed()  # an enabled server may take a queued request
        return True

    def _tick(self) -> None:
        """End ejections that are over (so an idle server comes back on time)."""
        now = self._clock()
        for health in list(self.healths.values()):
            deadline = health.next_deadline
            if deadline is not None and deadline <= now:
                self._log(health.tick(now))
        self._next_deadline = None
        self._plan_tick()
        if self.room:
            self.room.slot_freed()  # a server back from ejection may take a queued request

    def _plan_tick(self) -> None:
        deadlines = [h.next_deadline for h in self.healths.values() if h.next_deadline is not None]
        self._next_deadline = min(deadlines) if deadlines else None

    def _log(self, events: Sequence[HealthEvent], detail: str = "") -> None:
        """Log every state change (`detail`: what the check saw) and re-plan the ticks."""
        if events:
            self._plan_tick()
        for event in events:
            level = logging.WARNING if event.alarming else logging.INFO
            log.log(level, "upstream %s: %s%s", self.name, event, detail)


def _cookie_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    return [value for name, value in headers if name == b"cookie"]


def _key_extractor(hash_key: str) -> KeyOf:
    """How `hash_key` ("ip", "uri", "header:NAME", "cookie:NAME") reads a request."""
    if hash_key == "ip":
        return lambda ctx: ctx.client_ip.encode()
    if hash_key == "uri":
        return lambda ctx: ctx.head.target
    kind, _, name = hash_key.partition(":")
    field = name.encode()
    if kind == "header":
        return lambda ctx: header_value(ctx.head.headers, field)
    return lambda ctx: request_cookie(_cookie_headers(ctx.head.headers), field)
