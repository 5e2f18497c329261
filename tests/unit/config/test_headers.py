"""A route's `headers` table: names and values checked at load, refused edits with the reason,
placeholders, and the problems reported at their key paths."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.config.headers import (
    HIDDEN_ORIGIN_HEADERS,
    SECURITY_PRESET,
    HeaderEdits,
    HeaderPolicySettings,
)
from bastion.config.model import RouteSettings
from bastion.config.values import is_token
from bastion.errors import ConfigError
from bastion.http.headers import HOP_BY_HOP

BASE = """\
[[listen]]
address = "127.0.0.1:8080"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/other"
  upstream = "app"
  [[site.route]]
  path = "/"
  upstream = "app"
{route}
[upstream.app]
servers = ["http://10.0.0.5:8080"]
{upstream}
"""
WHERE = "edge.toml: site[0].route[1].headers"


def load_route(route: str, upstream: str = "") -> RouteSettings:
    return parse_config(BASE.format(route=route, upstream=upstream), "edge.toml").site[0].route[1]


def problems_of(route: str, upstream: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_route(route, upstream)
    return [str(problem) for problem in caught.value.problems]


def test_no_headers_table_means_no_policy() -> None:
    headers = RouteSettings(upstream="app").headers
    assert headers == HeaderPolicySettings()
    assert not headers.active
    assert not headers.request.active and not headers.response.active


def test_a_full_table_loads_with_names_as_written() -> None:
    headers = load_route(
        """
  [site.route.headers]
  hide_origin = true
  security = true
  request.set = { Host = "app.internal", "X-Real-Client" = "{client_ip}" }
  request.remove = ["X-Forwarded-For", "Cookie"]
  response.set = { "Cache-Control" = "no-store" }
  response.remove = ["X-Debug"]
"""
    ).headers
    assert headers.request == HeaderEdits(
        set={"Host": "app.internal", "X-Real-Client": "{client_ip}"},
        remove=("X-Forwarded-For", "Cookie"),
    )
    assert dict(headers.response.set) == {"Cache-Control": "no-store"}
    assert headers.response.remove == ("X-Debug",)
    assert headers.hide_origin and headers.security and headers.active


def test_only_hide_origin_or_security_is_active_too() -> None:
    assert HeaderPolicySettings(hide_origin=True).active
    assert HeaderPolicySettings(security=True).active


@pytest.mark.parametrize(
    ("route", "where", "fragment"),
    [
        (
            'headers.request.set = { "X Foo" = "1" }',
            'request.set."X Foo"',
            "expected a header name",
        ),
        ('headers.response.remove = ["X-Ok", "Bad:Name"]', "response.remove[1]", '"Bad:Name"'),
        (
            'headers.request.set = { "X-A" = "a\\r\\nX-Evil: 1" }',
            "request.set.X-A",
            "CR, LF or NUL",
        ),
        ('headers.request.set = { "X-A" = "a\\u0000b" }', "request.set.X-A", '"a\\0b"'),
        ('headers.response.set = { "X-A" = "a\\u0007" }', "response.set.X-A", "visible ASCII"),
        ('headers.response.set = { "X-A" = "Zürich" }', "response.set.X-A", "visible ASCII"),
        ('headers.response.set = { "X-A" = " padded" }', "response.set.X-A", "blanks"),
        ('headers.request.set = { "X-A" = "{remote_addr}" }', "request.set.X-A", "{client_ip}"),
        ('headers.request.set = { "X-A" = "{client_ip!r}" }', "request.set.X-A", "placeholder"),
        ('headers.request.set = { "X-A" = "a{b" }', "request.set.X-A", 'literal brace as "{{"'),
        ('headers.request.set = { "X-A" = 5 }', "request.set.X-A", "expected a string, got 5"),
        ('headers.response.remove = "Server"', "response.remove", "expected a list"),
        ('headers.security = "yes"', "security", "expected a boolean"),
        ("headers.colour = 1", "colour", 'unknown key "colour"'),
    ],
)
def test_bad_names_and_values_are_reported_at_their_key(
    route: str, where: str, fragment: str
) -> None:
    problems = problems_of(route)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{WHERE}.{where}: "), problems
    assert fragment in problems[0]


def test_every_kind_of_problem_is_reported_at_once() -> None:
    problems = problems_of(
        """
  headers.request.set = { Content-Length = "5", Host = "app.internal" }
  headers.request.remove = ["host", "X-Forwarded-For", "x-forwarded-for", "x-request-id"]
  headers.response.set = { Connection = "close", Strict-Transport-Security = "max-age=1" }
  headers.response.remove = ["Transfer-Encoding", "Via"]
"""
    )
    assert problems == [
        f"{WHERE}.request.set.Content-Length: cannot set Content-Length: frames the message "
        "body; bastion writes it for each connection itself",
        f"{WHERE}.request.remove[0]: cannot remove host: an HTTP/1.1 request must carry Host "
        "(RFC 9112 3.2); set it to a fixed name instead",
        f'{WHERE}.request.remove[2]: "x-forwarded-for" is already listed at remove[1]',
        f"{WHERE}.request.remove[3]: cannot remove x-request-id: bastion sends X-Request-Id "
        "itself: the id its logs and error pages show",
        f"{WHERE}.response.set.Connection: cannot set Connection: is hop-by-hop: it describes "
        "one connection, and bastion manages it on each side",
        f"{WHERE}.response.set.Strict-Transport-Security: cannot set Strict-Transport-Security: "
        "use the site's tls.hsts, which is sent over TLS only (RFC 6797 7.2)",
        f"{WHERE}.response.remove[0]: cannot remove Transfer-Encoding: frames the message body; "
        "bastion writes it for each connection itself",
    ]


@pytest.mark.parametrize("name", sorted(n.decode() for n in HOP_BY_HOP | {b"content-length"}))
@pytest.mark.parametrize(
    "edit", ["request.set", "request.remove", "response.set", "response.remove"]
)
def test_framing_and_hop_by_hop_headers_are_never_edited(name: str, edit: str) -> None:
    """Every header the core treats as hop-by-hop (bastion.http.headers) is refused."""
    value = f'{{ "{name}" = "x" }}' if edit.endswith("set") else f'["{name}"]'
    problems = problems_of(f"headers.{edit} = {value}")
    assert len(problems) == 1 and f"cannot {edit.split('.')[1]} {name}: " in problems[0]


def test_what_each_direction_may_do_with_host_via_and_hsts() -> None:
    allowed = load_route(
        """
  headers.request.set = { Host = "app.internal", X-Forwarded-Proto = "https" }
  headers.request.remove = ["Forwarded", "X-Real-IP"]
  headers.response.set = { X-Request-Id = "{request_id}" }
  headers.response.remove = ["Via", "Strict-Transport-Security", "Server"]
"""
    )
    assert allowed.headers.active
    refused = problems_of(
        """
  headers.request.set = { Via = "1.1 a" }
  headers.response.set = { Via = "1.1 a" }
  headers.request.remove = ["via"]
"""
    )
    assert [problem.split(": ", 2)[1] for problem in refused] == [
        "site[0].route[1].headers.request.set.Via",
        "site[0].route[1].headers.request.remove[0]",
        "site[0].route[1].headers.response.set.Via",
    ]


def test_names_ignore_case_so_a_name_twice_in_a_table_is_an_error() -> None:
    problems = problems_of('headers.response.set = { Server = "a", server = "b" }')
    assert problems == [
        f'{WHERE}.response.set: header "server" is given twice (also as "Server"); '
        "names ignore case"
    ]


def test_set_and_remove_of_the_same_header_is_an_error() -> None:
    problems = problems_of(
        'headers.response.set = { X-Frame-Options = "DENY" }\n'
        '  headers.response.remove = ["x-frame-options"]'
    )
    assert problems == [
        f'{WHERE}.response.remove[0]: "x-frame-options" is already set, which replaces it: '
        "no need to remove it too"
    ]


def test_placeholders_and_literal_braces_are_accepted() -> None:
    route = load_route(
        'headers.request.set = { X-Original = "{scheme}://{host}{uri}", '
        'X-Trace = "{request_id} from {client_ip}", X-Json = "{{\\"a\\": 1}}" }'
    )
    assert route.headers.request.set["X-Json"] == '{{"a": 1}}'


def test_a_redirect_route_takes_no_request_edits() -> None:
    text = BASE.format(route="", upstream="").replace(
        'path = "/other"\n  upstream = "app"',
        'path = "/other"\n  redirect = { to = "https://x.test{uri}" }\n'
        '  headers.request.set = { X-A = "1" }\n'
        '  headers.response.set = { Cache-Control = "no-store" }',
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "edge.toml")
    assert [str(p) for p in caught.value.problems] == [
        "edge.toml: site[0].route[0].headers.request: a redirect route sends no request to an "
        "origin"
    ]


def test_editing_set_cookie_behind_a_sticky_cookie_is_an_error() -> None:
    sticky = 'sticky = { cookie = "PIN" }'
    problems = problems_of('headers.response.remove = ["Set-Cookie"]', sticky)
    assert problems == [
        "edge.toml: site[0].route[1].headers.response.remove[0]: editing set-cookie would drop "
        'the sticky cookie "PIN" of upstream "app"'
    ]
    # Learned sessions ride on the application's own cookie: editing is the user's business.
    learned = load_route('headers.response.remove = ["Set-Cookie"]', 'sticky = { learn = "SID" }')
    assert learned.headers.response.remove == ("Set-Cookie",)


def test_hidden_and_preset_headers_are_distinct_tokens() -> None:
    for names in (HIDDEN_ORIGIN_HEADERS, [name for name, _ in SECURITY_PRESET]):
        assert all(is_token(name) for name in names)
        assert len({name.lower() for name in names}) == len(names)
    assert {"Server", "X-Powered-By", "X-AspNet-Version"} <= set(HIDDEN_ORIGIN_HEADERS)


def test_the_policy_survives_a_json_round_trip() -> None:
    route = load_route('headers.request.set = { X-A = "{host}" }\n  headers.hide_origin = true')
    dumped = route.model_dump(mode="json")
    assert dumped["headers"]["request"] == {"set": {"X-A": "{host}"}, "remove": []}
    assert RouteSettings.model_validate(dumped) == route
