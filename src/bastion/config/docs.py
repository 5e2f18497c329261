"""Renders docs/configuration.md from the configuration models.

One section per TOML table, found by walking `BastionConfig`'s fields, each a table of
`key | type | default | meaning` taken from the field's annotation, default and description.
The output is deterministic; a test keeps the committed file equal to it. Regenerate with
`python -m bastion.config.docs > docs/configuration.md`.

This module reads the models only: it must not know any particular key.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bastion.config.model import BastionConfig
from bastion.config.shape import unwrap
from bastion.config.values import DocType
from bastion.units import describe_value

_INTRO = """\
# Configuration reference

<!-- Rendered from src/bastion/config/model.py by `python -m bastion.config.docs`;
     edit the models' descriptions, not this file. -->

bastion reads one TOML file (`bastion run -c bastion.toml`). The smallest useful file:

```toml
[[listen]]
address = "0.0.0.0:8080"

[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"

[upstream.app]
servers = ["http://10.0.0.5:8080"]
```

## Conventions

- **Durations** are strings with a unit: `"250ms"`, `"5s"`, `"1.5s"`, `"2m"`, `"1h"`.
  A bare number is an error.
- **Sizes** are strings with a unit, `"512B"`, `"64KB"`, `"10MB"`, `"1GB"` (1024-based;
  `KiB`, `MiB`, `GiB` and lowercase units are accepted too), or integers of bytes.
- **Addresses** are `"host:port"`, `"[v6]:port"` or `"unix:/path"`; port 0 picks any free port.
- **CIDRs** are networks like `"10.0.0.0/8"` or `"fd00::/8"`; a single address means just it.
- **File paths** (certificates, keys, CA bundles) are relative to the directory of the
  configuration file, or absolute. Every file is read at load time: a missing or unreadable
  file, a certificate file without a PEM certificate, a key that does not match its
  certificate or a CA bundle that does not load is an error like any other.
- A key is accepted only once the feature behind it works: until then it is rejected as
  unknown rather than accepted and ignored. The keys below are all there is today.

## Errors

Any unknown key, wrong type or dangling reference stops bastion from starting (on reload,
the running configuration stays). Every problem found is reported, one per line, as
`FILE: KEY.PATH: what was expected, got what`, for example:

```
edge.toml: site[1].route[0].upstream: route names upstream "api" which is not defined (defined: app)
edge.toml: listen[0].tlz: unknown key "tlz" (allowed here: address, tls, redirect_to_https, http2)
edge.toml: server.graceful_timeout: expected a duration like "5s" or "250ms", got "5 parsecs"
edge.toml: site[0].tls.key: certificate and key do not match
edge.toml:12: invalid TOML: Expected '=' after a key in a key/value pair (column 7)
```

Key paths count from 0: `site[1]` is the second `[[site]]`.
"""


@dataclass(frozen=True, slots=True)
class _Table:
    heading: str
    model: type[BaseModel]


def render() -> str:
    """The whole of docs/configuration.md."""
    parts = [_INTRO]
    for table in _tables(BastionConfig, "", "top level"):
        parts.append(_render_table(table))
    return "\n".join(parts)


def _tables(model: type[BaseModel], path: str, heading: str) -> Iterator[_Table]:
    """The table of `model` and, depth first in field order, every table below it."""
    yield _Table(heading, model)
    for name, field in model.model_fields.items():
        inner = unwrap(field.annotation)
        origin = get_origin(inner)
        key = f"{path}.{name}" if path else name
        if _is_model(inner):
            yield from _tables(inner, key, f"[{key}]")
        elif origin is tuple and _is_model(get_args(inner)[0]):
            yield from _tables(get_args(inner)[0], key, f"[[{key}]]")
        elif origin in (Mapping, dict) and _is_model(get_args(inner)[1]):
            yield from _tables(get_args(inner)[1], f"{key}.NAME", f"[{key}.NAME]")


def _render_table(table: _Table) -> str:
    title = table.heading if table.heading == "top level" else f"`{table.heading}`"
    lines = [
        f"## {title[:1].upper()}{title[1:]}",
        "",
        _cell(table.model.__doc__ or ""),
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in table.model.model_fields.items():
        cells = (f"`{name}`", _type_name(field), _default(field), field.description or "")
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _type_name(field: FieldInfo) -> str:
    return _describe_type(field.annotation, tuple(field.metadata))


def _describe_type(annotation: Any, metadata: tuple[Any, ...] = ()) -> str:
    for marker in metadata:
        if isinstance(marker, DocType):
            return marker.name
    args = get_args(annotation)
    if hasattr(annotation, "__metadata__"):
        return _describe_type(args[0], tuple(annotation.__metadata__))
    members = [arg for arg in args if arg is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(members) == 1:
        return _describe_type(members[0])
    if unwrap(annotation) is not annotation:
        return _describe_type(unwrap(annotation))
    if get_origin(annotation) is Literal:
        return " or ".join(f"`{describe_value(choice)}`" for choice in args)
    if get_origin(annotation) is tuple:
        return f"list of {_describe_type(args[0])}s"
    if _is_model(annotation):
        return "table"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    if value is None or (isinstance(value, Mapping) and not value):
        return "none"
    spell = next((m.spell for m in field.metadata if isinstance(m, DocType) and m.spell), None)
    if isinstance(value, tuple):
        return "`[" + ", ".join(_spell_value(item, spell) for item in value) + "]`"
    return f"`{_spell_value(value, spell)}`"


def _spell_value(value: Any, spell: Any) -> str:
    return describe_value(spell(value) if spell is not None else value)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _cell(text: str) -> str:
    """One line of markdown, safe in a table cell."""
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    sys.stdout.write(render())
