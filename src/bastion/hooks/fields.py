"""`HeaderFields`: a hook's view of the header fields of a request or a response.

It reads and edits bastion's own list of `(name, value)` byte pairs in place, so nothing is
copied unless a hook asks. Names are case-insensitive (stored lowercase); values are given
as `str` (Latin-1) or `bytes` and read back as `str`. An edit is checked before it is made:
a name must be an HTTP token, a value must hold no CR, LF or NUL (no header injection), and
the fields bastion owns — message framing, hop-by-hop fields, and on requests Host and
X-Request-Id — are refused with a message saying what to do instead. A view is read-only in
the phases where an edit would have no effect.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from bastion.config.values import is_token
from bastion.http.events import Headers
from bastion.http.headers import HOP_BY_HOP

_BAD_VALUE = re.compile(rb"[\x00\r\n]")

_FRAMING = "bastion frames the message itself"
_HOP = "a hop-by-hop field is bastion's, per connection"
# Fields no hook may edit, with the reason told to the hook's author.
RESPONSE_RESERVED: Mapping[bytes, str] = {
    b"content-length": _FRAMING,
    **dict.fromkeys(HOP_BY_HOP, _HOP),
    b"transfer-encoding": _FRAMING,
}
REQUEST_RESERVED: Mapping[bytes, str] = {
    **RESPONSE_RESERVED,
    b"host": "set request.host instead",
    b"x-request-id": "bastion sets it; read request.request_id",
}

Value = str | bytes


def field_name(name: str) -> bytes:
    """`name` as bastion stores it (lowercase bytes); ValueError unless it is a token."""
    if not isinstance(name, str) or not is_token(name):
        raise ValueError(f"not a header name: {name!r}")
    return name.lower().encode("ascii")


def field_value(value: Value) -> bytes:
    """`value` as bytes, stripped of outer spaces; ValueError for CR, LF or NUL in it."""
    if isinstance(value, str):
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"header value {value!r} is not Latin-1: encode it (e.g. percent-encoding)"
            ) from None
    elif isinstance(value, bytes):
        raw = value
    else:
        raise TypeError(f"a header value is str or bytes, got {type(value).__name__}")
    if _BAD_VALUE.search(raw) is not None:
        raise ValueError(f"header value {value!r} holds CR, LF or NUL")
    return raw.strip(b" \t")


class HeaderFields:
    """Header fields by name, case-insensitive, in their order on the wire.

    Reading: `get`, `get_all`, `in`, iteration over `(name, value)` pairs, `len`.
    Editing (where the phase allows it): `set` (replace every field of the name by one),
    `add` (one more field), `remove` (every field of the name).
    """

    __slots__ = ("_fields", "_read_only", "_reserved")

    def __init__(
        self, fields: Headers, reserved: Mapping[bytes, str], read_only: str | None = None
    ) -> None:
        self._fields = fields
        self._reserved = reserved
        self._read_only = read_only  # why edits are refused now, or None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, or `default`."""
        key = field_name(name)
        for field, value in self._fields:
            if field == key:
                return value.decode("latin-1")
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in order (empty when absent)."""
        key = field_name(name)
        return [value.decode("latin-1") for field, value in self._fields if field == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = field_name(name)
        return any(field == key for field, _ in self._fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for field, value in list(self._fields):
            yield field.decode("latin-1"), value.decode("latin-1")

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"HeaderFields({list(self)!r})"

    def set(self, name: str, value: Value) -> None:
        """Replace every field named `name` by one with `value` (where the first was, or at
        the end)."""
        key = self._editable(name)
        raw = field_value(value)
        fields = self._fields
        place = next((i for i, (field, _) in enumerate(fields) if field == key), len(fields))
        rest = [pair for pair in fields[place + 1 :] if pair[0] != key]
        fields[place:] = [(key, raw), *rest]

    def add(self, name: str, value: Value) -> None:
        """Add one field, after the others."""
        key = self._editable(name)
        self._fields.append((key, field_value(value)))

    def remove(self, name: str) -> int:
        """Remove every field named `name`; returns how many there were."""
        key = self._editable(name)
        fields = self._fields
        kept = [pair for pair in fields if pair[0] != key]
        removed = len(fields) - len(kept)
        if removed:
            fields[:] = kept
        return removed

    def _editable(self, name: str) -> bytes:
        if self._read_only is not None:
            raise RuntimeError(self._read_only)
        key = field_name(name)
        reason = self._reserved.get(key)
        if reason is not None:
            raise ValueError(f"hooks cannot edit {name}: {reason}")
        return key
