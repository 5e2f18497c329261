"""HTTP/2 wire constants (RFC 9113) and the frames a server writes, as bytes.

Every function returns one whole frame: the 9-byte header (24-bit length, type, flags,
31-bit stream identifier) and its payload. No state, no I/O.
"""

from __future__ import annotations

import struct

CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE = 9

# Frame types (RFC 9113 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# Settings (RFC 9113 6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65535  # every flow-control window before SETTINGS / WINDOW_UPDATE
DEFAULT_MAX_FRAME_SIZE = 16384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_SIZE_LIMIT = 2**24 - 1

_HEADER = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8 bits, type, flags, stream id
_SETTING = struct.Struct(">HL")
_UINT32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame of any type."""
    length = len(payload)
    return _HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


def frame_header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    """The 9-byte header of a frame whose payload is written separately."""
    return _HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id)


def settings_frame(settings: dict[int, int]) -> bytes:
    payload = b"".join(_SETTING.pack(code, value) for code, value in settings.items())
    return frame(SETTINGS, 0, 0, payload)


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _UINT32.pack(increment))


def rst_stream_frame(stream_id: int, error_code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _UINT32.pack(error_code))


def goaway_frame(last_stream_id: int, error_code: int) -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, error_code))


def ping_ack_frame(opaque: bytes) -> bytes:
    return frame(PING, ACK, 0, opaque)


def write_header_block(
    out: bytearray, stream_id: int, block: bytes, end_stream: bool, max_frame: int
) -> None:
    """Append HEADERS (and CONTINUATIONs, past `max_frame` bytes) carrying `block`."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        out += frame(HEADERS, flags | END_HEADERS, stream_id, block)
        return
    out += frame(HEADERS, flags, stream_id, block[:max_frame])
    for start in range(max_frame, len(block), max_frame):
        last = start + max_frame >= len(block)
        out += frame(
            CONTINUATION, END_HEADERS if last else 0, stream_id, block[start : start + max_frame]
        )


def write_data(
    out: bytearray, stream_id: int, data: bytes, size: int, end_stream: bool, max_frame: int
) -> None:
    """Append DATA frames carrying the first `size` bytes of `data`, none over `max_frame`;
    END_STREAM on the last one when `end_stream` (an empty frame if `size` is 0)."""
    if size <= max_frame:
        out += frame_header(DATA, END_STREAM if end_stream else 0, stream_id, size)
        out += data if size == len(data) else data[:size]
        return
    view = memoryview(data)
    for start in range(0, size, max_frame):
        piece = view[start : min(start + max_frame, size)]
        flags = END_STREAM if end_stream and start + max_frame >= size else 0
        out += frame_header(DATA, flags, stream_id, len(piece))
        out += piece


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """The (code, value) pairs of a SETTINGS payload whose length is a multiple of 6."""
    return [_SETTING.unpack_from(payload, offset) for offset in range(0, len(payload), 6)]


def uint31(payload: bytes, offset: int = 0) -> int:
    """The 31-bit value at `offset` (reserved high bit ignored)."""
    return int(_UINT32.unpack_from(payload, offset)[0]) & 0x7FFFFFFF


def uint32(payload: bytes, offset: int = 0) -> int:
    return int(_UINT32.unpack_from(payload, offset)[0])
