"""How an upstream spreads requests and watches its servers: the `balance`, `hash_key`,
`sticky`, `health`, `passive` and `queue` settings of `[upstream.NAME]`.

Frozen models that forbid unknown keys and describe every field, like every model; this
module must not know about files, TOML, how problems are shown, nor the balancers, checkers
and queues that use these settings.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator

from bastion.config.values import DocType, PositiveDuration, is_token

BalanceName = Literal["round_robin", "least_conn", "random_two", "ewma", "hash"]

_STATUS_RANGE = re.compile(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?")


def _hash_key(text: str) -> str:
    if text in ("ip", "uri"):
        return text
    kind, _, name = text.partition(":")
    if kind in ("header", "cookie") and is_token(name):
        return f"{kind}:{name.lower() if kind == 'header' else name}"
    raise ValueError(f'expected "ip", "uri", "header:NAME" or "cookie:NAME", got {text!r}')


def _status_range(text: str) -> str:
    match = _STATUS_RANGE.fullmatch(text)
    if match is None or (match.group(2) and int(match.group(2)) < int(match.group(1))):
        raise ValueError(f'expected a status or a range like "200-399", got {text!r}')
    return text


def _cookie_name(text: str) -> str:
    if not is_token(text):
        raise ValueError(f"expected a cookie name (letters, digits, -_.), got {text!r}")
    return text


def _health_path(text: str) -> str:
    if not text.startswith("/") or any(c.isspace() or ord(c) < 0x21 for c in text):
        raise ValueError(f'expected a path starting with "/" and without spaces, got {text!r}')
    return text


HashKey = Annotated[
    str, AfterValidator(_hash_key), DocType('"ip", "uri", "header:NAME", "cookie:NAME"')
]
StatusRange = Annotated[str, AfterValidator(_status_range), DocType("status range")]
CookieName = Annotated[str, AfterValidator(_cookie_name), DocType("cookie name")]
HealthPath = Annotated[str, AfterValidator(_health_path), DocType("path")]
Count = Annotated[StrictInt, Field(ge=1)]


def status_bounds(status_range: str) -> tuple[int, int]:
    """The first and last status of a validated `expect_status` range."""
    low, _, high = status_range.partition("-")
    return int(low), int(high or low)


class StickySettings(BaseModel):
    """An upstream's `sticky = { ... }`: keep each client on one server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cookie: CookieName | None = Field(
        default=None,
        description="Insert a signed cookie of this name that names the client's server.",
    )
    learn: CookieName | None = Field(
        default=None,
        description="Follow the application's own session cookie of this name to the server "
        "that set it.",
    )
    secret: str | None = Field(
        default=None,
        description="Key that signs `cookie` values; the same on every node. Without it the "
        "key derives from the upstream's name and servers: pins stay stable but can be forged.",
    )
    max_entries: Count = Field(
        default=100_000, description="With `learn`: most session values remembered."
    )
    ttl: PositiveDuration = Field(
        default=3600.0, description="With `learn`: how long an unused session value is kept."
    )

    @model_validator(mode="after")
    def _one_mode(self) -> StickySettings:
        if (self.cookie is None) == (self.learn is None):
            raise ValueError('give exactly one of "cookie" or "learn"')
        return self


class HealthSettings(BaseModel):
    """An upstream's `health = { ... }`: active HTTP checks of every server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: HealthPath = Field(default="/", description="Path of the check request (GET).")
    interval: PositiveDuration = Field(default=5.0, description="Time between two checks.")
    timeout: PositiveDuration = Field(default=2.0, description="Longest wait for an answer.")
    rise: Count = Field(default=2, description="Consecutive passes that bring a server up.")
    fall: Count = Field(default=3, description="Consecutive failures that take it down.")
    expect_status: StatusRange = Field(
        default="200-399", description='Statuses that pass, e.g. "200" or "200-399".'
    )


class PassiveSettings(BaseModel):
    """An upstream's `passive = { ... }`: eject servers that fail real requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: Annotated[StrictInt, Field(ge=0)] = Field(
        default=5, description="Failures within `window` that eject a server (0: never)."
    )
    window: PositiveDuration = Field(default=10.0, description="Time over which failures count.")
    eject: PositiveDuration = Field(
        default=30.0, description="How long an ejected server is left out (doubling on relapse)."
    )


class QueueSettings(BaseModel):
    """An upstream's `queue = { ... }`: requests wait when every server is at `max_conns`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: Annotated[StrictInt, Field(ge=0)] = Field(
        default=1000, description="Most requests waiting (0: none wait, 503 at once)."
    )
    timeout: PositiveDuration = Field(
        default=10.0, description="Longest wait; then 503 with Retry-After."
    )
