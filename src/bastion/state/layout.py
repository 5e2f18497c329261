"""Where everything sits in the node-state region: offsets and sizes, nothing else.

All offsets are in bytes and multiples of 8, so the region can be read through `memoryview`
casts to int32 (`i`), int64 (`q`) and double (`d`) at index `offset // 4` or `offset // 8`.

    header     HEADER_SIZE bytes: magic, version, sizes, counters, the worker columns table
    slots      slot_capacity x SLOT_SIZE: one per server ("upstream/label"), appended in order
    sessions   session_capacity x ENTRY_SIZE: the learned sticky sessions, in buckets of
               BUCKET entries
"""

from __future__ import annotations

MAGIC = b"BSTNNODE"
VERSION = 1
MAX_WORKERS = 64  # in-flight columns: processes that may serve at once (both generations)

# -- header ---------------------------------------------------------------------------------
H_MAGIC = 0  # 8 bytes
H_VERSION = 8  # int32
H_MAX_WORKERS = 12  # int32
H_SLOT_CAPACITY = 16  # int32
H_SESSION_CAPACITY = 20  # int32
H_SLOTS_USED = 24  # int32: slots [0, used) are claimed; only ever grows
H_COLUMNS_HIGH = 28  # int32: columns [0, high) may be non-zero (readers sum only those)
H_CHANGES = 32  # int64: bumped (under the lock) on every health, ejection or drain change
H_GENERATION = 40  # int64: the config generation the supervisor is starting
H_SCRATCH = 48  # int32: where a handle without a column "counts" (never read)
H_COLUMNS = 64  # MAX_WORKERS x (owner pid int32, claimed int32)
COLUMN_ENTRY = 8
HEADER_SIZE = 4096

# -- a server slot ----------------------------------------------------------------------------
S_USED = 0  # int32: 1 once the slot's key is written (set last)
S_ORDINAL = 4  # int32: the server's index within its upstream
S_UPSTREAM_LEN = 8  # int32: bytes of the key that are the upstream's name
S_KEY_LEN = 12  # int32
S_WEIGHT = 16  # int32
S_MAX_CONNS = 20  # int32
S_BACKUP = 24  # int32
S_DRAINED = 28  # int32
S_HEALTH = 32  # int32: HEALTH_* below
S_DETAIL_LEN = 36  # int32
S_GENERATION = 40  # int64
S_EJECTED_UNTIL = 48  # double, wall clock (0.0: not ejected)
S_LATENCY = 56  # double, seconds
S_CHECKED_AT = 64  # double, wall clock
S_KEY = 80  # KEY_MAX bytes: b"upstream/label"
KEY_MAX = 160
S_DETAIL = S_KEY + KEY_MAX  # DETAIL_MAX bytes, utf-8
DETAIL_MAX = 80
S_IN_FLIGHT = S_DETAIL + DETAIL_MAX  # MAX_WORKERS x int32, one column per worker
SLOT_SIZE = S_IN_FLIGHT + 4 * MAX_WORKERS

HEALTH_UNCHECKED = 0
HEALTH_UP = 1
HEALTH_DOWN = 2

# -- a learned session entry ----------------------------------------------------------------
E_SEQ_B = 0  # int32: written last by a writer, read first by a reader
E_SLOT = 4  # int32: the server's slot number
E_KEY = 8  # int64: hash of upstream + session value (0: empty)
E_EXPIRY = 16  # double, wall clock; read as int64 too for the check
E_SEQ_A = 24  # int32: written first by a writer, read last by a reader
E_CHECK = 28  # int32: mix of slot, key and expiry (catches two writers interleaving)
ENTRY_SIZE = 32
BUCKET = 4  # entries a key may live in: an insert replaces the oldest of them

MIN_SLOTS = 4096
MIN_SESSIONS = 65536
MAX_SESSIONS = 1 << 22


def region_size(slot_capacity: int, session_capacity: int) -> int:
    """Bytes of a region with these capacities."""
    return HEADER_SIZE + slot_capacity * SLOT_SIZE + session_capacity * ENTRY_SIZE


def capacities(servers: int, sessions: int) -> tuple[int, int]:
    """Slot and session capacities for `servers` configured servers and `sessions` learn
    entries: room for DNS growth and renames, and pages of a memfd cost nothing until used."""
    slots = max(MIN_SLOTS, 8 * servers)
    wanted = max(MIN_SESSIONS, 2 * sessions)
    entries = 1 << (wanted - 1).bit_length()  # a power of two: buckets by mask
    return slots, min(entries, MAX_SESSIONS)
