"""docs/configuration.md is rendered from the models and kept in sync with them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from bastion.config import docs, model

REPO = Path(__file__).resolve().parents[3]
MODELS = [
    value
    for value in vars(model).values()
    if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel
]


def test_committed_page_matches_the_models() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == docs.render(), (
        "docs/configuration.md is stale: run "
        "`PYTHONPATH=src python -m bastion.config.docs > docs/configuration.md`"
    )


def test_module_prints_the_page() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    printed = subprocess.run(
        [sys.executable, "-m", "bastion.config.docs"],
        capture_output=True,
        check=True,
        env=env,
        text=True,
    ).stdout
    assert printed == docs.render()


@pytest.mark.parametrize("table", MODELS, ids=lambda table: table.__name__)
def test_every_key_is_described_and_documented(table: type[BaseModel]) -> None:
    page = docs.render()
    assert table.__doc__
    for name, field in table.model_fields.items():
        assert field.description, f"{table.__name__}.{name} has no description"
        assert f"| `{name}` |" in page


def test_sections_follow_the_file_layout() -> None:
    headings = [line for line in docs.render().splitlines() if line.startswith("## ")]
    assert headings == [
        "## Conventions",
        "## Errors",
        "## Top level",
        "## `[server]`",
        "## `[[server.hooks]]`",
        "## `[log]`",
        "## `[admin]`",
        "## `[[listen]]`",
        "## `[[site]]`",
        "## `[site.tls]`",
        "## `[[site.route]]`",
        "## `[site.route.redirect]`",
        "## `[site.route.rewrite]`",
        "## `[site.route.headers]`",
        "## `[site.route.headers.request]`",
        "## `[site.route.headers.response]`",
        "## `[[site.route.hooks]]`",
        "## `[upstream.NAME]`",
        "## `[[upstream.NAME.servers]]`",
        "## `[upstream.NAME.timeouts]`",
        "## `[upstream.NAME.keepalive]`",
        "## `[upstream.NAME.tls]`",
        "## `[upstream.NAME.sticky]`",
        "## `[upstream.NAME.health]`",
        "## `[upstream.NAME.passive]`",
        "## `[upstream.NAME.queue]`",
    ]


def test_rows_show_types_and_defaults_as_users_write_them() -> None:
    page = docs.render()
    assert '| `graceful_timeout` | duration | `"30s"` |' in page
    assert '| `max_header_size` | size | `"32KB"` |' in page
    assert '| `max_body` | size | `"100MB"` |' in page
    assert "| `trusted_proxies` | list of CIDRs | `[]` |" in page
    assert "| `address` | address | required |" in page
    assert '| `format` | `"combined"` or `"json"` | `"combined"` |' in page
    assert "| `websocket` | boolean | `true` |" in page
    assert "| `timeouts` | table | see below |" in page
    assert "| `tls` | boolean | `false` |" in page
    assert "| `certificate` | file path | required |" in page
    assert "| `ca` | file path | none |" in page
    assert '| `client_auth` | `"off"` or `"optional"` or `"required"` | `"off"` |' in page
    assert "| `path_regex` | regular expression | none |" in page
