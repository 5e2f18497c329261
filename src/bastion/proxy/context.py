"""Per-connection and per-request state the core and the filters share.

`ClientInfo` is fixed for a client connection; `RequestContext` lives for one request and is
the only place filters keep per-request state. Plain slotted classes: they are created on the
hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.http.events import Headers, RequestHead

if TYPE_CHECKING:
    from bastion.balance.server import ServerState
    from bastion.http.target import RequestTarget
    from bastion.proxy.plan import CompiledRoute, ServerPlan, UpstreamPlan
    from bastion.proxy.ports import UpstreamLink


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    """What a listener does with the connections it accepts."""

    scheme: bytes = b"http"  # b"https" on TLS listeners
    redirect_to_https: bool = False
    # TLS listeners: whether a finished handshake is acceptable (the site's min_version)
    accepts_handshake: Callable[[Any], bool] | None = None


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """The TLS session of a client connection, read once after the handshake."""

    version: str
    cipher: str
    alpn: str | None
    server_name: str | None  # the SNI the client sent
    peer_certificate: bytes | None  # DER of the client certificate, when one was presented
    chain: tuple[bytes, ...] = ()  # what else the client sent, when the TLS library tells


PLAIN_LISTENER = ListenerInfo()


class ClientInfo:
    """Who is on the other end of a client connection, and how they reached us."""

    __slots__ = (
        "filter_state",
        "forwarding_cache",
        "listener",
        "local_ip",
        "local_port",
        "peer_ip",
        "peer_port",
        "peer_trusted",
        "pinned",
        "scheme",
        "tls",
    )

    def __init__(
        self,
        peer_ip: str,
        peer_port: int,
        local_port: int,
        scheme: bytes,
        peer_trusted: bool,
        listener: ListenerInfo = PLAIN_LISTENER,
        tls: TLSInfo | None = None,
        local_ip: str = "",
    ) -> None:
        self.peer_ip = peer_ip
        self.peer_port = peer_port
        # The address the client connected to (a believed PROXY header's destination, the
        # listener's own address otherwise; "" on unix sockets), and its port.
        self.local_ip = local_ip
        self.local_port = local_port
        self.scheme = scheme
        self.peer_trusted = peer_trusted
        self.listener = listener
        self.tls = tls
        # Per-connection state of filters (e.g. a client certificate's verdict), by filter.
        self.filter_state: dict[object, object] = {}
        # Forwarding headers computed for this connection, by (mode, Host, prefix).
        self.forwarding_cache: dict[tuple[str, bytes, bytes | None], Headers] = {}
        # The origin connection this client connection is bound to (NTLM/Negotiate), if any.
        self.pinned: PinnedLink | None = None

    def drop_pinned(self) -> None:
        """The client connection is over: so is the origin connection bound to it."""
        pinned, self.pinned = self.pinned, None
        if pinned is not None:
            pinned.link.close()


class PinnedLink:
    """An origin connection bound to one client connection (connection-bound auth)."""

    __slots__ = ("link", "server_index", "upstream")

    def __init__(self, upstream: str, server_index: int, link: UpstreamLink) -> None:
        self.upstream = upstream
        self.server_index = server_index
        self.link = link


class RequestContext:
    """Everything known about one request while it is served."""

    __slots__ = (
        "client",
        "client_ip",
        "flag",
        "head",
        "hook_request",
        "prefix",
        "request_id",
        "route",
        "sent_host",
        "server",
        "server_state",
        "started",
        "sticky_index",
        "target",
        "tried",
        "upstream",
        "upstream_target",
    )

    def __init__(self, head: RequestHead, client: ClientInfo, started: float) -> None:
        self.head = head
        self.client = client
        self.client_ip = client.peer_ip
        self.started = started
        self.request_id = ""
        self.target: RequestTarget | None = None
        self.route: CompiledRoute | None = None
        self.upstream: UpstreamPlan | None = None  # the route's, unless a hook chose another
        self.server: ServerPlan | None = None
        self.server_state: ServerState | None = None  # counted in flight while set
        self.tried: tuple[ServerState, ...] = ()  # servers that failed an attempt of it
        self.sticky_index: int | None = None  # the server a sticky pin named
        self.upstream_target = b""  # path + query as the origin will see it
        self.prefix: bytes | None = None  # mount prefix removed by strip_prefix
        self.sent_host: bytes | None = None  # the Host the origin got, when not the client's
        # The hooks' view of this request (bastion.hooks.Request), made by the first hook
        # that runs; typed loosely as the core does not know hooks.
        self.hook_request: object = None
        self.flag = "ok"

    @property
    def headers(self) -> Headers:
        return self.head.headers
