"""The Request and Response views (bastion.hooks.request, .response) through the calls
bastion makes in each phase (bastion.hooks.invoke): what each phase lets a hook change,
and where the change lands in the request context. No sockets: a context made by hand."""

from __future__ import annotations

import hashlib
import time

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.config import parse_config
from bastion.hooks import Hook, Reply, Request, Response, invoke
from bastion.http.events import Framing, RequestHead, ResponseHead
from bastion.http.target import parse_target
from bastion.proxy.context import ClientInfo, RequestContext, TLSInfo
from bastion.proxy.plan import UpstreamPlan, build_plan

CONFIG = """
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  upstream = "a"
[upstream.a]
servers = ["http://127.0.0.1:9"]
[upstream.b]
servers = ["http://127.0.0.1:10"]
"""


@pytest.fixture(scope="module")
def upstreams() -> dict[str, UpstreamPlan]:
    return build_plan(parse_config(CONFIG, "t.toml"), lambda *_: ()).upstreams


def context(target: bytes = b"/shop/cart?x=1", tls: TLSInfo | None = None) -> RequestContext:
    head = RequestHead(
        method=b"GET",
        target=target,
        http_version=b"1.1",
        headers=[(b"host", b"shop.test"), (b"accept", b"*/*")],
        framing=Framing.NONE,
        content_length=None,
        keep_alive=True,
        host=b"shop.test",
    )
    client = ClientInfo("192.0.2.7", 40000, 443, b"https" if tls else b"http", False, tls=tls)
    ctx = RequestContext(head, client, time.monotonic())
    ctx.request_id = "rid-1"
    ctx.target = parse_target(target, b"GET")
    ctx.upstream_target = ctx.target.uri
    return ctx


class Calls(Hook):
    """Runs the function the test gives it as on_request / before_upstream."""

    def __init__(self, action) -> None:  # type: ignore[no-untyped-def]
        super().__init__({})
        self.action = action

    def on_request(self, request: Request) -> Reply | None:
        return self.action(request)  # type: ignore[no-any-return]

    def before_upstream(self, request: Request) -> None:
        self.action(request)


def test_the_view_reads_the_request_and_is_made_once(upstreams: dict[str, UpstreamPlan]) -> None:
    ctx = context()
    request = invoke.request_of(ctx, upstreams)
    assert invoke.request_of(ctx, upstreams) is request is ctx.hook_request
    assert (request.method, request.host, request.path, request.query) == (
        "GET",
        "shop.test",
        "/shop/cart",
        "x=1",
    )
    assert (request.client_ip, request.client_port, request.scheme) == ("192.0.2.7", 40000, "http")
    assert (request.request_id, request.http_version) == ("rid-1", "1.1")
    assert (request.site, request.route, request.upstream) == (None, None, None)
    assert request.tls is None and request.client_certificate is None
    assert request.headers.get("accept") == "*/*"


def test_before_routing_path_host_and_upstream_change_what_is_routed(
    upstreams: dict[str, UpstreamPlan],
) -> None:
    ctx = context(b"http://shop.test/old?x=1")
    request = invoke.request_of(ctx, upstreams)

    def edit(request: Request) -> None:
        request.path = "/new/%7euser/../page"
        request.query = "y=2"
        request.host = "other.test:8080"
        request.upstream = "b"

    invoke.on_request(Calls(edit), request, before_routing=True)
    assert ctx.target is not None
    assert (ctx.target.path, ctx.target.query) == (b"/new/page", b"y=2")  # normalised
    assert ctx.target.authority == b"shop.test"  # an absolute-form target keeps it
    assert ctx.upstream_target == b"/new/page?y=2"
    assert ctx.head.host == b"other.test:8080"
    assert ctx.head.headers == [(b"accept", b"*/*"), (b"host", b"other.test:8080")]
    assert ctx.upstream is None and request.upstream == "b"  # applied once routed
    ctx.upstream = upstreams["a"]  # routing sets the route's
    invoke.apply_choice(ctx)
    assert ctx.upstream is upstreams["b"]


def test_after_routing_only_what_the_origin_gets_changes(
    upstreams: dict[str, UpstreamPlan],
) -> None:
    ctx = context()
    ctx.upstream = upstreams["a"]
    ctx.route = object()  # type: ignore[assignment]  # routed
    target = ctx.target
    request = invoke.request_of(ctx, upstreams)

    def edit(request: Request) -> None:
        request.path = "/cart"
        request.host = "backend.internal"
        request.upstream = "b"

    invoke.on_request(Calls(edit), request, before_routing=False)
    assert ctx.target is target  # routing is over: the client's target stays
    assert ctx.upstream_target == b"/cart?x=1"
    assert ctx.head.host == b"shop.test"  # X-Forwarded-Host keeps the client's
    assert (b"host", b"backend.internal") in ctx.head.headers
    assert ctx.upstream is upstreams["b"]


def test_before_upstream_edits_the_origins_list_then_the_request_is_read_only(
    upstreams: dict[str, UpstreamPlan],
) -> None:
    ctx = context()
    request = invoke.request_of(ctx, upstreams)
    outgoing = [(b"host", b"shop.test"), (b"x-forwarded-for", b"192.0.2.7")]

    def edit(request: Request) -> None:
        assert request.headers.get("x-forwarded-for") == "192.0.2.7"
        request.headers.set("x-secret", "s")
        request.path = "/other"
        with pytest.raises(RuntimeError, match="only be chosen in on_request"):
            request.upstream = "b"

    invoke.before_upstream(Calls(edit), request, outgoing)
    assert outgoing[-1] == (b"x-secret", b"s")
    assert b"x-secret" not in dict(ctx.head.headers)
    assert ctx.upstream_target == b"/other?x=1"
    with pytest.raises(RuntimeError):
        request.headers.set("x-late", "1")
    with pytest.raises(RuntimeError):
        request.path = "/late"
    assert request.headers.get("accept") == "*/*"  # the client's list, to read


@pytest.mark.parametrize(
    ("attribute", "value", "error"),
    [
        ("path", "no-slash", ValueError),
        ("path", "/a?b", ValueError),
        ("path", "/../..", ValueError),
        ("path", "/caf\u00e9", ValueError),
        ("query", "a#b", ValueError),
        ("host", "bad host", ValueError),
        ("host", "a.test\r\nx: y", ValueError),
        ("upstream", "nowhere", ValueError),
    ],
)
def test_bad_values_are_refused_and_change_nothing(
    attribute: str, value: str, error: type, upstreams: dict[str, UpstreamPlan]
) -> None:
    ctx = context()
    request = invoke.request_of(ctx, upstreams)
    with pytest.raises(error):
        setattr(request, attribute, value)
    assert (ctx.upstream_target, ctx.head.host, ctx.upstream) == (
        b"/shop/cart?x=1",
        b"shop.test",
        None,
    )


def test_a_reply_becomes_a_local_reply_and_anything_else_is_an_error(
    upstreams: dict[str, UpstreamPlan],
) -> None:
    request = invoke.request_of(context(), upstreams)
    local = invoke.on_request(Calls(lambda r: Reply(401, "no")), request, before_routing=False)
    assert local is not None
    assert (local.status, local.body, local.flag) == (401, b"no", "hook_reply")
    with pytest.raises(TypeError, match="expected a Reply or None"):
        invoke.on_request(Calls(lambda r: 401), request, before_routing=False)


def test_client_certificate_and_tls_session(upstreams: dict[str, UpstreamPlan]) -> None:
    leaf = trustme.CA().issue_cert("alice@example.test")
    pem = leaf.cert_chain_pems[0].bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    tls = TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", "h2", "shop.test", der)
    ctx = context(tls=tls)
    request = invoke.request_of(ctx, upstreams)
    assert request.tls is not None
    assert (request.tls.version, request.tls.alpn, request.tls.server_name) == (
        "TLSv1.3",
        "h2",
        "shop.test",
    )
    certificate = request.client_certificate
    assert certificate is not None
    assert certificate.der == der
    assert certificate.fingerprint == hashlib.sha256(der).hexdigest()
    parsed = x509.load_der_x509_certificate(der)
    assert certificate.subject == parsed.subject.rfc4514_string()
    assert certificate.issuer == parsed.issuer.rfc4514_string()
    assert certificate.serial == f"{parsed.serial_number:X}"
    # Per connection: the next request on it gets the same object.
    again = RequestContext(ctx.head, ctx.client, time.monotonic())
    assert invoke.request_of(again, upstreams).client_certificate is certificate


class Body(Hook):
    def __init__(self, out: object) -> None:
        super().__init__({})
        self.out = out

    def on_body_chunk(
        self, request: Request, response: Response, chunk: bytes, last: bool
    ) -> bytes:
        return self.out  # type: ignore[return-value]


def test_body_chunks_must_be_bytes_and_seal_the_response_head(
    upstreams: dict[str, UpstreamPlan],
) -> None:
    request = invoke.request_of(context(), upstreams)
    head = ResponseHead(200, b"OK", [(b"content-type", b"text/plain")])
    response = invoke.wants_body(Body(b""), request, head)
    assert response is not None and response is invoke.response_of(request, head)
    response.headers.set("x-before", "1")
    assert invoke.on_body_chunk(Body(bytearray(b"ab")), request, response, b"x", False) == b"ab"
    with pytest.raises(TypeError, match="expected bytes"):
        invoke.on_body_chunk(Body("text"), request, response, b"x", False)
    with pytest.raises(RuntimeError, match="has been sent"):
        response.headers.set("x-after", "1")
    assert head.headers[-1] == (b"x-before", b"1")
    other = ResponseHead(502, b"Bad Gateway", [])
    assert invoke.response_of(request, other).status == 502  # a new head, a new view
