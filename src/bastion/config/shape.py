"""Walks bastion's configuration models by key path, for messages and docs.

`annotation_at(("site", 0, "route", 1, "status"))` answers which type a key has, `table_at`
which table (model) a key path names; load.py uses them to list the keys allowed where an
unknown one was found, docs.py to describe each field's type. This module reads the model
classes only; it knows nothing of files, TOML or values.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from bastion.config.model import BastionConfig
from bastion.config.problems import Loc


def unwrap(annotation: Any) -> Any:
    """The type inside `Annotated[...]` and `X | None` layers."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def annotation_at(loc: Loc) -> Any:
    """The annotation of the key at `loc` (a pydantic error location), or None if unknown."""
    node: Any = BastionConfig
    for segment in loc:
        node = unwrap(node)
        origin = get_origin(node)
        if isinstance(node, type) and issubclass(node, BaseModel) and isinstance(segment, str):
            field = node.model_fields.get(segment)
            node = None if field is None else field.annotation
        elif origin is tuple and isinstance(segment, int):
            node = get_args(node)[0]
        elif origin in (Mapping, dict) and isinstance(segment, str):
            node = get_args(node)[1]
        else:
            return None
    return node


def table_at(loc: Loc) -> type[BaseModel] | None:
    """The model of the table at `loc`, or None when `loc` is not a table."""
    node = unwrap(annotation_at(loc))
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None
