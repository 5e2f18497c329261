"""HTTP/2 request heads: a decoded header block becomes the RequestHead HTTP/1.1 produces.

`request_head` maps the pseudo-header fields to method, target and host, and the regular
fields to the header list the proxy core edits, exactly as the HTTP/1.1 reader would hand
them over (Host present, `_` names dropped, cookie crumbs already joined by h2's inbound
normalisation). It refuses, with `MalformedRequestError` carrying the RST_STREAM code:
everything h2's header validation refuses (missing or repeated pseudo-fields, pseudo after
regular, uppercase or illegal characters, connection-specific fields, TE other than
"trailers", :authority and Host disagreeing), and what h2 leaves out: a method that is not a
token, a :scheme other than http/https, a :path not origin-form (or `*` for OPTIONS) or
holding spaces or controls, an invalid authority, a Content-Length on a body-less request,
and CONNECT in any form (nothing is tunnelled over HTTP/2).

Pure functions over h2's decoded fields: no connection state, no sockets, no asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, validate_headers
from hpack.struct import Header

from bastion.http.events import Framing, Headers, RequestHead

PROTOCOL_ERROR = 0x1
REFUSED_STREAM = 0x7

_REQUEST = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)
_TRAILERS = _REQUEST._replace(is_trailer=True)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 7.2 uri-host [":" port], as the HTTP/1.1 reader checks Host; no userinfo.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::[0-9]{1,5})?")
_SPACE_OR_CONTROL = re.compile(rb"[\x00-\x20\x7f]")
_COLON = ord(":")
_SLASH = ord("/")


class MalformedRequestError(Exception):
    """A request refused with a stream error (`error_code`); `reason` is for logs."""

    def __init__(self, reason: str, error_code: int = PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code


def request_head(fields: Iterable[Header], ended: bool) -> tuple[RequestHead, int | None]:
    """The RequestHead of a decoded header block, and the body length h2 holds it to.

    `ended`: the HEADERS frame ended the stream. Raises MalformedRequestError.
    """
    try:
        checked = list(validate_headers(fields, _REQUEST))
    except ProtocolError as error:
        raise MalformedRequestError(str(error)) from None
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    size = 0
    host_field: bytes | None = None
    content_length: int | None = None
    for name, value in checked:
        size += len(name) + len(value) + 32  # RFC 9113 6.5.2: the header list size
        if name[0] == _COLON:
            pseudo[name] = value
        elif b"_" in name:
            # Like the HTTP/1.1 reader (and nginx): `content_length` may reach a CGI/WSGI
            # origin as the same variable as the real header. Dropped, never forwarded.
            continue
        elif name == b"content-length":
            if content_length is None:  # h2 has refused differing values
                content_length = int(value)
                headers.append((name, value))
        else:
            if name == b"host":
                host_field = value
            headers.append((name, value))
    method, target, host = _request_line(pseudo, host_field)
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
    # h2 holds a HEAD request to an empty body whatever its Content-Length says.
    return head, 0 if method == b"HEAD" else content_length


def _request_line(
    pseudo: dict[bytes, bytes], host_field: bytes | None
) -> tuple[bytes, bytes, bytes]:
    """Method, target and host; h2 has checked which pseudo-fields are present, once each."""
    method = pseudo[b":method"]
    if method == b"CONNECT":
        raise MalformedRequestError("CONNECT is not tunnelled over HTTP/2", REFUSED_STREAM)
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
    if host is None or len(host) > 255 or _HOST.fullmatch(host) is None:
        raise MalformedRequestError("invalid :authority or Host")
    return method, target, host


def request_trailers(fields: Iterable[Header]) -> Headers:
    """The fields of a trailer block, `_` names dropped; raises MalformedRequestError."""
    try:
        checked = list(validate_headers(fields, _TRAILERS))
    except ProtocolError as error:
        raise MalformedRequestError(str(error)) from None
    return [(name, value) for name, value in checked if b"_" not in name]
