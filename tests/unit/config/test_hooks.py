"""The `hooks` and `hook_options` keys (bastion.config.hooks): entries as strings or tables,
the import at load, options kept read-only, and the key paths of every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import parse_config
from bastion.config.hooks import resolve_hook
from bastion.config.model import BastionConfig
from bastion.config.values import FrozenMapping
from bastion.errors import ConfigError

HOOKS = "tests.support.hooks_for_tests"


def config(route: str = "", server: str = "") -> str:
    return f"""
[server]
{server}
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  upstream = "app"
  {route}
[upstream.app]
servers = ["http://127.0.0.1:9"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    return [str(problem) for problem in caught.value.problems]


def test_entries_as_strings_and_tables_with_their_options() -> None:
    route = (
        f'hooks = ["{HOOKS}:ReportClient", '
        f'{{ hook = "{HOOKS}:EditResponse", options = {{ set = {{ a = "1" }}, l = [1, [2]] }} }}]\n'
        "  hook_options = { shared = true }"
    )
    loaded = parse_config(config(route), "t.toml").site[0].route[0]
    first, second = loaded.hooks
    assert (first.hook, first.options) == (f"{HOOKS}:ReportClient", None)
    assert second.hook == f"{HOOKS}:EditResponse"
    assert second.options == {"set": {"a": "1"}, "l": (1, (2,))}
    assert isinstance(second.options, FrozenMapping)
    assert isinstance(second.options["set"], FrozenMapping)
    assert loaded.hook_options == {"shared": True}


def test_no_hooks_by_default() -> None:
    loaded = parse_config(config(), "t.toml")
    assert loaded.server.hooks == () and loaded.site[0].route[0].hooks == ()
    assert loaded.server.hook_options == {}


def test_hooks_survive_a_json_round_trip_and_hash() -> None:
    route = f'hooks = [{{ hook = "{HOOKS}:EditResponse", options = {{ set = {{ a = "1" }} }} }}]'
    loaded = parse_config(config(route, server=f'hooks = ["{HOOKS}:RerouteByHeader"]'), "t.toml")
    dumped = loaded.model_dump(mode="json")
    assert dumped["site"][0]["route"][0]["hooks"] == [
        {"hook": f"{HOOKS}:EditResponse", "options": {"set": {"a": "1"}}}
    ]
    again = BastionConfig.model_validate(dumped, context={"source": "t.toml"})
    assert again == loaded
    assert hash(again) == hash(loaded)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('"nowhere.at_all:X"', "cannot import \"nowhere.at_all\": No module named 'nowhere'"),
        (f'"{HOOKS}:Nothing"', f'module "{HOOKS}" has no attribute "Nothing"'),
        ('"json"', 'expected a hook as "package.module:Name", got "json"'),
        ('"json:"', 'expected a hook as "package.module:Name", got "json:"'),
        ('"a b:C"', 'expected a hook as "package.module:Name", got "a b:C"'),
        ('"json:__doc__"', '"json:__doc__" is not a class (or a function making a hook)'),
    ],
)
def test_a_hook_that_cannot_be_found_is_named_by_its_key_path(entry: str, message: str) -> None:
    assert problems(config(f"hooks = [{entry}]")) == [
        f"t.toml: site[0].route[0].hooks[0]: {message}"
    ]


def test_a_module_failing_at_import_is_a_configuration_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_hook_module.py").write_text("raise RuntimeError('no database')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert problems(config(server='hooks = ["broken_hook_module:X"]')) == [
        't.toml: server.hooks[0]: cannot import "broken_hook_module": RuntimeError: no database'
    ]


def test_table_entries_are_checked_like_any_table() -> None:
    text = config('hooks = [{ hook = 1 }, { hook = "json:dumps", opts = {} }, 7]')
    assert problems(text) == [
        "t.toml: site[0].route[0].hooks[0].hook: expected a string, got 1",
        't.toml: site[0].route[0].hooks[1].opts: unknown key "opts" (allowed here: hook, options)',
        't.toml: site[0].route[0].hooks[2]: expected a hook as "package.module:Name" or a table, '
        "got 7",
    ]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("hook_options = { a = 1 }", "hook_options without hooks"),
        (
            'hooks = [{ hook = "json:dumps", options = {} }]\n  hook_options = { a = 1 }',
            "hook_options goes to the hooks listed without their own options; there is none here",
        ),
    ],
)
def test_hook_options_nobody_receives_is_a_mistake(keys: str, message: str) -> None:
    assert problems(config(keys)) == [f"t.toml: site[0].route[0].hook_options: {message}"]
    server_keys = keys.replace("\n  ", "\n")
    assert problems(config(server=server_keys)) == [f"t.toml: server.hook_options: {message}"]


def test_resolve_hook_returns_the_named_object() -> None:
    from tests.support import hooks_for_tests

    assert resolve_hook(f"{HOOKS}:Fail") is hooks_for_tests.Fail
    assert resolve_hook("os.path:join.__call__") is not None  # dotted attributes
