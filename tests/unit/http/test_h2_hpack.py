"""HPACK for the HTTP/2 server codec: the decoder's memo and the stateless encoder.

The decoder's memo must never hand out fields that the dynamic table no longer says; the
encoder's blocks must decode, with an independent decoder (the hpack library's), to exactly
the fields given, whatever table size the client allows.
"""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.http.h2_hpack import (
    TABLE_SIZE_ZERO,
    HeaderBlockDecoder,
    HeaderBlockError,
    encode_block,
)

INDEX_62 = b"\xbe"  # an indexed field: the newest entry of the dynamic table


def test_a_repeated_block_decodes_from_the_memo_to_the_same_fields() -> None:
    client = hpack.Encoder()
    decoder = HeaderBlockDecoder(16384)
    fields = [(b":method", b"GET"), (b":path", b"/a"), (b"user-agent", b"test/1")]
    first = decoder.decode(client.encode(fields))
    again = client.encode(fields)  # every field now an index into the dynamic table
    assert decoder.decode(again) == fields == first
    generation = decoder.generation
    assert decoder.decode(again) is decoder.decode(again)  # remembered
    assert decoder.generation == generation


def test_the_memo_is_forgotten_when_the_dynamic_table_changes() -> None:
    client = hpack.Encoder()
    decoder = HeaderBlockDecoder(16384)
    decoder.decode(client.encode([(b"x-a", b"1")]))
    assert decoder.decode(INDEX_62) == [(b"x-a", b"1")]
    decoder.decode(client.encode([(b"x-b", b"2")]))  # a new entry takes index 62
    assert decoder.decode(INDEX_62) == [(b"x-b", b"2")]


def test_an_entry_equal_to_the_newest_still_counts_as_a_change() -> None:
    client = hpack.Encoder()
    client.header_table_size = 64  # room for one entry of this size: each insert evicts
    decoder = HeaderBlockDecoder(16384)
    decoder.decode(client.encode([(b"x-a", b"1")]))
    assert decoder.decode(b"\x3f\x21" + INDEX_62) == [(b"x-a", b"1")]  # size update to 64
    literal = b"\x40\x03x-b\x011"  # literal with incremental indexing, new name x-b: 1
    assert decoder.decode(literal) == [(b"x-b", b"1")]
    assert decoder.decode(INDEX_62) == [(b"x-b", b"1")]
    assert decoder.decode(b"\x40\x03x-a\x011") == [(b"x-a", b"1")]  # evicts x-b, same size
    assert decoder.decode(INDEX_62) == [(b"x-a", b"1")]


@pytest.mark.parametrize(
    ("block", "oversized"),
    [
        pytest.param(b"\xff\x80\x80\x80\x80\x01", False, id="index-out-of-range"),
        pytest.param(b"\x00\x83\xff\xff\xff\x01x", False, id="bad-huffman"),
        pytest.param(b"\x3f\xe2\x1f", False, id="table-size-4097"),
        pytest.param(b"\x00\x01a\x7f\x81\x7f" + b"v" * 16500, True, id="header-list-too-large"),
    ],
)
def test_undecodable_blocks_raise(block: bytes, oversized: bool) -> None:
    with pytest.raises(HeaderBlockError) as raised:
        HeaderBlockDecoder(16384).decode(block)
    assert raised.value.oversized is oversized


names = st.sampled_from(
    [b":status", b"content-type", b"server", b"set-cookie", b"date", b"x-custom", b"via"]
) | st.binary(min_size=1, max_size=40).map(lambda b: b.lower().replace(b":", b"-"))
values = st.binary(max_size=300)


@given(st.lists(st.tuples(names, values), max_size=30), st.integers(0, 4096))
def test_encoded_blocks_decode_to_the_same_fields(
    fields: list[tuple[bytes, bytes]], table_size: int
) -> None:
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = table_size  # whatever the client allowed
    decoded = decoder.decode(TABLE_SIZE_ZERO + encode_block(fields), raw=True)
    assert [(name, value) for name, value in decoded] == fields
    assert decoder.header_table_size == 0
    again = decoder.decode(encode_block(fields), raw=True)  # later blocks: no size update
    assert [(name, value) for name, value in again] == fields


def test_static_table_fields_are_one_byte_and_names_are_indexed() -> None:
    assert encode_block([(b":status", b"200")]) == b"\x88"
    assert encode_block([(b"content-length", b"13")]) == b"\x0f\x0d\x0213"
    block = encode_block([(b"x-new", b"v")])
    assert block == b"\x00\x05x-new\x01v"
