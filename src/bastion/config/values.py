"""The values a configuration key may hold, one annotated type or check per kind of value.

Units (durations, sizes, addresses, networks) are converted here from the text a user wrote:
a file's values must be text with a unit, while Python callers (tests, code building a
config) may pass ready-made values (float seconds, int bytes, `Address`, networks). File
paths are made absolute against the `base_dir` of the validation context (the configuration
file's directory), or the current directory. Each check raises `ValueError` with a message
for people; `DocType` tells docs.py how to name a type and spell its default. This module
must not open files, nor know about TOML, key paths or tables.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, PlainSerializer, PlainValidator, ValidationInfo

from bastion.units import (
    ADDRESS_EXPECTED,
    DURATION_EXPECTED,
    NETWORK_EXPECTED,
    Address,
    describe_value,
    format_duration,
    format_size,
    parse_address,
    parse_duration,
    parse_network,
    parse_size,
)

REDIRECT_PLACEHOLDERS = ("scheme", "host", "uri", "path", "query")
SERVER_URL_EXPECTED = 'expected a server URL like "http://10.0.0.5:8080"'
SERVER_URL_PORTS = {"http": 80, "https": 443}
HSTS_EXPECTED = (
    'expected a Strict-Transport-Security value starting with "max-age=" and a number of '
    'seconds, like "max-age=31536000"'
)

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST_NAME_RE = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*"
)
_UPSTREAM_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# max-age first, then only `; directive` parts of visible ASCII (a header value, no CR/LF).
_HSTS_RE = re.compile(r"max-age=\d+[ \t]*(?:;[ \t!-~]*)?", re.IGNORECASE)

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class DocType:
    """Marks a field for the docs: the name of its type, and how to spell a default back."""

    name: str
    spell: Callable[[Any], str] | None = None


class FrozenMapping(Mapping[str, V], Generic[V]):
    """A read-only, hashable mapping (for `[upstream.NAME]` tables)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, V]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMapping({self._items!r})"


def _from_file(info: ValidationInfo) -> bool:
    """The loader validates with a context; Python callers may pass converted values."""
    return info.context is not None


def _text(value: object, expected: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {describe_value(value)}")
    return value


def _duration(value: object, info: ValidationInfo) -> float:
    if not _from_file(info) and isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    return parse_duration(_text(value, DURATION_EXPECTED))


def _positive_duration(value: object, info: ValidationInfo) -> float:
    seconds = _duration(value, info)
    if seconds <= 0:
        raise ValueError(f"expected a duration greater than 0, got {describe_value(value)}")
    return seconds


def _size(value: object) -> int:
    return parse_size(value)  # type: ignore[arg-type]  # parse_size checks the type itself


def _positive_size(value: object) -> int:
    size = _size(value)
    if size <= 0:
        raise ValueError(f"expected a size greater than 0, got {describe_value(value)}")
    return size


def _address(value: object, info: ValidationInfo) -> Address:
    if not _from_file(info) and isinstance(value, Address):
        return value
    return parse_address(_text(value, ADDRESS_EXPECTED))


def _file_path(value: object, info: ValidationInfo) -> Path:
    """An absolute path: relative ones are taken from the configuration file's directory."""
    if _from_file(info) or not isinstance(value, os.PathLike):
        value = _text(value, "expected a file path")
    if not os.fspath(value):
        raise ValueError('expected a file path, got ""')
    context = info.context if isinstance(info.context, Mapping) else {}
    base = Path(context.get("base_dir") or Path.cwd())
    return base.absolute() / value


def _network(value: object, info: ValidationInfo) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not _from_file(info) and isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    return parse_network(_text(value, NETWORK_EXPECTED))


# Dumped as JSON, unit values read as a user writes them, so the dump loads again.
_DURATION_JSON = PlainSerializer(format_duration, return_type=str, when_used="json")
_SIZE_JSON = PlainSerializer(format_size, return_type=str, when_used="json")
_AS_TEXT = PlainSerializer(str, return_type=str)

Duration = Annotated[
    float, PlainValidator(_duration), _DURATION_JSON, DocType("duration", format_duration)
]
PositiveDuration = Annotated[
    float, PlainValidator(_positive_duration), _DURATION_JSON, DocType("duration", format_duration)
]
Size = Annotated[int, PlainValidator(_size), _SIZE_JSON, DocType("size", format_size)]
PositiveSize = Annotated[
    int, PlainValidator(_positive_size), _SIZE_JSON, DocType("size", format_size)
]
AddressValue = Annotated[Address, PlainValidator(_address), _AS_TEXT, DocType("address", str)]
Network = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    PlainValidator(_network),
    _AS_TEXT,
    DocType("CIDR", str),
]


def _host_pattern(text: str) -> str:
    """Lowercase a site host: an exact name, "*.suffix", "*" or "[v6]"; no port."""
    name = text.lower().removesuffix(".")
    if name == "*" or (name.startswith("[") and name.endswith("]") and _is_ipv6(name[1:-1])):
        return name
    if not name:
        raise ValueError("a host cannot be empty")
    if ":" in name:
        raise ValueError(
            f"a host takes no port (ports belong to [[listen]]), got {describe_value(text)}"
        )
    wildcard = name.startswith("*.")
    rest = name.removeprefix("*.")
    if "*" in rest:
        raise ValueError(
            f'"*" is allowed only as the whole first label, like "*.example.com", '
            f"got {describe_value(text)}"
        )
    try:
        rest = rest if rest.isascii() else rest.encode("idna").decode("ascii")
    except UnicodeError:
        rest = ""
    if _HOST_NAME_RE.fullmatch(rest) is None:
        raise ValueError(f'expected a host name like "example.com", got {describe_value(text)}')
    return f"*.{rest}" if wildcard else rest


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _method(text: str) -> str:
    if not is_token(text):
        raise ValueError(f'expected an HTTP method like "GET", got {describe_value(text)}')
    return text.upper()


def _route_path(text: str) -> str:
    if not text.startswith("/") or "?" in text or "#" in text:
        raise ValueError(
            f'expected a path starting with "/", like "/api", got {describe_value(text)}'
        )
    return text


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise ValueError(f"invalid regular expression: {error}") from None
    return text


def is_token(text: str) -> bool:
    """Whether `text` is an RFC 9110 token (a method, a header name)."""
    return _TOKEN_RE.fullmatch(text) is not None


def check_template(template: str, placeholders: tuple[str, ...]) -> str:
    """`template` if every `{name}` in it is one of `placeholders` (`{{`, `}}`: literal braces)."""
    known = ", ".join(f"{{{name}}}" for name in placeholders)
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as error:
        raise ValueError(f'{error} (write a literal brace as "{{{{" or "}}}}")') from None
    for name, spec, conversion in fields:
        if name not in placeholders or spec or conversion:
            written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f'unknown placeholder "{{{written}}}" (known: {known})')
    return template


def _redirect_template(template: str) -> str:
    return check_template(template, REDIRECT_PLACEHOLDERS)


def parse_server_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an upstream server URL "http[s]://host[:port]"."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SERVER_URL_PORTS or not parts.netloc or "@" in parts.netloc:
        raise ValueError(f"{SERVER_URL_EXPECTED}, got {describe_value(url)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"a server URL names only scheme, host and port, like "
            f'"http://10.0.0.5:8080", got {describe_value(url)}'
        )
    netloc = parts.netloc
    has_port = ":" in netloc.rpartition("]")[2]
    try:
        address = parse_address(netloc if has_port else f"{netloc}:{SERVER_URL_PORTS[scheme]}")
    except ValueError:
        raise ValueError(f"{SERVER_URL_EXPECTED}, got {describe_value(url)}") from None
    if address.port == 0:
        raise ValueError(f"a server port must be 1 to 65535, got {describe_value(url)}")
    return scheme, address.host.lower(), address.port


def _server_name(text: str) -> str:
    """A DNS name (or address) to send by SNI and verify: lowercased, IDNA, no port."""
    name = text.lower().removesuffix(".")
    try:
        ascii_name = name if name.isascii() else name.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    if _HOST_NAME_RE.fullmatch(ascii_name) is None:
        raise ValueError(
            f'expected a host name like "app.internal", without a port, got {describe_value(text)}'
        )
    return ascii_name


def _hsts(text: str) -> str:
    if _HSTS_RE.fullmatch(text) is None:
        raise ValueError(f"{HSTS_EXPECTED}, got {describe_value(text)}")
    return text


def _upstream_name(name: str) -> str:
    if _UPSTREAM_NAME_RE.fullmatch(name) is None:
        raise ValueError(
            f'an upstream name uses letters, digits, "_", "-" and ".", got {describe_value(name)}'
        )
    return name


HostPattern = Annotated[str, AfterValidator(_host_pattern), DocType("host pattern")]
Method = Annotated[str, AfterValidator(_method), DocType("method")]
RoutePath = Annotated[str, AfterValidator(_route_path), DocType("path")]
Regex = Annotated[str, AfterValidator(_regex), DocType("regular expression")]
RedirectTemplate = Annotated[str, AfterValidator(_redirect_template), DocType("URL template")]
UpstreamName = Annotated[str, AfterValidator(_upstream_name)]
ServerName = Annotated[str, AfterValidator(_server_name), DocType("host name")]
StrictTransportSecurity = Annotated[str, AfterValidator(_hsts), DocType("header value")]
FilePath = Annotated[Path, PlainValidator(_file_path), DocType("file path")]
