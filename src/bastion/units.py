"""The value syntaxes of bastion's configuration: durations, sizes, addresses and networks.

Each `parse_*` function turns the text a user wrote into the value the proxy works with
(float seconds, int bytes, an `Address`, an `ipaddress` network) or raises `ValueError` with a
message written for that user: what was expected and what was found. `format_duration` and
`format_size` spell a value back the way a user would write it (the docs use them).
`describe_value` shows any configuration value the way it reads in a TOML file, for messages.

Pure functions only: this module knows nothing of files, TOML, pydantic or key paths.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal

DURATION_EXPECTED = 'expected a duration like "5s" or "250ms"'
SIZE_EXPECTED = 'expected a size like "64KB" or "10MB", or an integer of bytes'
ADDRESS_EXPECTED = 'expected an address like "127.0.0.1:8080", "[::1]:8080" or "unix:/path"'
NETWORK_EXPECTED = 'expected a network like "10.0.0.0/8", "10.1.2.3" or "fd00::/8"'

_DURATION_UNITS: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
# Largest first: the unit format_duration tries first.
_DURATION_SPELLING: tuple[tuple[str, Decimal], ...] = (
    ("h", Decimal(3600)),
    ("m", Decimal(60)),
    ("s", Decimal(1)),
    ("ms", Decimal("0.001")),
)
_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE_SPELLING: tuple[tuple[str, int], ...] = (
    ("TB", 1024**4),
    ("GB", 1024**3),
    ("MB", 1024**2),
    ("KB", 1024),
)

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_BRACKETED_RE = re.compile(r"\[([^\]]+)\]:([^:]*)")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_MAX_PORT = 65535


def describe_value(value: object) -> str:
    """Show a configuration value the way it reads in a TOML file: `"abc"`, `5`, `true`."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing"
    return str(value)


def parse_duration(text: str) -> float:
    """Seconds in a duration with a unit: "250ms", "5s", "1.5s", "2m", "1h"."""
    if text.strip().startswith("-"):
        raise ValueError(f"a duration cannot be negative, got {describe_value(text)}")
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None or match.group(2) not in _DURATION_UNITS:
        raise ValueError(f"{DURATION_EXPECTED}, got {describe_value(text)}")
    number, unit = match.groups()
    return float(Decimal(number) * _DURATION_UNITS[unit])


def format_duration(seconds: float) -> str:
    """Spell a duration in a unit that keeps it whole: 30.0 -> "30s", 0.25 -> "250ms"."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {seconds!r}")
    if seconds == 0:
        return "0s"
    exact = Decimal(repr(float(seconds)))
    for unit, factor in _DURATION_SPELLING:
        count = exact / factor
        # "60s" reads better than "1m"; "1h" better than "60m".
        if count == count.to_integral_value() and (count >= 2 or unit in ("h", "s", "ms")):
            return f"{int(count)}{unit}"
    return f"{exact:f}s"


def parse_size(value: str | int) -> int:
    """Bytes in a size: an integer of bytes, or "64KB", "10MB", "1GB", "1.5MiB" (1024-based)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{SIZE_EXPECTED}, got {describe_value(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if value.strip().startswith("-"):
        raise ValueError(f"a size cannot be negative, got {describe_value(value)}")
    match = _SIZE_RE.fullmatch(value.strip())
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and unit not in _SIZE_UNITS):
        raise ValueError(f"{SIZE_EXPECTED}, got {describe_value(value)}")
    return int(Decimal(match.group(1)) * _SIZE_UNITS.get(unit, 1))


def format_size(size: int) -> str:
    """Spell a size in the largest unit that keeps it whole: 32768 -> "32KB", 100 -> "100B"."""
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {size}")
    for unit, factor in _SIZE_SPELLING:
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


@dataclass(frozen=True, slots=True)
class Address:
    """Where to listen or connect: `host:port`, or a Unix socket path (host "" and port 0)."""

    host: str
    port: int
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """An `Address` from "host:port", "[v6]:port" or "unix:/path"; port 0 means any free port."""
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise ValueError(
                f'a unix address needs a path, like "unix:/run/bastion.sock", '
                f"got {describe_value(text)}"
            )
        return Address(host="", port=0, unix_path=path)
    bracketed = _BRACKETED_RE.fullmatch(text)
    if bracketed is not None:
        host, port_text = bracketed.groups()
        _check_ipv6(host, text)
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{ADDRESS_EXPECTED}, got {describe_value(text)}")
        if ":" in host:
            raise ValueError(
                f'an IPv6 address needs brackets, like "[::1]:8080", got {describe_value(text)}'
            )
        _check_host(host, text)
    return Address(host=host, port=_parse_port(port_text, text))


def _check_ipv6(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{ADDRESS_EXPECTED}, got {describe_value(text)}") from None


def _check_host(host: str, text: str) -> None:
    if re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"{describe_value(host)} is not an IPv4 address, in {describe_value(text)}"
            ) from None
    elif _HOSTNAME_RE.fullmatch(host) is None:
        raise ValueError(f"{ADDRESS_EXPECTED}, got {describe_value(text)}")


def _parse_port(port_text: str, text: str) -> int:
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > _MAX_PORT:
        raise ValueError(
            f"expected a port from 0 to {_MAX_PORT}, got {describe_value(port_text)} "
            f"in {describe_value(text)}"
        )
    return int(port_text)


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network from a CIDR ("10.0.0.0/8", "fd00::/8") or a single address ("10.1.2.3" = /32)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{NETWORK_EXPECTED}, got {describe_value(text)}") from None
    raise ValueError(
        f"{describe_value(text)} has host bits set; did you mean {describe_value(str(loose))}?"
    )


def is_ip_literal(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
