"""A route's header policy: set and remove request and response headers, hide the origin's
software, add the security preset.

Two filters, each built only when its direction has something to do: `RequestHeaderPolicy`
plugs into `upstream_request` (after the forwarding and client-certificate filters, so their
headers can be removed or replaced; the core then adds X-Request-Id, Via and the framing) and
`ResponseHeaderPolicy` into `response_headers`. Everything is compiled here once per plan:
names to drop as one frozenset, values as bytes, values with placeholders as a bytes format
and the getters that fill it, so a request pays one scan of its headers and the appends.

Response edits apply to the origin's responses and to a route's own answers (a redirect);
bastion's own error answers (502, 504, 413…, which carry a termination flag other than "ok")
get only the security preset: values written for the application's responses (a long
Cache-Control, a Content-Type) must not turn an outage page into something cached or
mislabelled, as nginx's `add_header` and HAProxy's `http-response` rules also spare them.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter

from bastion.config.headers import HIDDEN_ORIGIN_HEADERS, SECURITY_PRESET, HeaderPolicySettings
from bastion.http.events import Headers, ResponseHead
from bastion.proxy.context import RequestContext
from bastion.proxy.phases import Filter

_name = itemgetter(0)  # a header field's name
_FRAME_OPTIONS = b"x-frame-options"
_CSP = b"content-security-policy"


def _client_ip(ctx: RequestContext) -> bytes:
    return ctx.client_ip.encode("ascii")


def _host(ctx: RequestContext) -> bytes:
    return ctx.head.host


def _scheme(ctx: RequestContext) -> bytes:
    return ctx.client.scheme


def _uri(ctx: RequestContext) -> bytes:
    target = ctx.target
    return target.uri if target is not None else ctx.head.target


def _request_id(ctx: RequestContext) -> bytes:
    return ctx.request_id.encode("ascii")


# Each placeholder of config.headers.HEADER_PLACEHOLDERS: where its value comes from. All of
# them are valid header values: addresses, ids and a Host and target the codecs checked.
_PLACEHOLDERS: dict[str, Callable[[RequestContext], bytes]] = {
    "client_ip": _client_ip,
    "host": _host,
    "scheme": _scheme,
    "uri": _uri,
    "request_id": _request_id,
}


class ValueTemplate:
    """A header value with placeholders, compiled to a bytes %-format and its getters."""

    __slots__ = ("_format", "_getters")

    def __init__(
        self, format_: bytes, getters: tuple[Callable[[RequestContext], bytes], ...]
    ) -> None:
        self._format = format_
        self._getters = getters

    def render(self, ctx: RequestContext) -> bytes:
        return self._format % tuple([getter(ctx) for getter in self._getters])


def compile_value(value: str) -> bytes | ValueTemplate:
    """A configured value (checked by config.headers): its bytes, or a template when it holds
    placeholders. `{{` and `}}` stand for literal braces."""
    literals: list[str] = []
    parts: list[bytes] = []
    getters: list[Callable[[RequestContext], bytes]] = []
    for literal, name, _, _ in string.Formatter().parse(value):
        literals.append(literal)
        parts.append(literal.encode("ascii").replace(b"%", b"%%"))
        if name is not None:
            parts.append(b"%s")
            getters.append(_PLACEHOLDERS[name])
    if not getters:
        return "".join(literals).encode("ascii")
    return ValueTemplate(b"".join(parts), tuple(getters))


class _Edits:
    """One direction's edits, compiled: the names to drop, then the fields to add."""

    __slots__ = ("drop", "fixed", "templated")

    def __init__(self, set_: Mapping[str, str], remove: Iterable[str]) -> None:
        fixed: list[tuple[bytes, bytes]] = []
        templated: list[tuple[bytes, ValueTemplate]] = []
        for name, value in set_.items():
            key = name.lower().encode("ascii")
            compiled = compile_value(value)
            if isinstance(compiled, ValueTemplate):
                templated.append((key, compiled))
            else:
                fixed.append((key, compiled))
        self.fixed = tuple(fixed)
        self.templated = tuple(templated)
        added = {name.lower().encode("ascii") for name in set_}
        self.drop = frozenset(added | {name.lower().encode("ascii") for name in remove})

    def apply(self, ctx: RequestContext, headers: Headers) -> None:
        """Edit `headers` in place."""
        if not self.drop.isdisjoint(map(_name, headers)):
            drop = self.drop
            headers[:] = [field for field in headers if field[0] not in drop]
        headers.extend(self.fixed)
        for name, template in self.templated:
            headers.append((name, template.render(ctx)))


class RequestHeaderPolicy(Filter):
    name = "header_policy"

    def __init__(self, settings: HeaderPolicySettings) -> None:
        self.edits = _Edits(settings.request.set, settings.request.remove)

    def upstream_request(self, ctx: RequestContext, headers: Headers) -> None:
        self.edits.apply(ctx, headers)


class ResponseHeaderPolicy(Filter):
    name = "header_policy"

    def __init__(self, settings: HeaderPolicySettings) -> None:
        response = settings.response
        hidden = HIDDEN_ORIGIN_HEADERS if settings.hide_origin else ()
        edits = _Edits(response.set, (*response.remove, *hidden))
        self.edits = edits if edits.drop else None
        explicit = {name.lower() for name in (*response.set, *response.remove)}
        preset = SECURITY_PRESET if settings.security else ()
        self.preset = tuple(
            (name.lower().encode("ascii"), value.encode("ascii"))
            for name, value in preset
            if name.lower() not in explicit
        )

    def response_headers(self, ctx: RequestContext, head: ResponseHead) -> None:
        if self.edits is not None and not _own_error_answer(ctx, head):
            self.edits.apply(ctx, head.headers)
        if self.preset:
            _add_missing(head.headers, self.preset)


def _own_error_answer(ctx: RequestContext, head: ResponseHead) -> bool:
    """An error answer bastion made itself: the pipeline sets the request's termination flag
    before a local answer goes out, and leaves it "ok" for the origin's responses."""
    return head.status >= 400 and ctx.flag != "ok"


def _add_missing(headers: Headers, preset: tuple[tuple[bytes, bytes], ...]) -> None:
    """Append each preset field whose name the response does not carry yet."""
    present = set(map(_name, headers))
    for field in preset:
        name = field[0]
        if name in present:
            continue
        if name == _FRAME_OPTIONS and _csp_sets_frame_ancestors(headers):
            continue  # CSP frame-ancestors supersedes X-Frame-Options: the app chose
        headers.append(field)


def _csp_sets_frame_ancestors(headers: Headers) -> bool:
    return any(name == _CSP and b"frame-ancestors" in value.lower() for name, value in headers)


def header_policy_filters(settings: HeaderPolicySettings) -> tuple[Filter, ...]:
    """The filters a route's `headers` table needs: none when it changes nothing."""
    filters: list[Filter] = []
    if settings.request.active:
        filters.append(RequestHeaderPolicy(settings))
    if settings.response.active or settings.hide_origin or settings.security:
        filters.append(ResponseHeaderPolicy(settings))
    return tuple(filters)
