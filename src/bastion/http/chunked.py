"""HTTP/1.1 chunked transfer coding, the writing side (llhttp does the reading).

Pure functions; nothing here knows sockets or exchanges.
"""

from __future__ import annotations

from bastion.http.events import Headers


def chunk(data: bytes) -> bytes:
    """One chunk carrying `data` (never empty: an empty chunk would end the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Headers) -> bytes:
    """The last chunk and the trailer section that ends a chunked body."""
    return b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"
