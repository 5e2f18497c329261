"""The neutral message events that the HTTP codecs produce and the proxy core consumes.

A codec turns bytes into these events; everything above the codec (routing, filters, logs)
reads only these. Header names are lowercase bytes, values bytes, kept as ordered pairs. This
module knows nothing of sockets, asyncio or configuration.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


class Framing(enum.Enum):
    """How a message body is delimited on the wire."""

    NONE = "none"  # no body at all
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"  # chunked transfer coding, possibly with trailers
    CLOSE = "close"  # until the connection closes (responses only)


@dataclass(slots=True)
class RequestHead:
    """A parsed, validated request head.

    Mutable on purpose: the request-header phases edit `headers` in place before the
    upstream request is serialised.
    """

    method: bytes
    target: bytes
    http_version: bytes  # b"1.0" or b"1.1"
    headers: Headers
    framing: Framing
    content_length: int | None
    keep_alive: bool
    host: bytes
    expect_continue: bool = False
    upgrade: bytes | None = None  # the Upgrade token(s) when the client asked to switch protocols
    head_size: int = 0  # bytes of request line and headers, for logs


@dataclass(slots=True)
class ResponseHead:
    """A parsed response head from an origin, or one bastion builds itself."""

    status: int
    reason: bytes
    headers: Headers
    http_version: bytes = b"1.1"
    framing: Framing = Framing.LENGTH
    content_length: int | None = None
    keep_alive: bool = True
    keepalive_timeout: float | None = None  # learned from the origin's `Keep-Alive: timeout=N`

    @property
    def informational(self) -> bool:
        return 100 <= self.status < 200


@dataclass(frozen=True, slots=True)
class BodyChunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    trailers: Headers = field(default_factory=list)


Event = RequestHead | ResponseHead | BodyChunk | EndOfMessage


# The end of a message without trailers, shared: nothing ever mutates an event's trailers.
END_OF_MESSAGE = EndOfMessage([])
