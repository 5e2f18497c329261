"""HTTP/2 request heads: a decoded header block becomes the RequestHead HTTP/1.1 produces.

`request_head` maps the pseudo-header fields to method, target and host, and the regular
fields to the header list the proxy core edits, exactly as the HTTP/1.1 reader would hand
them over (Host present, `_` names dropped, cookie crumbs joined with "; "). It refuses, with
`MalformedRequestError` carrying the RST_STREAM code, what RFC 9113 8.2 and 8.3 call malformed:
names with uppercase letters, controls, spaces or a colon past the first character; values
with NUL, CR or LF or with surrounding whitespace; unknown, repeated, missing or misplaced
pseudo-fields; connection-specific fields and TE other than "trailers"; :authority and Host
disagreeing; Content-Length values that are not one number. It also refuses a method that is
not a token, a :scheme other than http/https, a :path not origin-form (or `*` for OPTIONS)
or holding spaces or controls, an invalid authority, a Content-Length on a body-less request,
and CONNECT in any form (nothing is tunnelled over HTTP/2).

Pure functions over decoded fields: no connection state, no sockets, no asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bastion.http.events import Framing, Headers, RequestHead

PROTOCOL_ERROR = 0x1
REFUSED_STREAM = 0x7

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9113 8.2.1: no 0x00-0x20, no A-Z, no 0x7f-0xff, and no colon (pseudo-fields aside).
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_DIGITS = re.compile(rb"[0-9]{1,18}")
# RFC 9110 7.2 uri-host [":" port], as the HTTP/1.1 reader checks Host; no userinfo.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::[0-9]{1,5})?")
_SPACE_OR_CONTROL = re.compile(rb"[\x00-\x20\x7f]")
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_COLON = ord(":")
_SLASH = ord("/")

Field = tuple[bytes, bytes]


class MalformedRequestError(Exception):
    """A request refused with a stream error (`error_code`); `reason` is for logs."""

    def __init__(self, reason: str, error_code: int = PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code


def request_head(fields: Iterable[Field], ended: bool) -> tuple[RequestHead, int | None]:
    """The RequestHead of a decoded header block, and the body length to hold it to.

    `ended`: the HEADERS frame ended the stream. Raises MalformedRequestError.
    """
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    cookies: list[bytes] = []
    size = 0
    host_field: bytes | None = None
    content_length: int | None = None
    regular_seen = False
    for name, value in fields:
        size += len(name) + len(value) + 32  # RFC 9113 6.5.2: the header list size
        if name and name[0] == _COLON:
            if regular_seen:
                raise MalformedRequestError(f"pseudo-field {name[:32]!r} after a regular one")
            if name not in _REQUEST_PSEUDO or name in pseudo:
                raise MalformedRequestError(f"unknown or repeated pseudo-field {name[:32]!r}")
            _check_value(name, value)
            pseudo[name] = value
            continue
        _check_field(name, value)
        regular_seen = True
        if b"_" in name:
            # Like the HTTP/1.1 reader (and nginx): `content_length` may reach a CGI/WSGI
            # origin as the same variable as the real header. Dropped, never forwarded.
            continue
        if name == b"cookie":
            cookies.append(value)
        elif name == b"content-length":
            if content_length is None:
                headers.append((name, value))
            content_length = _content_length(value, content_length)
        elif name == b"host":
            if host_field is not None:
                raise MalformedRequestError("more than one Host field")
            host_field = value
            headers.append((name, value))
        else:
            headers.append((name, value))
    method, target, host = _request_line(pseudo, host_field)
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))  # RFC 9113 8.2.3
    if host_field is None:
        headers.insert(0, (b"host", host))  # the origin gets a Host header
    if ended:
        if content_length:
            raise MalformedRequestError("content-length with no body")
        framing = Framing.NONE
    else:
        framing = Framing.CHUNKED if content_length is None else Framing.LENGTH
    head = RequestHead(
        method=method,
        target=target,
        http_version=b"2",
        headers=headers,
        framing=framing,
        content_length=content_length,
        keep_alive=True,
        host=host,
        head_size=size,
    )
    # A HEAD request carries no body, whatever its Content-Length says.
    return head, 0 if method == b"HEAD" else content_length


_MappedHead = tuple[RequestHead, int | None] | MalformedRequestError


class RequestHeadMemo:
    """`request_head` of recent header blocks, valid while the HPACK table stays the same.

    A client repeating a request sends the same block bytes; its head is then copied from
    the remembered one instead of being checked and mapped again.
    """

    __slots__ = ("_generation", "_heads")

    _LIMIT = 32

    def __init__(self) -> None:
        self._heads: dict[tuple[bytes, bool], _MappedHead] = {}
        self._generation = 0

    def request_head(
        self, block: bytes, fields: Iterable[Field], ended: bool, generation: int
    ) -> tuple[RequestHead, int | None]:
        """As `request_head(fields, ended)`; `generation`: the decoder's table generation."""
        if generation != self._generation:
            self._heads.clear()
            self._generation = generation
        key = (block, ended)
        mapped = self._heads.get(key)
        if mapped is None:
            try:
                mapped = request_head(fields, ended)
            except MalformedRequestError as malformed:
                mapped = malformed
            if len(self._heads) < self._LIMIT:
                self._heads[key] = mapped
        if isinstance(mapped, MalformedRequestError):
            # A new exception each time: re-raising one instance would grow its traceback.
            raise MalformedRequestError(mapped.reason, mapped.error_code)
        head, expected_length = mapped
        return _copy(head), expected_length


def _copy(head: RequestHead) -> RequestHead:
    """A RequestHead the proxy core may edit (it changes `headers` in place)."""
    return RequestHead(
        method=head.method,
        target=head.target,
        http_version=head.http_version,
        headers=list(head.headers),
        framing=head.framing,
        content_length=head.content_length,
        keep_alive=head.keep_alive,
        host=head.host,
        head_size=head.head_size,
    )


def _check_field(name: bytes, value: bytes) -> None:
    if _FIELD_NAME.fullmatch(name) is None:
        raise MalformedRequestError(f"invalid field name {name[:32]!r}")
    if name in _CONNECTION_SPECIFIC:
        raise MalformedRequestError(f"connection-specific field {name!r}")
    if name == b"te" and value.lower() != b"trailers":
        raise MalformedRequestError("TE other than trailers")
    _check_value(name, value)


def _check_value(name: bytes, value: bytes) -> None:
    if value and _BAD_VALUE.search(value) is not None:
        raise MalformedRequestError(f"invalid value of {name[:32]!r}")


def _content_length(value: bytes, previous: int | None) -> int:
    if _DIGITS.fullmatch(value) is None:
        raise MalformedRequestError("invalid content-length")
    length = int(value)
    if previous is not None and previous != length:
        raise MalformedRequestError("differing content-length values")
    return length


def _request_line(
    pseudo: dict[bytes, bytes], host_field: bytes | None
) -> tuple[bytes, bytes, bytes]:
    """Method, target and host from the pseudo-fields (each present at most once)."""
    method = pseudo.get(b":method")
    if method == b"CONNECT":
        raise MalformedRequestError("CONNECT is not tunnelled over HTTP/2", REFUSED_STREAM)
    if method is None or b":scheme" not in pseudo or not pseudo.get(b":path"):
        raise MalformedRequestError("missing :method, :scheme or :path")
    if b":protocol" in pseudo:
        raise MalformedRequestError(":protocol outside extended CONNECT")
    if _TOKEN.fullmatch(method) is None:
        raise MalformedRequestError(f"invalid method {method[:32]!r}")
    if pseudo[b":scheme"] not in (b"http", b"https"):
        raise MalformedRequestError(f"unsupported :scheme {pseudo[b':scheme'][:16]!r}")
    target = pseudo[b":path"]
    if not (target[0] == _SLASH or (target == b"*" and method == b"OPTIONS")):
        raise MalformedRequestError(f"invalid :path {target[:64]!r}")
    if _SPACE_OR_CONTROL.search(target) is not None:
        raise MalformedRequestError(":path holds a space or a control character")
    host = pseudo.get(b":authority", host_field)
    if host_field is not None and host != host_field:
        raise MalformedRequestError(":authority and Host disagree")
    if host is None or len(host) > 255 or _HOST.fullmatch(host) is None:
        raise MalformedRequestError("invalid :authority or Host")
    return method, target, host


def request_trailers(fields: Iterable[Field]) -> Headers:
    """The fields of a trailer block, `_` names dropped; raises MalformedRequestError."""
    trailers: Headers = []
    for name, value in fields:
        if name and name[0] == _COLON:
            raise MalformedRequestError("pseudo-field in trailers")
        _check_field(name, value)
        if b"_" not in name:
            trailers.append((name, value))
    return trailers
