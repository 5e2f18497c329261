"""How hooks become filters (bastion.filters.hooks): one filter per method a hook has, on
its phase; server hooks first everywhere and alone before routing; hooks that cannot be
made reported at their key path by compile_plan."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError
from bastion.filters.chain import compile_plan
from bastion.filters.hooks import (
    BeforeUpstream,
    BodyChunks,
    ChosenUpstream,
    HookPhase,
    OnLog,
    OnRequest,
    OnRequestBeforeRouting,
    OnResponse,
)
from bastion.filters.rewrite import SentHost
from bastion.proxy.plan import CompiledRoute, Plan
from bastion.proxy.router import RouteMatch

HOOKS = "tests.support.hooks_for_tests"


def plan(route_hooks: str = "", server_hooks: str = "", second_route: str = "") -> Plan:
    text = f"""
[server]
hooks = [{server_hooks}]
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/one"
  upstream = "app"
  hooks = [{route_hooks}]
  [[site.route]]
  path = "/two"
  upstream = "app"
  {second_route}
[upstream.app]
servers = ["http://127.0.0.1:9"]
"""
    return compile_plan(parse_config(text, "t.toml"))


def routes(compiled: Plan) -> list[CompiledRoute]:
    found = []
    for path in (b"/one", b"/two"):
        match = compiled.router.match(b"any.test", path, b"GET")
        assert isinstance(match, RouteMatch)
        found.append(match.rule.target)
    return found


def hook_filters(route: CompiledRoute) -> dict[str, list[type]]:
    phases = {
        "request": route.request_filters,
        "upstream": route.upstream_filters,
        "response": route.response_filters,
        "body": route.body_filters,
        "finished": route.finished_filters,
    }
    return {
        phase: [type(f) for f in filters if isinstance(f, HookPhase | ChosenUpstream)]
        for phase, filters in phases.items()
    }


def test_a_route_pays_only_for_the_methods_its_hooks_have() -> None:
    compiled = plan(route_hooks=f'"{HOOKS}:Uppercase"')
    one, two = routes(compiled)
    assert hook_filters(one) == {
        "request": [],
        "upstream": [],
        "response": [],
        "body": [BodyChunks],
        "finished": [],
    }
    assert hook_filters(two) == {phase: [] for phase in hook_filters(two)}
    assert compiled.received_filters == ()


def test_every_method_on_its_phase_and_route_hooks_last() -> None:
    (one, _) = routes(plan(route_hooks=f'{{ hook = "{HOOKS}:Fail", options = {{ in = "x" }} }}'))
    assert hook_filters(one) == {
        "request": [OnRequest],
        "upstream": [BeforeUpstream],
        "response": [OnResponse],
        "body": [BodyChunks],
        "finished": [OnLog],
    }
    # After the forwarding headers; only SentHost, which edits nothing, comes later.
    assert [type(f) for f in one.upstream_filters[-2:]] == [BeforeUpstream, SentHost]


def test_server_hooks_run_first_on_every_route_and_alone_before_routing() -> None:
    compiled = plan(
        server_hooks=f'"{HOOKS}:RerouteByHeader", "{HOOKS}:EditResponse"',
        route_hooks=f'"{HOOKS}:ChooseUpstream"',
    )
    (before_routing,) = compiled.received_filters
    assert isinstance(before_routing, OnRequestBeforeRouting)
    one, two = routes(compiled)
    assert [type(f) for f in one.request_filters[:1]] == [ChosenUpstream]
    assert isinstance(one.request_filters[-1], OnRequest)  # the route's own, last
    assert [type(f) for f in two.request_filters if isinstance(f, HookPhase)] == []
    # One instance per configured use, shared by every route.
    assert one.response_filters[0].hook is two.response_filters[0].hook  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("server_hooks", "route_hooks", "second_route", "where"),
    [
        (f'"{HOOKS}:NeedsOption"', "", "", "server.hooks[0]"),
        ("", f'"{HOOKS}:ReportClient", "{HOOKS}:NeedsOption"', "", "site[0].route[0].hooks[1]"),
        ("", "", f'hooks = ["{HOOKS}:NeedsOption"]', "site[0].route[1].hooks[0]"),
    ],
)
def test_a_hook_refusing_its_options_is_reported_at_its_key_path(
    server_hooks: str, route_hooks: str, second_route: str, where: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan(route_hooks=route_hooks, server_hooks=server_hooks, second_route=second_route)
    assert [str(p) for p in caught.value.problems] == [
        f't.toml: {where}: "{HOOKS}:NeedsOption": the "required" option is missing'
    ]
