"""The HTTP/2 floods a server refuses before its codec spends work on them.

`FrameGate` cuts the client's byte stream into whole frames by reading their 9-byte headers
and checks each one before the HTTP/2 library sees it: a frame over the size limit (refused
on its header, before its payload is buffered), a header block (HEADERS + CONTINUATION)
over its byte budget (the CONTINUATION flood), RST_STREAM frames faster than the reset rate
(rapid reset, CVE-2023-44487), and frames that cost work without carrying a request forward
(SETTINGS, PING, PRIORITY, unknown types, empty DATA, empty header fragments, WINDOW_UPDATEs
of under 1 KiB) faster than the control-frame rate. A refusal raises `FloodError` with the
GOAWAY error code to send.

`RateMeter` is the leaky bucket behind both rates; its clock is injected. `H2Limits` holds
every limit of a server connection. This module knows frame headers only: nothing of streams,
header fields, the h2 library, sockets or asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bastion.http.h2_frames import CLIENT_PREFACE as CLIENT_PREFACE  # part of this API
from bastion.http.h2_frames import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    HEADERS,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
)

# The pseudo type of a piece of the client preface.
PREFACE = -1

_HEADER_SIZE = 9
_NO_PROGRESS_TYPES = frozenset({SETTINGS, PING, PRIORITY})
# A WINDOW_UPDATE smaller than this makes the sender cut its DATA into tiny frames ("data
# dribble", CVE-2019-9511): such updates count against the control-frame budget.
_SMALL_WINDOW_INCREMENT = 1024


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What one HTTP/2 client connection may cost; the flood limits count per `window`."""

    max_concurrent_streams: int = 100
    max_header_list_size: int = 32 * 1024  # HPACK-decoded header list (HPACK bomb defence)
    initial_window_size: int = 1024 * 1024  # per-stream receive window, also the connection's
    max_frame_size: int = 16384
    max_resets_per_window: int = 200  # RST_STREAMs (rapid reset, CVE-2023-44487)
    max_control_frames_per_window: int = 500  # SETTINGS, PING, ... without progress
    max_continuation_bytes: int = 64 * 1024  # one header block (CONTINUATION flood)
    window: float = 10.0

    def __post_init__(self) -> None:
        if not 16384 <= self.max_frame_size <= 16777215:
            raise ValueError("max_frame_size must be within 16384..16777215 (RFC 9113 6.5.2)")
        if not 0 < self.initial_window_size <= 2**31 - 1:
            raise ValueError("initial_window_size must be within 1..2**31-1")
        if self.window <= 0:
            raise ValueError("window must be positive")


class FloodError(Exception):
    """The client broke a limit: the connection ends with GOAWAY `error_code`."""

    def __init__(self, error_code: int, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code
        self.reason = reason


class RateMeter:
    """Tolerates `limit` hits per `window` seconds: a burst of `limit`, then that rate.

    A leaky bucket: each hit adds one, the level drains by `limit` per `window`.
    """

    __slots__ = ("_clock", "_last", "_level", "_limit", "_rate")

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._rate = limit / window
        self._clock = clock
        self._level = 0.0
        self._last = clock()

    def hit(self) -> bool:
        """Count one event; True when the rate is exceeded."""
        now = self._clock()
        drained = self._level - (now - self._last) * self._rate
        self._level = (drained if drained > 0.0 else 0.0) + 1.0
        self._last = now
        return self._level > self._limit


@dataclass(frozen=True, slots=True)
class InboundFrame:
    """One whole frame as received (or a piece of the client preface, kind PREFACE)."""

    kind: int
    flags: int
    stream_id: int
    content_size: int  # DATA: payload without padding (-1 if the padding is malformed)
    raw: bytes  # header and payload, as they go to the HTTP/2 library


class FrameGate:
    """Splits inbound bytes into whole frames, refusing floods as their headers arrive.

    What it buffers is bounded by one frame (`max_frame_size` plus its header); what the
    library buffers for a header block is bounded by `max_header_block`.
    """

    __slots__ = (
        "_block_bytes",
        "_buffer",
        "_control",
        "_in_block",
        "_max_frame_size",
        "_max_header_block",
        "_preface_left",
        "_resets",
    )

    def __init__(
        self,
        *,
        max_frame_size: int,
        max_header_block: int,
        resets: RateMeter,
        control: RateMeter,
    ) -> None:
        self._max_frame_size = max_frame_size
        self._max_header_block = max_header_block
        self._resets = resets
        self._control = control
        self._buffer = b""
        self._preface_left = len(CLIENT_PREFACE)
        self._block_bytes = 0
        self._in_block = False

    @property
    def in_header_block(self) -> bool:
        """A header block has begun and not ended: only its CONTINUATION may follow."""
        return self._in_block

    def frames(self, data: bytes) -> Iterator[InboundFrame]:
        """The whole frames `data` completes, in order; raises FloodError at a bad one."""
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        offset = 0
        if self._preface_left:
            piece = buffer[: self._preface_left]
            self._preface_left -= len(piece)
            offset = len(piece)
            yield InboundFrame(PREFACE, 0, 0, 0, piece)
        end = len(buffer)
        while end - offset >= _HEADER_SIZE:
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if length > self._max_frame_size:
                raise FloodError(
                    FRAME_SIZE_ERROR, f"frame of {length} bytes over {self._max_frame_size}"
                )
            stop = offset + _HEADER_SIZE + length
            if stop > end:
                break
            raw = buffer[offset:stop]
            offset = stop
            kind, flags = raw[3], raw[4]
            stream_id = int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF
            yield InboundFrame(kind, flags, stream_id, self._police(kind, flags, raw), raw)
        self._buffer = buffer[offset:]

    def _police(self, kind: int, flags: int, raw: bytes) -> int:
        """Apply the limits to one frame; returns its content size."""
        length = len(raw) - _HEADER_SIZE
        if kind == DATA:
            size = length if not flags & PADDED else _unpadded(raw, length)
            if size <= 0 and not flags & END_STREAM:
                self._control_frame("empty DATA frames")
            return size
        if kind in (HEADERS, CONTINUATION):
            self._in_block = not flags & END_HEADERS
            self._header_block(kind, flags, raw, length)
        elif kind == RST_STREAM:
            if self._resets.hit():
                raise FloodError(ENHANCE_YOUR_CALM, "rapid reset: too many RST_STREAM frames")
        elif kind in _NO_PROGRESS_TYPES or kind > CONTINUATION:
            self._control_frame("control frames")
        elif kind == WINDOW_UPDATE and length == 4:
            increment = int.from_bytes(raw[_HEADER_SIZE:], "big") & 0x7FFFFFFF
            if increment < _SMALL_WINDOW_INCREMENT:
                self._control_frame("tiny WINDOW_UPDATE frames")
        return length

    def _header_block(self, kind: int, flags: int, raw: bytes, length: int) -> None:
        if kind == HEADERS:
            self._block_bytes = length
            fragment = length if not flags & PADDED else _unpadded(raw, length)
            if flags & PRIORITY_FLAG:
                fragment -= 5
        else:
            self._block_bytes += length
            fragment = length
        if self._block_bytes > self._max_header_block:
            raise FloodError(ENHANCE_YOUR_CALM, f"header block over {self._max_header_block} bytes")
        if fragment <= 0 and not flags & END_HEADERS:
            self._control_frame("empty header block fragments")

    def _control_frame(self, what: str) -> None:
        if self._control.hit():
            raise FloodError(ENHANCE_YOUR_CALM, f"flood of {what}")


def _unpadded(raw: bytes, length: int) -> int:
    """The payload length of a PADDED frame without its padding (-1 if malformed)."""
    if length < 1:
        return -1
    size = length - 1 - raw[_HEADER_SIZE]
    return size if size >= 0 else -1
