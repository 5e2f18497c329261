"""The `hooks` lists of routes and of `[server]`: which Python hook objects to load, and
their options.

An entry is `"package.module:Name"` or a table `{ hook = "package.module:Name", options =
{...} }`; an entry without its own `options` gets the `hook_options` table beside the list.
At load the module is imported and `Name` looked up, so a typo is a configuration error
naming the entry (`site[0].route[1].hooks[0]: cannot import "x.y": No module named 'x'`).
Options are kept read-only and hashable (tables become `FrozenMapping`, arrays tuples) and
dump back to plain tables.

This module must not know what a hook is (bastion.hooks makes and checks the instances) nor
call it: importing the module is all that happens here.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from bastion.config.problems import Loc
from bastion.config.values import DocType, FrozenMapping
from bastion.units import describe_value

HOOK_PATH_EXPECTED = 'expected a hook as "package.module:Name"'

_IDENTIFIERS = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_HOOK_PATH_RE = re.compile(rf"({_IDENTIFIERS}):({_IDENTIFIERS})", re.ASCII)


def _frozen(value: Any) -> Any:
    """A TOML value made read-only and hashable: tables -> FrozenMapping, arrays -> tuples."""
    if isinstance(value, Mapping):
        return FrozenMapping({str(key): _frozen(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


def _thawed(value: Any) -> Any:
    """The inverse of `_frozen`, for dumping: plain dicts and lists again."""
    if isinstance(value, Mapping):
        return {key: _thawed(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thawed(item) for item in value]
    return value


def _frozen_options(value: Mapping[str, Any]) -> Mapping[str, Any]:
    frozen: Mapping[str, Any] = _frozen(value)
    return frozen


HookOptions = Annotated[
    Mapping[str, Any],
    AfterValidator(_frozen_options),
    PlainSerializer(_thawed, return_type=dict[str, Any]),
    DocType("table"),
]
NO_OPTIONS: Mapping[str, Any] = FrozenMapping({})


def resolve_hook(path: str) -> object:
    """The object `"package.module:Name"` names, importing its module (Python caches it:
    a module is imported once per process). Raises ValueError with a message for people."""
    match = _HOOK_PATH_RE.fullmatch(path)
    if match is None:
        raise ValueError(f"{HOOK_PATH_EXPECTED}, got {describe_value(path)}")
    module_name, attribute = match.groups()
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f'cannot import "{module_name}": {error}') from None
    except Exception as error:  # the module's own code failed: that is the user's hook too
        raise ValueError(
            f'cannot import "{module_name}": {type(error).__name__}: {error}'
        ) from None
    for name in attribute.split("."):
        if not hasattr(found, name):
            raise ValueError(f'module "{module_name}" has no attribute "{attribute}"')
        found = getattr(found, name)
    if not callable(found):
        raise ValueError(f'"{path}" is not a class (or a function making a hook)')
    return found


class HookSpec(BaseModel):
    """One entry of a `hooks` list: the string `"package.module:Name"`, or a table with the
    hook and its own options. See docs/hooks.md for writing hooks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hook: str = Field(
        description='The hook to load, `"package.module:Name"`: a subclass of '
        "`bastion.hooks.Hook` (or a function returning an instance of one), in a module on "
        "Python's import path (`PYTHONPATH`)."
    )
    options: HookOptions | None = Field(
        default=None,
        description="What this hook's constructor receives; when left out, the `hook_options` "
        "table beside the list.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"hook": value}
        if not isinstance(value, Mapping):
            raise ValueError(f"{HOOK_PATH_EXPECTED} or a table, got {describe_value(value)}")
        return value

    @model_validator(mode="after")
    def _importable(self) -> HookSpec:
        resolve_hook(self.hook)
        return self


HookList = Annotated[
    tuple[HookSpec, ...], DocType('list of `"package.module:Name"` strings or tables')
]


def hook_options_problems(
    hooks: Sequence[HookSpec], hook_options: Mapping[str, Any]
) -> list[tuple[Loc, str]]:
    """`hook_options` given where no hook would receive it."""
    if not hook_options or any(spec.options is None for spec in hooks):
        return []
    message = (
        "hook_options goes to the hooks listed without their own options; there is none here"
        if hooks
        else "hook_options without hooks"
    )
    return [(("hook_options",), message)]
