"""The node-state region: server slots, worker columns, drains, and the change counter.

`NodeState` is one process's handle on the region (see the package docstring for the API).
A worker's handle owns one in-flight column; `bind` gives it a `SlotLink` per server, through
which the runtime counts requests and reads and writes what the other workers must see.

Concurrency, without atomics: every cell has one writer at a time, or is written under the
region's `fcntl.lockf` lock. In-flight cells: only the column's owner writes them (the node
total is a sum). Slots are only appended, under the lock, their key written before `used`.
Health verdicts, ejection deadlines and drains are plain writes followed by a bump of the
change counter under the lock, so a reader that saw the counter's new value also sees them.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bastion.state import layout as lay


class NodeStateError(Exception):
    """The region is not a node-state region of this layout, or has no room left."""


@dataclass(frozen=True, slots=True)
class ServerView:
    """One server as the admin API lists it (see the package docstring)."""

    upstream: str
    index: int
    label: str
    weight: int
    max_conns: int
    backup: bool
    in_flight: int
    health: str
    health_detail: str
    checked_at: float
    ejected_until: float
    drained: bool
    latency: float
    generation: int

    @property
    def state(self) -> str:
        """ "drained", "down", "ejected" or "up": the first that applies, now."""
        if self.drained:
            return "drained"
        if self.health == "down":
            return "down"
        if self.ejected_until > time.time():
            return "ejected"
        return "up"


_CHANGES = lay.H_CHANGES // 8
_HEALTH_NAMES = {lay.HEALTH_UNCHECKED: "unchecked", lay.HEALTH_UP: "up", lay.HEALTH_DOWN: "down"}


class NodeState:
    """A handle on the shared region; `create` (supervisor) or `attach` (worker)."""

    def __init__(self, fd: int, *, owns_fd: bool, claim_column: bool) -> None:
        self.fd = fd
        self._owns_fd = owns_fd
        size = os.fstat(fd).st_size
        if size < lay.HEADER_SIZE:
            raise NodeStateError(f"node-state region of {size} bytes is too small")
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.ints = memoryview(self._map).cast("i")
        self.longs = memoryview(self._map).cast("q")
        self.doubles = memoryview(self._map).cast("d")
        if self._map[lay.H_MAGIC : lay.H_MAGIC + 8] != lay.MAGIC:
            self._release_views()
            raise NodeStateError("not a bastion node-state region")
        if self.ints[lay.H_VERSION // 4] != lay.VERSION:
            self._release_views()
            raise NodeStateError(f"node-state layout {self.ints[lay.H_VERSION // 4]} unknown")
        self.slot_capacity = self.ints[lay.H_SLOT_CAPACITY // 4]
        self.session_capacity = self.ints[lay.H_SESSION_CAPACITY // 4]
        self.slots_at = lay.HEADER_SIZE
        self.sessions_at = lay.HEADER_SIZE + self.slot_capacity * lay.SLOT_SIZE
        if size < lay.region_size(self.slot_capacity, self.session_capacity):
            self._release_views()
            raise NodeStateError("node-state region shorter than its header says")
        self._known: dict[bytes, int] = {}  # key -> slot number, for slots [0, _scanned)
        self._ordinals: dict[bytes, int] = {}  # upstream -> slots seen of it
        self._scanned = 0
        self.generation_bound = self.generation  # what this process's binds are tagged with
        self.column = self._claim_column() if claim_column else -1

    # -- opening and closing --------------------------------------------------------------

    @classmethod
    def create(cls, *, servers: int = 0, sessions: int = 0) -> NodeState:
        """A new region (memfd) for `servers` configured servers and `sessions` learnt
        sessions (generous minimums apply); this handle claims no column."""
        slots, entries = lay.capacities(servers, sessions)
        fd = os.memfd_create("bastion-node-state")  # close-on-exec: pass_fds hands it down
        os.ftruncate(fd, lay.region_size(slots, entries))
        with mmap.mmap(fd, lay.HEADER_SIZE) as header:
            header[lay.H_MAGIC : lay.H_MAGIC + 8] = lay.MAGIC
            view = memoryview(header).cast("i")
            view[lay.H_VERSION // 4] = lay.VERSION
            view[lay.H_MAX_WORKERS // 4] = lay.MAX_WORKERS
            view[lay.H_SLOT_CAPACITY // 4] = slots
            view[lay.H_SESSION_CAPACITY // 4] = entries
            view.release()
        return cls(fd, owns_fd=True, claim_column=False)

    @classmethod
    def attach(cls, fd: int, *, column: bool = True) -> NodeState:
        """Map an existing region (a worker, given the supervisor's fd); with `column`, claim
        a free in-flight column for this process's counts."""
        return cls(fd, owns_fd=False, claim_column=column)

    def close(self) -> None:
        """Give back this handle's column (its counts go) and unmap the region."""
        if self.column >= 0:
            with self.lock():
                self._free_column(self.column)
            self.column = -1
        self._release_views()
        if self._owns_fd:
            os.close(self.fd)

    def _release_views(self) -> None:
        for view in (getattr(self, "ints", None), getattr(self, "longs", None)):
            if view is not None:
                view.release()
        doubles = getattr(self, "doubles", None)
        if doubles is not None:
            doubles.release()
        self._map.close()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The region's write lock (a POSIX record lock on the fd: it excludes other
        processes; one process is single-threaded here)."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    # -- header ------------------------------------------------------------------------------

    @property
    def changes(self) -> int:
        """The change counter: it moved since a reader last looked → re-read the slots."""
        return self.longs[_CHANGES]

    def bump(self) -> None:
        """Tell every reader that a health, ejection or drain cell changed."""
        with self.lock():
            self.longs[lay.H_CHANGES // 8] += 1

    @property
    def generation(self) -> int:
        return self.longs[lay.H_GENERATION // 8]

    def begin_generation(self) -> int:
        """The supervisor starts a new generation of workers (a reload): returns its number;
        workers attached from now on tag the servers they use with it."""
        with self.lock():
            self.longs[lay.H_GENERATION // 8] += 1
            generation = self.longs[lay.H_GENERATION // 8]
        self.generation_bound = generation
        return generation

    # -- worker columns ---------------------------------------------------------------------

    def _column_cells(self, column: int) -> tuple[int, int]:
        at = (lay.H_COLUMNS + column * lay.COLUMN_ENTRY) // 4
        return at, at + 1  # owner pid, claimed

    def _claim_column(self) -> int:
        with self.lock():
            for column in range(lay.MAX_WORKERS):
                owner, claimed = self._column_cells(column)
                if self.ints[claimed] and _alive(self.ints[owner]):
                    continue
                self._zero_column(column)  # a dead owner's counts went with it
                self.ints[owner] = os.getpid()
                self.ints[claimed] = 1
                high = lay.H_COLUMNS_HIGH // 4
                self.ints[high] = max(self.ints[high], column + 1)
                return column
        raise NodeStateError(f"all {lay.MAX_WORKERS} in-flight columns are in use")

    def _free_column(self, column: int) -> None:
        self._zero_column(column)
        owner, claimed = self._column_cells(column)
        self.ints[owner] = 0
        self.ints[claimed] = 0

    def _zero_column(self, column: int) -> None:
        first = (self.slots_at + lay.S_IN_FLIGHT) // 4 + column
        step = lay.SLOT_SIZE // 4
        for slot in range(self.ints[lay.H_SLOTS_USED // 4]):
            self.ints[first + slot * step] = 0

    def release_worker(self, pid: int) -> None:
        """A worker exited: free the columns it held (its requests ended with it)."""
        with self.lock():
            for column in range(lay.MAX_WORKERS):
                owner, claimed = self._column_cells(column)
                if self.ints[claimed] and self.ints[owner] == pid:
                    self._free_column(column)

    def reap(self) -> None:
        """Free the columns of every process that is gone."""
        with self.lock():
            for column in range(lay.MAX_WORKERS):
                owner, claimed = self._column_cells(column)
                if self.ints[claimed] and not _alive(self.ints[owner]):
                    self._free_column(column)

    # -- slots ----------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Learn the keys of slots appended since the last scan (slots never move)."""
        used = self.ints[lay.H_SLOTS_USED // 4]
        while self._scanned < used:
            at = self.slots_at + self._scanned * lay.SLOT_SIZE
            if not self.ints[(at + lay.S_USED) // 4]:
                break  # being written by the claimer: the lock holder sees it complete
            key, upstream = self._key_at(at)
            self._known[key] = self._scanned
            self._ordinals[upstream] = self._ordinals.get(upstream, 0) + 1
            self._scanned += 1

    def _key_at(self, at: int) -> tuple[bytes, bytes]:
        length = self.ints[(at + lay.S_KEY_LEN) // 4]
        upstream = self.ints[(at + lay.S_UPSTREAM_LEN) // 4]
        key = bytes(self._map[at + lay.S_KEY : at + lay.S_KEY + length])
        return key, key[:upstream]

    def slot_of(self, upstream: str, label: str) -> int | None:
        """The slot of a server, if the node knows it (no lock)."""
        self._scan()
        return self._known.get(_key(upstream, label))

    def claim(self, upstream: str, label: str) -> int:
        """The slot of a server, claimed if new (under the lock). Raises NodeStateError when
        the key is too long or the table is full."""
        key = _key(upstream, label)
        found = self.slot_of(upstream, label)
        if found is not None:
            return found
        if len(key) > lay.KEY_MAX:
            raise NodeStateError(f"server key {key!r} is longer than {lay.KEY_MAX} bytes")
        with self.lock():
            self._scan()
            found = self._known.get(key)
            if found is not None:
                return found
            slot = self.ints[lay.H_SLOTS_USED // 4]
            if slot >= self.slot_capacity:
                raise NodeStateError(f"all {self.slot_capacity} server slots are in use")
            at = self.slots_at + slot * lay.SLOT_SIZE
            upstream_bytes = upstream.encode()
            self._map[at + lay.S_KEY : at + lay.S_KEY + len(key)] = key
            self.ints[(at + lay.S_KEY_LEN) // 4] = len(key)
            self.ints[(at + lay.S_UPSTREAM_LEN) // 4] = len(upstream_bytes)
            self.ints[(at + lay.S_ORDINAL) // 4] = self._ordinals.get(upstream_bytes, 0)
            self.ints[(at + lay.S_USED) // 4] = 1
            self.ints[lay.H_SLOTS_USED // 4] = slot + 1
            self._scan()
        return slot

    def bind(
        self, upstream: str, label: str, *, weight: int, max_conns: int, backup: bool
    ) -> SlotLink:
        """This process serves this server: its slot (claimed if new), tagged with this
        process's generation and the server's configured weight and limits."""
        slot = self.claim(upstream, label)
        at = self.slots_at + slot * lay.SLOT_SIZE
        self.ints[(at + lay.S_WEIGHT) // 4] = weight
        self.ints[(at + lay.S_MAX_CONNS) // 4] = max_conns
        self.ints[(at + lay.S_BACKUP) // 4] = int(backup)
        cell = (at + lay.S_GENERATION) // 8
        self.longs[cell] = max(self.longs[cell], self.generation_bound)
        return SlotLink(self, slot)

    def _slot_at(self, upstream: str, index: int) -> int | None:
        self._scan()
        name = upstream.encode()
        for slot in range(self._scanned):
            at = self.slots_at + slot * lay.SLOT_SIZE
            _, owner = self._key_at(at)
            if owner == name and self.ints[(at + lay.S_ORDINAL) // 4] == index:
                return slot
        return None

    def drain(self, upstream: str, index: int) -> bool:
        """Take server `index` of `upstream` out of rotation (in-flight requests finish)."""
        return self._set_drained(upstream, index, True)

    def enable(self, upstream: str, index: int) -> bool:
        """Put a drained server back into rotation."""
        return self._set_drained(upstream, index, False)

    def _set_drained(self, upstream: str, index: int, drained: bool) -> bool:
        slot = self._slot_at(upstream, index)
        if slot is None:
            return False
        at = self.slots_at + slot * lay.SLOT_SIZE
        self.ints[(at + lay.S_DRAINED) // 4] = int(drained)
        self.bump()
        return True

    def servers(self, generation: int | None = None) -> list[ServerView]:
        """Every server the node knows, by upstream name then index."""
        self._scan()
        views = [self.view(slot) for slot in range(self._scanned)]
        if generation is not None:
            views = [view for view in views if view.generation >= generation]
        return sorted(views, key=lambda view: (view.upstream, view.index))

    def view(self, slot: int) -> ServerView:
        at = self.slots_at + slot * lay.SLOT_SIZE
        ints, doubles = self.ints, self.doubles
        key, upstream = self._key_at(at)
        detail_len = ints[(at + lay.S_DETAIL_LEN) // 4]
        detail = bytes(self._map[at + lay.S_DETAIL : at + lay.S_DETAIL + detail_len])
        return ServerView(
            upstream=upstream.decode(),
            index=ints[(at + lay.S_ORDINAL) // 4],
            label=key[len(upstream) + 1 :].decode(),
            weight=ints[(at + lay.S_WEIGHT) // 4],
            max_conns=ints[(at + lay.S_MAX_CONNS) // 4],
            backup=bool(ints[(at + lay.S_BACKUP) // 4]),
            in_flight=self.in_flight_total(slot),
            health=_HEALTH_NAMES.get(ints[(at + lay.S_HEALTH) // 4], "unchecked"),
            health_detail=detail.decode(errors="replace"),
            checked_at=doubles[(at + lay.S_CHECKED_AT) // 8],
            ejected_until=doubles[(at + lay.S_EJECTED_UNTIL) // 8],
            drained=bool(ints[(at + lay.S_DRAINED) // 4]),
            latency=doubles[(at + lay.S_LATENCY) // 8],
            generation=self.longs[(at + lay.S_GENERATION) // 8],
        )

    def in_flight_total(self, slot: int) -> int:
        first = (self.slots_at + slot * lay.SLOT_SIZE + lay.S_IN_FLIGHT) // 4
        return sum(self.ints[first : first + self.ints[lay.H_COLUMNS_HIGH // 4]])


class SlotLink:
    """One worker's link to one server's slot: the cells it reads and writes, precomputed."""

    __slots__ = (
        "_at",
        "_doubles",
        "_drained",
        "_ejected",
        "_first",
        "_health",
        "_high",
        "_ints",
        "_latency",
        "_mine",
        "node",
        "slot",
    )

    def __init__(self, node: NodeState, slot: int) -> None:
        self.node = node
        self.slot = slot
        at = node.slots_at + slot * lay.SLOT_SIZE
        self._at = at
        self._ints = node.ints
        self._doubles = node.doubles
        self._first = (at + lay.S_IN_FLIGHT) // 4
        # a handle without a column (the supervisor's) counts into a cell nobody reads
        self._mine = self._first + node.column if node.column >= 0 else lay.H_SCRATCH // 4
        self._high = lay.H_COLUMNS_HIGH // 4
        self._drained = (at + lay.S_DRAINED) // 4
        self._health = (at + lay.S_HEALTH) // 4
        self._ejected = (at + lay.S_EJECTED_UNTIL) // 8
        self._latency = (at + lay.S_LATENCY) // 8

    # -- the request path -----------------------------------------------------------------

    def add_in_flight(self, delta: int) -> None:
        """This worker's count of requests on the server moved by `delta`."""
        self._ints[self._mine] += delta

    def in_flight_total(self) -> int:
        """Requests on the server across the node."""
        first = self._first
        return sum(self._ints[first : first + self._ints[self._high]])

    def set_latency(self, seconds: float) -> None:
        self._doubles[self._latency] = seconds

    # -- health, ejection, drain ------------------------------------------------------------

    @property
    def health(self) -> int:
        """HEALTH_UNCHECKED / HEALTH_UP / HEALTH_DOWN."""
        return self._ints[self._health]

    def record_check(self, up: bool, detail: str, at: float) -> None:
        """The checker's verdict after a check (`at`: wall clock); readers are told when the
        verdict changed."""
        raw = detail.encode(errors="replace")[: lay.DETAIL_MAX]
        base = self._at
        self.node._map[base + lay.S_DETAIL : base + lay.S_DETAIL + len(raw)] = raw
        self._ints[(base + lay.S_DETAIL_LEN) // 4] = len(raw)
        self._doubles[(base + lay.S_CHECKED_AT) // 8] = at
        verdict = lay.HEALTH_UP if up else lay.HEALTH_DOWN
        if self._ints[(base + lay.S_HEALTH) // 4] != verdict:
            self._ints[(base + lay.S_HEALTH) // 4] = verdict
            self.node.bump()

    @property
    def ejected_until(self) -> float:
        """Wall-clock end of the server's passive ejection (0.0 or past: not ejected)."""
        return self._doubles[self._ejected]

    def eject(self, until: float) -> None:
        """This worker ejected the server until `until` (wall clock): every worker honours it."""
        self._doubles[self._ejected] = until
        self.node.bump()

    @property
    def drained(self) -> bool:
        return bool(self._ints[self._drained])


def _key(upstream: str, label: str) -> bytes:
    return f"{upstream}/{label}".encode()


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (a worker of another user answers EPERM: alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True
