"""Reads a TOML configuration file into a `BastionConfig`, or says everything wrong with it.

Every mistake a user can make (an unreadable file, broken TOML, an unknown key, a wrong type,
a bad duration, a route naming a missing upstream) ends as one `ConfigError` listing every
problem found, each as `FILE: key.path: message`; pydantic's own wording never reaches the
user. The translation from pydantic error types to messages is the `_MESSAGES` table below.
Relative file paths in the configuration are taken from the file's directory (`base_dir`).
This module must not know what the settings mean, nor anything of sockets or the proxy.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from bastion.config.model import BastionConfig
from bastion.config.problems import PROBLEM_ERROR_TYPE, Loc
from bastion.config.shape import annotation_at, table_at, unwrap
from bastion.errors import ConfigError, ConfigProblem
from bastion.units import describe_value

# pydantic error type -> message; `{got}` is the value found, other fields come from the
# error's context. Types not listed fall back to pydantic's message.
_MESSAGES: dict[str, str] = {
    "bool_type": "expected a boolean, got {got}",
    "bool_parsing": "expected a boolean, got {got}",
    "int_type": "expected an integer, got {got}",
    "int_parsing": "expected an integer, got {got}",
    "int_from_float": "expected an integer, got {got}",
    "float_type": "expected a number, got {got}",
    "float_parsing": "expected a number, got {got}",
    "string_type": "expected a string, got {got}",
    "string_too_short": "expected a non-empty string, got {got}",
    "list_type": "expected a list, got {got}",
    "tuple_type": "expected a list, got {got}",
    "dict_type": "expected a table, got {got}",
    "mapping_type": "expected a table, got {got}",
    "model_type": "expected a table, got {got}",
    "model_attributes_type": "expected a table, got {got}",
    "too_short": "expected at least {min_length} entry, got none",
    "greater_than": "expected a number greater than {gt}, got {got}",
    "greater_than_equal": "expected a number of at least {ge}, got {got}",
    "less_than_equal": "expected a number of at most {le}, got {got}",
    "literal_error": "expected one of {choices}, got {got}",
    "missing": 'missing required key "{key}"',
    "extra_forbidden": 'unknown key "{key}" (allowed here: {allowed})',
    "value_error": "{error}",
    "assertion_error": "{error}",
    PROBLEM_ERROR_TYPE: "{message}",
}

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION_RE = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def load_config(path: str | os.PathLike[str]) -> BastionConfig:
    """Read and check the configuration file at `path`; raises ConfigError."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([ConfigProblem(source, "", f"cannot read: {reason}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        reason = f"not UTF-8 text (line {line})"
        raise ConfigError([ConfigProblem(source, "", f"cannot read: {reason}")]) from None
    return parse_config(text, source, base_dir=Path(source).parent)


def parse_config(
    text: str, source: str, *, base_dir: str | os.PathLike[str] | None = None
) -> BastionConfig:
    """Check configuration `text`, naming `source` in problems; raises ConfigError.

    Relative file paths (certificates, keys) are taken from `base_dir`, by default the
    current directory; either way they are absolute in the result.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_toml_problem(str(error), text, source)]) from None
    base = Path(base_dir if base_dir is not None else Path.cwd()).absolute()
    try:
        return BastionConfig.model_validate(document, context={"source": source, "base_dir": base})
    except ValidationError as error:
        problems = [
            _problem(details, source)
            for details in error.errors(include_url=False)
            if not _follows_from_bad_entries(details)
        ]
        raise ConfigError(problems) from None


def key_path(loc: Loc) -> str:
    """`("site", 1, "route", 0, "upstream")` -> `site[1].route[0].upstream`."""
    path = ""
    for segment in loc:
        if isinstance(segment, int):
            path += f"[{segment}]"
        elif segment != "[key]":
            name = segment if _BARE_KEY_RE.fullmatch(segment) else describe_value(segment)
            path += f".{name}" if path else name
    return path


def _toml_problem(reason: str, text: str, source: str) -> ConfigProblem:
    """`FILE:LINE: invalid TOML: reason (column N)` from tomllib's message."""
    position = _TOML_POSITION_RE.search(reason)
    if position is None:
        return ConfigProblem(source, "", f"invalid TOML: {reason}")
    line, column = position.groups()
    reason = reason[: position.start()]
    if line is None:
        last_line = text.count("\n") + 1
        return ConfigProblem(
            f"{source}:{last_line}", "", f"invalid TOML: {reason} (at end of file)"
        )
    return ConfigProblem(f"{source}:{line}", "", f"invalid TOML: {reason} (column {column})")


def _follows_from_bad_entries(details: ErrorDetails) -> bool:
    """pydantic also says a list is too short when its entries were all rejected: skip that."""
    entries = details["input"]
    minimum = (details.get("ctx") or {}).get("min_length", 0)
    return details["type"] == "too_short" and isinstance(entries, list) and len(entries) >= minimum


def _problem(details: ErrorDetails, source: str) -> ConfigProblem:
    loc = tuple(details["loc"])
    kind = details["type"]
    if kind in ("missing", "extra_forbidden"):
        # The problem is about a key of the table at loc[:-1]; an unknown key is shown
        # at its own path, a missing one at its table's.
        where = loc if kind == "extra_forbidden" else loc[:-1]
        return ConfigProblem(source, key_path(where), _message(details, loc))
    return ConfigProblem(source, key_path(loc), _message(details, loc))


def _message(details: ErrorDetails, loc: Loc) -> str:
    template = _MESSAGES.get(details["type"])
    if template is None:
        message = details["msg"]
        return f"{message[:1].lower()}{message[1:]}, got {describe_value(details['input'])}"
    context: dict[str, Any] = dict(details.get("ctx") or {})
    fields = {
        **context,
        "got": describe_value(details["input"]),
        "key": loc[-1] if loc else "",
        "allowed": _allowed_keys(loc[:-1]),
        "choices": _choices(loc),
        "error": str(context.get("error", "")),
    }
    return template.format(**fields)


def _allowed_keys(loc: Loc) -> str:
    table = table_at(loc)
    return "none" if table is None else ", ".join(table.model_fields) or "none"


def _choices(loc: Loc) -> str:
    annotation = unwrap(annotation_at(loc))
    if get_origin(annotation) is not Literal:
        return "the documented values"
    return ", ".join(describe_value(choice) for choice in get_args(annotation))
