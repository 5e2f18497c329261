"""The `[admin]` table: listener (or "off") and the bearer token from `token` or `token_file`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import load_config, parse_config
from bastion.errors import ConfigError
from bastion.units import Address

BASE = """\
[[listen]]
address = "127.0.0.1:8080"
[[site]]
hosts = ["*"]
  [[site.route]]
  upstream = "app"
[upstream.app]
servers = ["http://10.0.0.5:8080"]
"""


def test_defaults_listen_on_loopback_without_token() -> None:
    admin = parse_config(BASE, "edge.toml").admin
    assert admin.listen == Address("127.0.0.1", 9901)
    assert admin.bearer_token is None


def test_listen_off_turns_the_listener_off() -> None:
    admin = parse_config('[admin]\nlisten = "off"\n' + BASE, "edge.toml").admin
    assert admin.listen is None


def test_token_inline() -> None:
    admin = parse_config('[admin]\ntoken = "s3cret-s3cret-s3cret"\n' + BASE, "edge.toml").admin
    assert admin.bearer_token == "s3cret-s3cret-s3cret"


def test_token_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("  file-token-0123456789\n")
    path = tmp_path / "edge.toml"
    path.write_text('[admin]\ntoken_file = "admin.token"\n' + BASE)
    assert load_config(path).admin.bearer_token == "file-token-0123456789"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('listen = "nowhere"', "edge.toml: admin.listen: expected an address like"),
        ("listen = 9901", 'admin.listen: expected an address like "127.0.0.1:8080"'),
        (
            'token = "short"',
            "admin.token: expected a token of at least 16 characters without spaces, got 5",
        ),
        (
            'token = "s3cret-s3cret-s3cret"\ntoken_file = "/etc/hostname"',
            "edge.toml: admin: give either token or token_file, not both",
        ),
        ('token_file = "/nonexistent/token"', "admin.token_file: cannot read /nonexistent/token"),
    ],
)
def test_problems_name_the_key(table: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[admin]\n{table}\n" + BASE, "edge.toml")
    assert problem in str(caught.value)


def test_token_file_with_a_short_token(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("short\n")
    path = tmp_path / "edge.toml"
    path.write_text('[admin]\ntoken_file = "admin.token"\n' + BASE)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_config(path)
