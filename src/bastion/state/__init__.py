"""Per-node shared state: what every worker process of one node must see the same way.

One shared-memory region (a memfd, mmap'd by every process of the node) holds:

- a table of **server slots**, one per "upstream/server-label", claimed once (under an
  `fcntl.lockf` on the region's fd: rare — plan build, DNS changes, reload) and never moved.
  Each slot has a per-worker **in-flight column** (each worker writes only its own cell, the
  node-wide count is the sum), the **active health verdict** (written by the one worker that
  runs the checks) with the last check's detail, the **passive ejection deadline** (written by
  whichever worker ejected), the **drained** flag (written by the admin API), the latest
  latency average, and the server's weight / max_conns / backup as the workers configured it;
- a **learned sticky sessions** table (`sticky = { learn = NAME }`): fixed size, entries
  validated against torn writes, expired or oldest entries replaced;
- a header: magic, layout version, sizes, the **change counter** (bumped on every health,
  ejection or drain change: a worker re-reads its slots only when it moved — one integer read
  per request), the config generation and the table of worker columns.

API for the supervisor and the admin API (helper A codes against this):

    node = NodeState.create(servers=N, sessions=M)   # supervisor; N configured servers,
                                                     # M = sum of learn tables' max_entries;
                                                     # generous minimums are applied
    node.fd                        # the memfd: pass it to workers (pass_fds=[node.fd])
    node.begin_generation() -> int # supervisor, before spawning a new generation of workers
    node.generation -> int         # the current config generation (0 until the first begin)
    node.release_worker(pid)       # supervisor, after a worker exited: its in-flight cells
                                   # are zeroed and its column freed (node.reap() does it for
                                   # every column whose process is gone)
    node.servers(generation=None) -> list[ServerView]
                                   # every known server, by upstream then index; with
                                   # `generation`, only those bound by workers of at least
                                   # that generation (i.e. still in the running config)
    node.drain(upstream, index) -> bool   # False: no such server; idempotent
    node.enable(upstream, index) -> bool
    node.close()

    # a worker:
    node = NodeState.attach(fd)    # maps the region and claims a free in-flight column
    ProxyServer(config, node_state=node, runs_checks=(worker_index == 0))

`ServerView` (frozen dataclass) fields:
    upstream: str        # the upstream's name
    index: int           # the server's number within its upstream: the order in which the
                         # node first saw it (configured order for a fresh node), stable
                         # for the life of the region — across reloads — and never reused;
                         # this is the {index} of /api/upstreams/{name}/servers/{index}/drain
    label: str           # "host:port" (IPv6 in brackets)
    weight: int; max_conns: int (0 = no limit); backup: bool
    in_flight: int       # node-wide: the sum over all workers
    health: str          # "up" / "down" (active checks' verdict) / "unchecked"
    health_detail: str   # what the last check saw ("status 200", "no answer within 2s"), ""
    checked_at: float    # wall-clock time of the last check, 0.0 if none
    ejected_until: float # wall-clock end of a passive ejection, 0.0 if not ejected
    drained: bool
    latency: float       # seconds, the latest latency average any worker measured (0.0: none)
    generation: int      # the newest config generation whose workers use this server
    state -> str         # property: "drained" / "down" / "ejected" / "up" (first that applies,
                         # ejection judged against time.time())

Drain semantics: a drained server is chosen for no new request — neither by the balancer nor
by a sticky pin — and finishes the requests it has in flight. It stays drained across reloads
(the flag lives in the slot, keyed by label) until enabled.

Pure: mmap, struct and fcntl only — no asyncio, no sockets. Without a region (in-process
tests, a single process) nothing here is used and the runtime behaves as it always did.
"""

from __future__ import annotations

from bastion.state.node import NodeState, ServerView, SlotLink
from bastion.state.sessions import SharedSessions

__all__ = ["NodeState", "ServerView", "SharedSessions", "SlotLink"]
