"""A route's `headers` table: set and remove request and response headers, hide the origin's
software, add a preset of security headers.

Header names are RFC 9110 tokens, compared without case; values are visible ASCII that may
hold a few placeholders (`HEADER_PLACEHOLDERS`). The tables keep the names as the user wrote
them, so problems name the key as written; the filter (bastion.filters.header_policy) lowercases
them when it compiles the policy. Which headers the policy may not touch, and why, is the
`_REFUSED` table below: the message framing, hop-by-hop headers and what bastion itself writes.

This module must not know how the edits are applied, nor files, TOML or the proxy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    model_validator,
)

from bastion.config.problems import Loc, problems_error
from bastion.config.values import DocType, FrozenMapping, check_template, is_token
from bastion.units import describe_value

HEADER_PLACEHOLDERS = ("client_ip", "host", "scheme", "uri", "request_id")

# Response headers that only tell which software (and version) runs behind the proxy, or
# where: what `hide_origin = true` removes. None of them carries anything a client needs.
HIDDEN_ORIGIN_HEADERS: tuple[str, ...] = (
    "Server",  # Apache/2.4.41 (Ubuntu), Microsoft-IIS/10.0, gunicorn
    "X-Powered-By",  # PHP/8.1.2, Express, ASP.NET, Next.js
    "X-AspNet-Version",
    "X-AspNetMvc-Version",
    "X-Generator",  # Drupal 10, WordPress 6.4
    "X-Drupal-Cache",
    "X-Drupal-Dynamic-Cache",
    "X-Redirect-By",  # WordPress, Yoast SEO
    "X-Runtime",  # Rack / Rails: the framework, and per-request timings
    "X-Mod-Pagespeed",  # the PageSpeed module's version
    "X-Page-Speed",
    "X-Varnish",  # Varnish transaction ids: there is a Varnish
    "X-Backend-Server",  # the internal host name that answered
    "X-OWA-Version",  # Exchange Outlook Web Access build
    "X-SourceFiles",  # IIS Express: the local file path, base64-encoded
    "X-Turbo-Charged-By",  # LiteSpeed
)

# The opt-in security preset (`security = true`): added to a response that lacks them. Only
# headers that cannot break an ordinary application: no CSP beyond framing, no COOP/CORP
# (they break popups and cross-origin embedding), no Permissions-Policy (which features an
# app uses is its own business), no HSTS (the site's `tls.hsts`, sent over TLS only).
SECURITY_PRESET: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
)

_FRAMING = "frames the message body; bastion writes it for each connection itself"
_HOP_BY_HOP = "is hop-by-hop: it describes one connection, and bastion manages it on each side"
# (direction, operation) -> {lowercase name: why the policy may not do it}. Hop-by-hop names
# are those of bastion.http.headers.HOP_BY_HOP (a test keeps the two in step).
_EVERYWHERE = {
    "content-length": _FRAMING,
    "transfer-encoding": _FRAMING,
    **dict.fromkeys(
        (
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
            "http2-settings",
        ),
        _HOP_BY_HOP,
    ),
}
_REQUEST_ID = "bastion sends X-Request-Id itself: the id its logs and error pages show"
_REFUSED: dict[tuple[str, str], dict[str, str]] = {
    ("request", "set"): {
        **_EVERYWHERE,
        "x-request-id": _REQUEST_ID,
        "via": "bastion adds itself to Via, which every request must carry (RFC 9110 7.6.3)",
    },
    ("request", "remove"): {
        **_EVERYWHERE,
        "host": "an HTTP/1.1 request must carry Host (RFC 9112 3.2); set it to a fixed name "
        "instead",
        "x-request-id": _REQUEST_ID,
        "via": "Via records every proxy the request passed, which detects loops (RFC 9110 7.6.3)",
    },
    ("response", "set"): {
        **_EVERYWHERE,
        "via": "bastion adds its own Via entry after the policy; only removing the origin's "
        "entries is possible",
        "strict-transport-security": "use the site's tls.hsts, which is sent over TLS only "
        "(RFC 6797 7.2)",
    },
    ("response", "remove"): _EVERYWHERE,
}

_CONTROL_NAMES = {0: "\\0", 9: "\\t", 10: "\\n", 13: "\\r"}


def _is_control(char: str) -> bool:
    return ord(char) < 32 or ord(char) == 127


def _shown(text: str) -> str:
    """`text` quoted, with control characters escaped so a message stays on one line."""
    return "".join(
        _CONTROL_NAMES.get(ord(c), f"\\x{ord(c):02x}") if _is_control(c) else c
        for c in describe_value(text)
    )


def _header_name(name: str) -> str:
    if not is_token(name):
        raise ValueError(
            f'expected a header name like "X-Frame-Options" (letters, digits and '
            f"!#$%&'*+-.^_`|~), got {_shown(name)}"
        )
    return name


def _header_value(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(
            "a header value cannot hold CR, LF or NUL: they would end the header line and "
            f"start another (header injection), got {_shown(value)}"
        )
    if not value.isascii() or any(_is_control(c) and c != "\t" for c in value):
        raise ValueError(
            "a header value holds visible ASCII, spaces and tabs (RFC 9110 5.5), "
            f"got {_shown(value)}"
        )
    if value != value.strip(" \t"):
        raise ValueError(
            f"a header value cannot start or end with blanks (recipients strip them), "
            f"got {_shown(value)}"
        )
    return check_template(value, HEADER_PLACEHOLDERS)


def _header_table(table: Mapping[str, str]) -> FrozenMapping[str]:
    first: dict[str, str] = {}
    for name in table:
        spelling = first.setdefault(name.lower(), name)
        if spelling != name:
            raise ValueError(
                f'header "{name}" is given twice (also as "{spelling}"); names ignore case'
            )
    return FrozenMapping(table)


HeaderName = Annotated[str, AfterValidator(_header_name), DocType("header name")]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
HeaderTable = Annotated[
    Mapping[HeaderName, HeaderValue],
    AfterValidator(_header_table),
    PlainSerializer(dict, return_type=dict[str, str]),
    DocType("table of header values"),
]


class HeaderEdits(BaseModel):
    """Headers to set and to remove in one direction (`request` or `response`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set: HeaderTable = Field(
        default=FrozenMapping[str]({}),
        description="Header name → value. Every occurrence the message had is replaced by "
        "this one. Values may hold placeholders: `{client_ip}` (the real client address), "
        "`{host}` (the Host the client sent), `{scheme}` (`http` or `https`, as the client "
        "came), `{uri}` (path and query the client asked for), `{request_id}`; write a "
        'literal brace as `"{{"` or `"}}"`.',
    )
    remove: tuple[HeaderName, ...] = Field(
        default=(), description="Header names to remove, every occurrence."
    )

    @property
    def active(self) -> bool:
        """Whether these edits change anything."""
        return bool(self.set or self.remove)

    def names(self) -> Iterator[tuple[Loc, str]]:
        """(key path below this table, name as written) of every header set or removed."""
        for name in self.set:
            yield ("set", name), name
        for index, name in enumerate(self.remove):
            yield ("remove", index), name


class HeaderPolicySettings(BaseModel):
    """A route's `headers = { ... }`: what the origin and the client see of each other's
    headers. Names ignore case. Framing (`Content-Length`, `Transfer-Encoding`) and hop-by-hop
    headers (`Connection`, `Upgrade`…) are bastion's and cannot be edited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: HeaderEdits = Field(
        default=HeaderEdits(),
        description="Edits of the request the origin receives, made after the forwarding "
        "headers are added (so `X-Forwarded-*` and `Forwarded` can be removed or replaced). "
        "`Host` may be set (an origin that wants a fixed name), not removed; `Via` and "
        "`X-Request-Id` are bastion's.",
    )
    response: HeaderEdits = Field(
        default=HeaderEdits(),
        description="Edits of the response the client receives, from the origin or a "
        "redirect; bastion's own error answers (502, 504, 413…) are left as they are. "
        "`Strict-Transport-Security` is set by the site's `tls.hsts`.",
    )
    hide_origin: StrictBool = Field(
        default=False,
        description="Remove response headers that only reveal the software behind the proxy: "
        + ", ".join(f"`{name}`" for name in HIDDEN_ORIGIN_HEADERS)
        + ". A name in `response.set` is still sent with its value.",
    )
    security: StrictBool = Field(
        default=False,
        description="Add "
        + ", ".join(f"`{name}: {value}`" for name, value in SECURITY_PRESET)
        + " to every response that lacks them (the origin's own values stay; "
        "`X-Frame-Options` is not added when the origin's CSP has `frame-ancestors`). "
        "A name in `response.set` or `response.remove` is left to those.",
    )

    @property
    def active(self) -> bool:
        """Whether this policy changes anything."""
        return self.request.active or self.response.active or self.hide_origin or self.security

    @model_validator(mode="after")
    def _allowed_names(self) -> HeaderPolicySettings:
        problems: list[tuple[Loc, str]] = []
        for direction, edits in (("request", self.request), ("response", self.response)):
            problems += _edit_problems(direction, edits)
        if problems:
            raise problems_error(problems)
        return self


def _edit_problems(direction: str, edits: HeaderEdits) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    seen: dict[str, Loc] = {}
    for loc, written in edits.names():
        operation, name = str(loc[0]), written.lower()
        reason = _REFUSED[direction, operation].get(name)
        if reason is not None:
            problems.append(((direction, *loc), f"cannot {operation} {written}: {reason}"))
        elif name in seen:
            problems.append(((direction, *loc), _repeated(written, seen[name])))
        seen.setdefault(name, loc)
    return problems


def _repeated(name: str, first: Loc) -> str:
    if first[0] == "set":
        return f'"{name}" is already set, which replaces it: no need to remove it too'
    return f'"{name}" is already listed at remove[{first[1]}]'
