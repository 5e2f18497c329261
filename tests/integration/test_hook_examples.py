"""The example hooks of examples/hooks/, over sockets, loaded as the README says a user
does: their directory on the import path (PYTHONPATH for `bastion check`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.client import http_get
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy, single_route_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "hooks"


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def bastion_check(toml: str, directory: Path) -> subprocess.CompletedProcess[str]:
    config = directory / "bastion.toml"
    config.write_text(toml)
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(EXAMPLES)},
        check=False,
    )


# -- shared_secret ----------------------------------------------------------------------


def secret_route(secret_file: Path) -> str:
    return (
        'hooks = ["shared_secret:SharedSecret"]\n'
        f'  hook_options = {{ secret_file = "{secret_file}" }}'
    )


async def test_shared_secret_reaches_the_origin_and_a_spoofed_one_does_not(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "app.secret"
    secret_file.write_text("s3cret-Value\n")
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route=secret_route(secret_file))
        async with running_proxy(toml) as proxy:
            plain = await http_get(proxy.ports[0], "/echo")
            spoofed = await http_get(
                proxy.ports[0],
                "/echo",
                headers=[("X-Proxy-Secret", "guess"), ("x-proxy-secret", "x")],
            )
            echoed = await http_get(proxy.ports[0], "/set-headers?x-proxy-secret=s3cret-Value")
    assert (plain.status, spoofed.status, echoed.status) == (200, 200, 200)
    assert [r.headers_named("x-proxy-secret") for r in origin.requests[:2]] == [
        ["s3cret-Value"],
        ["s3cret-Value"],
    ]
    assert echoed.header("x-proxy-secret") is None  # never shown to a client


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_shared_secret_refuses_to_start_without_a_secret(
    content: str | None, tmp_path: Path
) -> None:
    secret_file = tmp_path / "app.secret"
    if content is not None:
        secret_file.write_text(content)
    toml = single_route_config("127.0.0.1:9", route=secret_route(secret_file))
    outcome = bastion_check(toml, tmp_path)
    assert outcome.returncode == 1
    reason = "No such file or directory" if content is None else "is empty"
    assert 'site[0].route[0].hooks[0]: "shared_secret:SharedSecret": secret_file' in outcome.stderr
    assert reason in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_shared_secret_with_a_secret_passes_bastion_check(tmp_path: Path) -> None:
    secret_file = tmp_path / "app.secret"
    secret_file.write_text("s3cret\n")
    toml = single_route_config("127.0.0.1:9", route=secret_route(secret_file))
    outcome = bastion_check(toml, tmp_path)
    assert outcome.returncode == 0, outcome.stderr


# -- legacy_location ------------------------------------------------------------------------


async def test_legacy_redirect_header_gets_the_public_url() -> None:
    options = '{ header = "X-Redirect-To", internal = "http://10.0.0.5:8080/app" }'
    route = f'hooks = ["legacy_location:PublicLocationHeader"]\n  hook_options = {options}'
    cases = {
        "http://10.0.0.5:8080/app/orders/42?tab=2": "http://shop.test/orders/42?tab=2",
        "HTTP://10.0.0.5:8080/app": "http://shop.test",
        "http://10.0.0.5:8080/application": "http://10.0.0.5:8080/application",
        "https://elsewhere.test/app/x": "https://elsewhere.test/app/x",
    }
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route=route)
        async with running_proxy(toml) as proxy:
            seen = {}
            for internal in cases:
                query = urlencode({"x-redirect-to": internal})
                response = await http_get(proxy.ports[0], f"/set-headers?{query}", host="shop.test")
                header = response.header("x-redirect-to")
                seen[internal] = header.decode() if header else None
    assert seen == cases


async def test_legacy_redirect_header_with_a_configured_public_base() -> None:
    options = (
        '{ header = "X-Backend-Location", internal = "http://app.internal:8080", '
        'public = "https://www.example.com/shop" }'
    )
    route = f'hooks = ["legacy_location:PublicLocationHeader"]\n  hook_options = {options}'
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route=route)
        async with running_proxy(toml) as proxy:
            query = urlencode({"x-backend-location": "http://app.internal:8080/cart"})
            response = await http_get(proxy.ports[0], f"/set-headers?{query}")
    assert response.header("x-backend-location") == b"https://www.example.com/shop/cart"


def test_legacy_location_needs_its_options(tmp_path: Path) -> None:
    route = (
        'hooks = ["legacy_location:PublicLocationHeader"]\n'
        '  hook_options = { header = "X-Redirect-To", internal = "10.0.0.5:8080" }'
    )
    outcome = bastion_check(single_route_config("127.0.0.1:9", route=route), tmp_path)
    assert outcome.returncode == 1
    assert '"internal" must be an http(s) URL' in outcome.stderr
