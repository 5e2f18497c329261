"""What the HTTP/2 server codec tells the connection around it: stream events and failure.

Plain records, no behaviour; bastion.http.h2_server produces them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.http.events import Headers, RequestHead
from bastion.http.h2_frames import PROTOCOL_ERROR


@dataclass(frozen=True, slots=True)
class RequestReceived:
    stream_id: int
    head: RequestHead
    ended: bool  # END_STREAM on the HEADERS: no body, and no StreamEnded follows


@dataclass(frozen=True, slots=True)
class StreamData:
    stream_id: int
    data: bytes
    flow_len: int  # flow-controlled length: pass to acknowledge() once consumed


@dataclass(frozen=True, slots=True)
class StreamEnded:
    stream_id: int
    trailers: Headers  # the end of the request body, with its trailers if any


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone: the client reset it, or the codec did (malformed body/trailers)."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    stream_id: int  # 0: the connection window (or every stream's): retry all blocked streams


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client sent GOAWAY: it opens no more streams; those in flight may still finish."""

    error_code: int


H2Event = RequestReceived | StreamData | StreamEnded | StreamReset | WindowOpened | ConnectionClosed


class H2ProtocolFailure(Exception):  # noqa: N818 (the name the server side uses)
    """The connection must end; its GOAWAY is already queued in `data_to_send()`."""

    def __init__(self, reason: str, error_code: int = PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code
