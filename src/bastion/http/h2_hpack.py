"""HPACK (RFC 7541) for the server side: header blocks in, header blocks out.

`HeaderBlockDecoder` decodes with the `hpack` library and remembers what it decoded: a
block that left the dynamic table as it was decodes to the same fields for as long as the
table stays unchanged, so a repeated block (a client sending the same request again, every
field an index into the table) costs one dictionary lookup. Any change of the table (an
inserted field, a size update) forgets every remembered block; `generation` counts those
changes so that callers can key their own caches on it.

`encode_block` writes response heads without a dynamic table: fields the static table holds
whole are one byte, the rest are literals "without indexing" (by static name index where
there is one), never Huffman-coded. The first block of a connection starts with a table
size update to 0, so whatever SETTINGS_HEADER_TABLE_SIZE the client announces later, the
encoder never has a size change to signal. That trades some bytes on the wire for an encoder
with no state and almost no work per field.

No sockets, no asyncio.
"""

from __future__ import annotations

import hpack
from hpack.table import HeaderTable

Field = tuple[bytes, bytes]

_MEMO_LIMIT = 64  # remembered blocks per connection
TABLE_SIZE_ZERO = b"\x20"  # dynamic table size update to 0 (RFC 7541 6.3)


class HeaderBlockError(Exception):
    """The block cannot be decoded; `oversized`: the header list is over its limit."""

    def __init__(self, reason: str, *, oversized: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.oversized = oversized


class HeaderBlockDecoder:
    """One connection's HPACK decoding context, with a memo of repeated blocks."""

    __slots__ = ("_decoder", "_first", "_memo", "_size", "generation")

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._memo: dict[bytes, list[Field]] = {}
        self.generation = 0
        self._first: Field | None = None
        self._size = (0, self._decoder.header_table_size)

    def decode(self, block: bytes) -> list[Field]:
        """The fields of `block`, in order; shared with later calls: do not mutate it.

        Raises HeaderBlockError; the connection cannot go on after one.
        """
        fields = self._memo.get(block)
        if fields is not None:
            return fields
        try:
            fields = [(field[0], field[1]) for field in self._decoder.decode(block, raw=True)]
        except hpack.OversizedHeaderListError as error:
            raise HeaderBlockError(str(error), oversized=True) from None
        except hpack.HPACKError as error:
            raise HeaderBlockError(str(error) or type(error).__name__) from None
        if self._table_changed():
            self._memo.clear()
            self.generation += 1
        elif len(self._memo) < _MEMO_LIMIT:
            self._memo[block] = fields
        return fields

    def _table_changed(self) -> bool:
        """Whether the dynamic table differs from the last look at it.

        An insertion always puts a new tuple object first (and the memo holds the old one,
        so its identity cannot be reused); evictions come with an insertion or a resize.
        """
        table = self._decoder.header_table
        entries = table.dynamic_entries
        first = entries[0] if entries else None
        size = (len(entries), table.maxsize)
        if first is self._first and size == self._size:
            return False
        self._first = first
        self._size = size
        return True


def _build_static_indexes() -> tuple[dict[Field, bytes], dict[bytes, bytes]]:
    """Constants: the one-byte form of each static-table field, and the "literal without
    indexing, indexed name" start (RFC 7541 6.2.2) of each static-table name."""
    whole: dict[Field, bytes] = {}
    names: dict[bytes, bytes] = {}
    for index, (name, value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
        whole.setdefault((name, value), bytes((0x80 | index,)))
        names.setdefault(name, _integer(index, 4, 0x00))
    return whole, names


def encode_block(fields: list[Field]) -> bytes:
    """A header block for `fields` (lowercase names), using no dynamic table."""
    parts: list[bytes] = []
    append = parts.append
    for field in fields:
        whole = _STATIC_WHOLE.get(field)
        if whole is not None:
            append(whole)
            continue
        name, value = field
        prefix = _STATIC_NAME_PREFIXES.get(name)
        if prefix is None:  # a literal name
            prefix = b"\x00" + _integer(len(name), 7, 0) + name
        append(prefix)
        length = len(value)
        append(bytes((length,)) if length < 127 else _integer(length, 7, 0))
        append(value)
    return b"".join(parts)


def _integer(value: int, prefix_bits: int, first_byte: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with `first_byte`'s high bits set."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte | value,))
    out = bytearray((first_byte | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_STATIC_WHOLE, _STATIC_NAME_PREFIXES = _build_static_indexes()
