"""`Request`: a hook's view of one request, from its head to its log record.

One view is made per request, by the first hook that runs, and every hook of the request
gets the same one (so `request.state` carries data from one phase, or one hook, to the
next). It reads bastion's request context directly and edits it in place; what may be
edited depends on the phase (`Stage`), and an edit the phase cannot honour raises instead
of being silently lost. Mutating members are documented with the phases that allow them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bastion.hooks.connection import ClientCertificate, TLSSession
from bastion.hooks.fields import REQUEST_RESERVED, HeaderFields
from bastion.http.events import Headers
from bastion.http.target import RequestTarget, TargetError, parse_target

if TYPE_CHECKING:
    from bastion.hooks.hook import LogEntry
    from bastion.hooks.response import Response
    from bastion.proxy.context import RequestContext
    from bastion.proxy.plan import UpstreamPlan

# RFC 9110 7.2 uri-host [":" port], as the request readers check Host; no userinfo.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::[0-9]{1,5})?")


class Stage(enum.Enum):
    """Where the request is in its life, which decides what a hook may change."""

    BEFORE_ROUTING = "on_request (before routing)"
    ROUTED = "on_request"
    TO_ORIGIN = "before_upstream"
    ANSWERING = "the response phases"


class Request:
    """One request as hooks see it. Strings are decoded as Latin-1 (ASCII for the URI)."""

    __slots__ = (
        "_chosen",
        "_ctx",
        "_failed",
        "_fields",
        "_headers",
        "_log_entry",
        "_response",
        "_stage",
        "_upstreams",
        "state",
    )

    def __init__(
        self, ctx: RequestContext, upstreams: Mapping[str, UpstreamPlan], stage: Stage
    ) -> None:
        self._ctx = ctx
        self._upstreams = upstreams
        self._chosen: UpstreamPlan | None = None  # chosen before routing, applied after it
        self._failed = False  # a hook raised: the others stand aside for this request
        self._response: Response | None = None
        self._log_entry: LogEntry | None = None
        self._stage = stage
        self._fields: Headers = ctx.head.headers
        self._headers = self._view_of(self._fields)
        self.state: dict[str, Any] = {}
        """Free for hooks: data to keep from one phase (or one hook) to the next."""

    # -- who is asking ----------------------------------------------------------------

    @property
    def request_id(self) -> str:
        """The id in bastion's logs, sent to the origin as X-Request-Id."""
        return self._ctx.request_id

    @property
    def client_ip(self) -> str:
        """The client's address: the TCP peer's, or the one a trusted proxy reported
        (`server.trusted_proxies`: X-Forwarded-For, Forwarded, a PROXY header)."""
        return self._ctx.client_ip

    @property
    def client_port(self) -> int:
        """The source port of the client connection."""
        return self._ctx.client.peer_port

    @property
    def scheme(self) -> str:
        """`"https"` when the client came over TLS, else `"http"`."""
        return self._ctx.client.scheme.decode("ascii")

    @property
    def tls(self) -> TLSSession | None:
        """The client connection's TLS session, or None on plain HTTP."""
        tls = self._ctx.client.tls
        if tls is None:
            return None
        return TLSSession(tls.version, tls.cipher, tls.alpn, tls.server_name)

    @property
    def client_certificate(self) -> ClientCertificate | None:
        """The certificate the client presented (sites with `tls.client_auth`), or None."""
        client = self._ctx.client
        der = client.tls.peer_certificate if client.tls is not None else None
        if der is None:
            return None
        cached = client.filter_state.get(ClientCertificate)
        if not isinstance(cached, ClientCertificate):
            cached = client.filter_state[ClientCertificate] = ClientCertificate(der)
        return cached

    # -- what is asked ----------------------------------------------------------------

    @property
    def method(self) -> str:
        return self._ctx.head.method.decode("ascii")

    @property
    def http_version(self) -> str:
        """`"1.0"`, `"1.1"` or `"2"`, as the client spoke (origins always get HTTP/1.1)."""
        return self._ctx.head.http_version.decode("ascii")

    @property
    def headers(self) -> HeaderFields:
        """The request's header fields. In `on_request`: as the client sent them (hop-by-hop
        fields are removed later); in `before_upstream`: the list the origin will get.
        Editable in those two phases, read-only after."""
        return self._headers

    @property
    def host(self) -> str:
        """The Host (`name[:port]`). Set it in a server hook's `on_request` to route as if
        the client had asked for that host; after routing (and in `before_upstream`) it
        changes only the Host the origin gets — X-Forwarded-Host keeps the client's."""
        for name, value in self._fields:
            if name == b"host":
                return value.decode("latin-1")
        return self._ctx.head.host.decode("latin-1")

    @host.setter
    def host(self, value: str) -> None:
        self._writable("host")
        raw = value.encode("latin-1", "replace") if isinstance(value, str) else b""
        if _HOST.fullmatch(raw) is None:
            raise ValueError(f'not a host: {value!r} (expected "name" or "name:port")')
        if self._stage is Stage.BEFORE_ROUTING:
            self._ctx.head.host = raw
        self._fields[:] = [pair for pair in self._fields if pair[0] != b"host"]
        self._fields.append((b"host", raw))

    @property
    def path(self) -> str:
        """The path (percent-encoded, normalised), as the origin will get it: after
        `strip_prefix` on routes that have it. Settable in `on_request` (in a server hook
        it then chooses the route) and `before_upstream`."""
        return self._ctx.upstream_target.partition(b"?")[0].decode("ascii")

    @path.setter
    def path(self, value: str) -> None:
        raw = _uri_part(value, "path")
        if not raw.startswith(b"/") or b"?" in raw:
            raise ValueError(f'a path starts with "/" and holds no "?", got {value!r}')
        self._retarget(raw, self._ctx.upstream_target.partition(b"?")[2])

    @property
    def query(self) -> str:
        """The query string without its `?` ("" when none), as sent. Settable like `path`."""
        return self._ctx.upstream_target.partition(b"?")[2].decode("ascii")

    @query.setter
    def query(self, value: str) -> None:
        self._retarget(self._ctx.upstream_target.partition(b"?")[0], _uri_part(value, "query"))

    # -- where it goes ----------------------------------------------------------------

    @property
    def site(self) -> str | None:
        """The site's first host name, once routed (None in a server hook's on_request)."""
        route = self._ctx.route
        return route.site if route is not None and route.routed else None

    @property
    def route(self) -> str | None:
        """The route's `path` (or `path_regex`), once routed."""
        route = self._ctx.route
        return route.label if route is not None and route.routed else None

    @property
    def upstream(self) -> str | None:
        """The name of the `[upstream.NAME]` the request goes to (None before routing unless
        a hook chose one, and on redirect routes). Set it in `on_request` to send the
        request elsewhere; an unknown name is a ValueError."""
        chosen = self._chosen or self._ctx.upstream
        return chosen.name if chosen is not None else None

    @upstream.setter
    def upstream(self, name: str) -> None:
        if self._stage not in (Stage.BEFORE_ROUTING, Stage.ROUTED):
            raise RuntimeError("the upstream can only be chosen in on_request")
        plan = self._upstreams.get(name)
        if plan is None:
            defined = ", ".join(sorted(self._upstreams)) or "none"
            raise ValueError(f'no upstream named "{name}" (defined: {defined})')
        if self._stage is Stage.BEFORE_ROUTING:
            self._chosen = plan  # routing sets the route's upstream: this one wins after it
        else:
            self._ctx.upstream = plan

    def __repr__(self) -> str:
        return f"Request({self.method} {self.host}{self.path} id={self.request_id})"

    # -- for bastion.hooks.invoke -----------------------------------------------------

    def _enter(self, stage: Stage, fields: Headers | None = None) -> None:
        """Move to `stage`, viewing `fields` (the client's header list by default)."""
        if fields is None:
            fields = self._ctx.head.headers
        if stage is self._stage and fields is self._fields:
            return
        self._stage = stage
        self._fields = fields
        self._headers = self._view_of(fields)

    def _view_of(self, fields: Headers) -> HeaderFields:
        read_only = None
        if self._stage is Stage.ANSWERING:
            read_only = "request headers can only change in on_request and before_upstream"
        return HeaderFields(fields, REQUEST_RESERVED, read_only)

    def _writable(self, what: str) -> None:
        if self._stage is Stage.ANSWERING:
            raise RuntimeError(f"the {what} can only change in on_request and before_upstream")

    def _retarget(self, path: bytes, query: bytes) -> None:
        """Send the request to `path?query` (before routing: route it by that too)."""
        self._writable("path and query")
        ctx = self._ctx
        uri = path + b"?" + query if query else path
        try:
            target = parse_target(uri, ctx.head.method)
        except TargetError as error:
            raise ValueError(f"not a valid path and query: {error}") from None
        if self._stage is Stage.BEFORE_ROUTING:
            authority = ctx.target.authority if ctx.target is not None else None
            ctx.target = RequestTarget(target.path, target.query, authority)
        ctx.upstream_target = target.uri


def _uri_part(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        raise ValueError(f"the {what} must be ASCII text (percent-encode the rest), got {value!r}")
    return value.encode("ascii")
