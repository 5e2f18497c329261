"""The header-policy filters on header lists, and which routes get them (the compiled plan)."""

from __future__ import annotations

from bastion.config import parse_config
from bastion.config.headers import HEADER_PLACEHOLDERS, HeaderPolicySettings
from bastion.filters.chain import route_filters
from bastion.filters.forwarded import ForwardedHeaders
from bastion.filters.header_policy import (
    RequestHeaderPolicy,
    ResponseHeaderPolicy,
    ValueTemplate,
    compile_value,
    header_policy_filters,
)
from bastion.filters.rewrite import RewriteHeaders, SentHost
from bastion.http.events import Framing, RequestHead, ResponseHead
from bastion.http.target import parse_target
from bastion.proxy.context import ClientInfo, RequestContext
from bastion.proxy.plan import CompiledRoute, build_plan
from bastion.proxy.router import RouteMatch


def request_context(*, host: bytes = b"app.test", target: bytes = b"/a?b=1") -> RequestContext:
    head = RequestHead(
        method=b"GET",
        target=target,
        http_version=b"1.1",
        headers=[(b"host", host)],
        framing=Framing.NONE,
        content_length=None,
        keep_alive=True,
        host=host,
    )
    ctx = RequestContext(head, ClientInfo("192.0.2.7", 50000, 443, b"https", False), 0.0)
    ctx.target = parse_target(target, b"GET")
    ctx.request_id = "req-1"
    return ctx


def policy(**table: object) -> HeaderPolicySettings:
    return HeaderPolicySettings.model_validate(table)


def response(status: int = 200, *headers: tuple[bytes, bytes]) -> ResponseHead:
    return ResponseHead(status=status, reason=b"", headers=list(headers))


# -- values ----------------------------------------------------------------------------------


def test_a_value_without_placeholders_is_plain_bytes() -> None:
    assert compile_value("no-store") == b"no-store"
    assert compile_value('{{"a": "100%"}}') == b'{"a": "100%"}'


def test_every_placeholder_the_config_accepts_can_be_rendered() -> None:
    for name in HEADER_PLACEHOLDERS:
        template = compile_value(f"<{{{name}}}>")
        assert isinstance(template, ValueTemplate)
        assert template.render(request_context()).startswith(b"<")


def test_placeholders_render_from_the_request() -> None:
    template = compile_value("{scheme}://{host}{uri} {client_ip} {request_id} 100% {{x}}")
    assert isinstance(template, ValueTemplate)
    rendered = template.render(request_context())
    assert rendered == b"https://app.test/a?b=1 192.0.2.7 req-1 100% {x}"


# -- request edits ---------------------------------------------------------------------------


def test_request_set_replaces_every_occurrence_and_remove_drops_them_all() -> None:
    filter_ = RequestHeaderPolicy(
        policy(
            request={
                "set": {"X-Tenant": "blue", "Host": "app.internal", "X-Client": "{client_ip}"},
                "remove": ["Cookie", "X-Forwarded-For"],
            }
        )
    )
    headers = [
        (b"host", b"app.test"),
        (b"x-tenant", b"red"),
        (b"cookie", b"a=1"),
        (b"accept", b"*/*"),
        (b"x-tenant", b"green"),
        (b"cookie", b"b=2"),
        (b"x-forwarded-for", b"192.0.2.7"),
    ]
    filter_.upstream_request(request_context(), headers)
    assert headers == [
        (b"accept", b"*/*"),
        (b"x-tenant", b"blue"),
        (b"host", b"app.internal"),
        (b"x-client", b"192.0.2.7"),
    ]


def test_request_edits_leave_untouched_lists_alone() -> None:
    filter_ = RequestHeaderPolicy(policy(request={"remove": ["X-Debug"]}))
    headers = [(b"host", b"app.test"), (b"accept", b"*/*")]
    before = headers
    filter_.upstream_request(request_context(), headers)
    assert headers is before and headers == [(b"host", b"app.test"), (b"accept", b"*/*")]


# -- response edits --------------------------------------------------------------------------


def test_hide_origin_removes_the_software_headers_and_set_wins() -> None:
    filter_ = ResponseHeaderPolicy(
        policy(hide_origin=True, response={"set": {"Server": "web"}, "remove": ["X-Debug"]})
    )
    head = response(
        200,
        (b"server", b"Apache/2.4.41 (Ubuntu)"),
        (b"x-powered-by", b"PHP/8.1.2"),
        (b"x-aspnet-version", b"4.0.30319"),
        (b"content-type", b"text/html"),
        (b"x-debug", b"1"),
        (b"x-generator", b"Drupal 10"),
    )
    filter_.response_headers(request_context(), head)
    assert head.headers == [(b"content-type", b"text/html"), (b"server", b"web")]


def test_security_preset_adds_only_what_the_origin_did_not_send() -> None:
    filter_ = ResponseHeaderPolicy(policy(security=True))
    head = response(200, (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"))
    filter_.response_headers(request_context(), head)
    assert head.headers == [
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
    ]


def test_security_preset_leaves_framing_to_a_csp_frame_ancestors() -> None:
    filter_ = ResponseHeaderPolicy(policy(security=True))
    csp = (b"content-security-policy", b"default-src 'self'; Frame-Ancestors https://a.test")
    head = response(200, csp)
    filter_.response_headers(request_context(), head)
    assert (b"x-frame-options", b"SAMEORIGIN") not in head.headers
    other_csp = response(200, (b"content-security-policy", b"default-src 'self'"))
    filter_.response_headers(request_context(), other_csp)
    assert (b"x-frame-options", b"SAMEORIGIN") in other_csp.headers


def test_explicit_set_and_remove_override_the_preset() -> None:
    filter_ = ResponseHeaderPolicy(
        policy(
            security=True,
            response={"set": {"X-Frame-Options": "DENY"}, "remove": ["Referrer-Policy"]},
        )
    )
    head = response(200, (b"x-frame-options", b"SAMEORIGIN"), (b"referrer-policy", b"origin"))
    filter_.response_headers(request_context(), head)
    assert head.headers == [
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
    ]


def test_bastions_own_error_answers_get_only_the_preset() -> None:
    filter_ = ResponseHeaderPolicy(
        policy(security=True, response={"set": {"Cache-Control": "max-age=86400"}})
    )
    ctx = request_context()
    ctx.flag = "local"  # what the pipeline sets before its error answer goes out
    error = response(502, (b"x-request-id", b"req-1"))
    filter_.response_headers(ctx, error)
    assert (b"cache-control", b"max-age=86400") not in error.headers
    assert (b"x-content-type-options", b"nosniff") in error.headers
    redirect = response(301, (b"location", b"https://x.test/"))
    ctx.flag = "redirect"
    filter_.response_headers(ctx, redirect)
    assert (b"cache-control", b"max-age=86400") in redirect.headers
    origin_error = response(503)
    filter_.response_headers(request_context(), origin_error)
    assert (b"cache-control", b"max-age=86400") in origin_error.headers


# -- which routes get the filters ------------------------------------------------------------


def test_only_the_directions_with_something_to_do_get_a_filter() -> None:
    assert header_policy_filters(HeaderPolicySettings()) == ()
    request_only = header_policy_filters(policy(request={"remove": ["Cookie"]}))
    assert [type(f) for f in request_only] == [RequestHeaderPolicy]
    for response_only in (
        policy(hide_origin=True),
        policy(security=True),
        policy(response={"set": {"X-A": "1"}}),
    ):
        assert [type(f) for f in header_policy_filters(response_only)] == [ResponseHeaderPolicy]


PLAN_CONFIG = """\
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/plain"
  upstream = "app"
  [[site.route]]
  path = "/edited"
  upstream = "app"
  headers.request.remove = ["Cookie"]
  headers.hide_origin = true
[upstream.app]
servers = ["http://127.0.0.1:9"]
"""


def compiled(path: bytes) -> CompiledRoute:
    plan = build_plan(parse_config(PLAN_CONFIG, "t.toml"), route_filters)
    match = plan.router.match(b"app.test", path, b"GET")
    assert isinstance(match, RouteMatch)
    return match.rule.target


def test_a_route_without_headers_has_no_policy_filter() -> None:
    route = compiled(b"/plain")
    every = route.request_filters + route.upstream_filters + route.response_filters
    assert not any(isinstance(f, RequestHeaderPolicy | ResponseHeaderPolicy) for f in every)


def test_request_edits_run_after_the_forwarding_headers() -> None:
    route = compiled(b"/edited")
    # (SentHost, last, only notes the Host for the rewrite filter: it edits nothing.)
    assert [type(f) for f in route.upstream_filters] == [
        ForwardedHeaders,
        RequestHeaderPolicy,
        SentHost,
    ]
    assert [type(f) for f in route.response_filters] == [ResponseHeaderPolicy, RewriteHeaders]
