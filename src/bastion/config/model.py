"""The pydantic models of bastion's configuration file, one per TOML table.

Every model is frozen and forbids unknown keys; every field has a description, from which
docs/configuration.md is rendered (docs.py). Values in units are converted at load (see
values.py): durations to float seconds, sizes to int bytes, addresses to `units.Address`,
CIDRs to `ipaddress` networks, file paths to absolute `Path`s. The `[upstream.NAME]` tables
live in upstream.py, the `tls` tables in tls.py (their certificate checks in certificates.py);
they are re-exported here. Checks that span tables (a route naming an upstream that does not
exist, a host or a listen address given twice, a TLS listener without certificates) live in
one root validator on `BastionConfig`.

A key is accepted only once the feature behind it works; until then it is an unknown key.
This module must not know about files, TOML or how problems are shown to people (load.py),
nor about sockets or the proxy that runs from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    field_validator,
    model_validator,
)

from bastion.config.admin import AdminSettings as AdminSettings
from bastion.config.headers import HeaderEdits as HeaderEdits
from bastion.config.headers import HeaderPolicySettings as HeaderPolicySettings
from bastion.config.hooks import NO_OPTIONS, HookList, HookOptions, hook_options_problems
from bastion.config.hooks import HookSpec as HookSpec
from bastion.config.problems import Loc, problems_error
from bastion.config.rewrite import RewriteSettings as RewriteSettings
from bastion.config.tls import SiteTLS as SiteTLS
from bastion.config.tls import UpstreamTLS as UpstreamTLS
from bastion.config.upstream import KeepaliveSettings as KeepaliveSettings
from bastion.config.upstream import Upstreams
from bastion.config.upstream import UpstreamServer as UpstreamServer
from bastion.config.upstream import UpstreamSettings as UpstreamSettings
from bastion.config.upstream import UpstreamTimeouts as UpstreamTimeouts
from bastion.config.values import (
    AddressValue,
    DocType,
    Duration,
    FrozenMapping,
    HostPattern,
    Method,
    Network,
    PositiveDuration,
    PositiveSize,
    RedirectTemplate,
    Regex,
    RoutePath,
    Size,
)
from bastion.units import Address, describe_value, is_ip_literal

KIB = 1024
MIB = 1024 * KIB


def _worker_count(value: object) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f'expected a number of at least 1 or "auto", got {describe_value(value)}')


WorkerCount = Annotated[
    int | Literal["auto"], PlainValidator(_worker_count), DocType('integer or `"auto"`')
]


class ServerSettings(BaseModel):
    """The process, and the limits every client connection gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: WorkerCount = Field(
        default="auto",
        description='Worker processes sharing the listeners: a number, or `"auto"` for one '
        "per CPU core. A worker that dies is replaced; a reload starts a new set.",
    )
    user: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="The user the workers run as (with that user's primary group), after the "
        "supervisor has bound the listeners; bastion must be started as root to use it.",
    )
    max_connections: Annotated[int, Field(ge=1, strict=True)] = Field(
        default=10000,
        description="Client connections one worker serves at once; beyond it the worker "
        "stops accepting and new connections wait in the kernel backlog (or go to another "
        "worker).",
    )
    graceful_timeout: Duration = Field(
        default=30.0, description="How long reload and shutdown let in-flight requests finish."
    )
    trusted_proxies: tuple[Network, ...] = Field(
        default=(),
        description="Networks (CIDRs, or single addresses) whose `X-Forwarded-For` / "
        "`Forwarded` headers and PROXY protocol headers are believed.",
    )
    max_header_size: PositiveSize = Field(
        default=32 * KIB,
        description="Largest request head (request line and headers) a client may send; "
        "431 beyond.",
    )
    max_uri_size: PositiveSize = Field(
        default=8 * KIB, description="Longest request target a client may send; 414 beyond."
    )
    header_timeout: PositiveDuration = Field(
        default=30.0, description="Time a client has to send a complete request head."
    )
    keepalive_timeout: PositiveDuration = Field(
        default=75.0, description="How long an idle client keep-alive connection stays open."
    )
    body_timeout: PositiveDuration = Field(
        default=60.0,
        description="Longest gap between two reads of a client's request body, and between "
        "two successful writes to a slow client.",
    )
    resolver: AddressValue | None = Field(
        default=None,
        description='The DNS server (`"host:port"`, an IP address) asked for the `srv` names of '
        "upstream servers; the system's (/etc/resolv.conf) when left out.",
    )
    hooks: HookList = Field(
        default=(),
        description="Python hooks that see every request, before routing too (a changed host "
        "or path then picks the route); they run before the routes' own filters and hooks in "
        "every phase. See docs/hooks.md.",
    )
    hook_options: HookOptions = Field(
        default=NO_OPTIONS,
        description="Options for the server hooks listed without their own `options`.",
    )

    @model_validator(mode="after")
    def _hook_options_used(self) -> ServerSettings:
        problems = hook_options_problems(self.hooks, self.hook_options)
        if problems:
            raise problems_error(problems)
        return self

    @field_validator("resolver")
    @classmethod
    def _resolver_is_tcp(cls, value: Address | None) -> Address | None:
        if value is not None and (value.unix_path is not None or not is_ip_literal(value.host)):
            raise ValueError(
                f'expected the DNS server as "ip:port" like "10.0.0.2:53", got "{value}"'
            )
        return value


class LogSettings(BaseModel):
    """The access log and the error log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access: Annotated[str, Field(min_length=1)] = Field(
        default="stdout",
        description='Where the access log goes: `"stdout"`, `"off"` or a file path.',
    )
    format: Literal["combined", "json"] = Field(
        default="combined", description="Access log line format."
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Error log level; the error log goes to stderr."
    )


class ListenSettings(BaseModel):
    """One address to accept client connections on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: AddressValue = Field(
        description='Where to accept: `"host:port"`, `"[v6]:port"` or `"unix:/path"`; '
        "port 0 picks any free port."
    )
    tls: StrictBool = Field(
        default=False,
        description="Terminate TLS here; certificates come from the sites (SNI), so at least "
        "one site needs a `tls` table.",
    )
    redirect_to_https: StrictBool = Field(
        default=False,
        description="Answer every request with 308 to the `https://` URL (on a plain "
        "listener: not with `tls`).",
    )
    http2: Literal[True, False, "h2c"] | None = Field(
        default=None,
        description="HTTP/2: on TLS listeners `true` offers `h2` by ALPN (the default there); "
        'on plain listeners `"h2c"` accepts HTTP/2 with prior knowledge beside HTTP/1.1 '
        "(default off); `false` serves HTTP/1.1 only.",
    )
    proxy_protocol: StrictBool = Field(
        default=False,
        description="Expect a PROXY protocol header (v1 or v2) first on every connection, "
        "before TLS, from an L4 balancer; a connection without one is closed. Its client "
        "address is believed only from a peer in `server.trusted_proxies`.",
    )

    @model_validator(mode="after")
    def _tls_or_redirect(self) -> ListenSettings:
        if self.tls and self.redirect_to_https:
            raise problems_error(
                [(("redirect_to_https",), "give either tls or redirect_to_https, not both")]
            )
        if self.tls and self.http2 == "h2c":
            raise problems_error(
                [(("http2",), '"h2c" is cleartext HTTP/2; on a TLS listener use true')]
            )
        if not self.tls and self.http2 is True:
            raise problems_error(
                [(("http2",), 'a plain listener speaks HTTP/2 only as "h2c" (prior knowledge)')]
            )
        if self.proxy_protocol and self.address.unix_path is not None:
            raise problems_error(
                [
                    (
                        ("proxy_protocol",),
                        "not on a unix: listener: its peers are never trusted proxies, so the "
                        "header would never be believed",
                    )
                ]
            )
        return self

    @property
    def offers_h2(self) -> bool:
        """Whether this listener speaks HTTP/2 (by ALPN, or by prior knowledge)."""
        if self.tls:
            return self.http2 is not False
        return self.http2 == "h2c"


class RedirectSettings(BaseModel):
    """A route's `redirect = { to = "...", status = 301 }`: answer with a redirect."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: RedirectTemplate = Field(
        description="Target URL template; placeholders `{scheme}` `{host}` `{uri}` `{path}` "
        '`{query}` (write a literal brace as `"{{"` or `"}}"`).'
    )
    status: Literal[301, 302, 303, 307, 308] = Field(
        default=301, description="Redirect status code."
    )


class RouteSettings(BaseModel):
    """Which requests go where; the first matching route of a site, in file order, wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: RoutePath = Field(
        default="/", description="Path prefix, matched on whole segments after normalisation."
    )
    path_regex: Regex | None = Field(
        default=None, description="A regular expression to match the path with, instead of `path`."
    )
    methods: Annotated[tuple[Method, ...], Field(min_length=1)] | None = Field(
        default=None,
        description="Only these methods match (uppercased); all methods when left out.",
    )
    upstream: str | None = Field(
        default=None, description="Name of the `[upstream.NAME]` to proxy to (or give `redirect`)."
    )
    redirect: RedirectSettings | None = Field(
        default=None, description="Answer with a redirect instead of proxying (or give `upstream`)."
    )
    strip_prefix: StrictBool = Field(
        default=False, description="Remove `path` from the request path before forwarding."
    )
    forwarded: Literal["x-forwarded", "rfc7239", "both", "none"] = Field(
        default="both",
        description="Which headers tell the origin about the client: `X-Forwarded-*`, "
        "`Forwarded` (RFC 7239), both or none.",
    )
    max_body: Size = Field(default=100 * MIB, description="Largest request body; 413 beyond.")
    websocket: StrictBool = Field(
        default=True, description="Let Upgrade requests (WebSocket and others) pass through."
    )
    client_cert_headers: StrictBool | None = Field(
        default=None,
        description="Send the client's certificate to the origin: `X-Client-Cert` (URL-encoded "
        "PEM), `X-Client-Cert-Subject`, `-Issuer`, `-Serial`, `-Fingerprint` (SHA-256) and "
        "`-Verify`; when left out, on if the site has `tls.client_auth`.",
    )
    rewrite: RewriteSettings = Field(
        default=RewriteSettings(),
        description="Map the origin's internal URLs to the public one in redirects, cookies "
        "and (optionally) bodies; see `[site.route.rewrite]`.",
    )
    headers: HeaderPolicySettings = Field(
        default=HeaderPolicySettings(),
        description="Set and remove request and response headers, hide the origin's "
        "software, add security headers; see `[site.route.headers]`.",
    )
    hooks: HookList = Field(
        default=(),
        description="Python hooks for this route, run after its other filters in every phase: "
        '`"package.module:Name"` or `{ hook = "...", options = {...} }`. See docs/hooks.md.',
    )
    hook_options: HookOptions = Field(
        default=NO_OPTIONS,
        description="Options for the hooks listed without their own `options`.",
    )

    @model_validator(mode="after")
    def _one_way_to_answer(self) -> RouteSettings:
        problems: list[tuple[Loc, str]] = []
        if self.path_regex is not None and "path" in self.model_fields_set:
            problems.append((("path_regex",), "give either path or path_regex, not both"))
        if self.path_regex is not None and self.strip_prefix:
            problems.append((("strip_prefix",), "strip_prefix works with path, not path_regex"))
        if self.upstream is not None and self.redirect is not None:
            problems.append(((), "give either upstream or redirect, not both"))
        if self.redirect is not None and "rewrite" in self.model_fields_set:
            problems.append((("rewrite",), "rewrite applies to routes with an upstream"))
        if self.upstream is None and self.redirect is None:
            problems.append(((), 'missing required key "upstream" (or "redirect")'))
        problems += hook_options_problems(self.hooks, self.hook_options)
        if self.redirect is not None and self.headers.request.active:
            problems.append(
                (("headers", "request"), "a redirect route sends no request to an origin")
            )
        if problems:
            raise problems_error(problems)
        return self


class SiteSettings(BaseModel):
    """A virtual host, chosen by the request's host name; the most specific pattern wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: Annotated[tuple[HostPattern, ...], Field(min_length=1)] = Field(
        description='Host names this site answers: exact names, `"*.example.com"` '
        'wildcards, `"*"` for any; lowercased, no port.'
    )
    tls: SiteTLS | None = Field(
        default=None,
        description="The site's certificate for `tls = true` listeners, and client "
        "certificates; plain HTTP only when left out.",
    )
    route: Annotated[tuple[RouteSettings, ...], Field(min_length=1)] = Field(
        description="The site's routes (`[[site.route]]`), tried in file order."
    )


class BastionConfig(BaseModel):
    """The whole configuration file; its top-level keys are the tables below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: ServerSettings = Field(default=ServerSettings(), description="Process-wide settings.")
    log: LogSettings = Field(default=LogSettings(), description="Access and error logs.")
    admin: AdminSettings = Field(
        default=AdminSettings(), description="The admin API, metrics and dashboard listener."
    )
    listen: Annotated[tuple[ListenSettings, ...], Field(min_length=1)] = Field(
        description="Listeners (`[[listen]]`); at least one."
    )
    site: Annotated[tuple[SiteSettings, ...], Field(min_length=1)] = Field(
        description="Sites (`[[site]]`); at least one."
    )
    upstream: Upstreams = Field(
        default=FrozenMapping[UpstreamSettings]({}),
        description="Named upstreams (`[upstream.NAME]`).",
    )
    _source: str = PrivateAttr("")

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(context, Mapping):
            self._source = str(context.get("source", ""))

    @property
    def source(self) -> str:
        """The file this configuration was read from ("" when built in code)."""
        return self._source

    @model_validator(mode="after")
    def _cross_references(self) -> BastionConfig:
        problems = (
            self._undefined_upstreams()
            + self._repeated_hosts()
            + self._repeated_listens()
            + self._tls_listens_without_certificates()
            + self._sticky_cookies_dropped()
            + self._proxy_protocol_without_trust()
        )
        if problems:
            raise problems_error(problems)
        return self

    def _proxy_protocol_without_trust(self) -> list[tuple[Loc, str]]:
        if self.server.trusted_proxies:
            return []
        return [
            (
                ("listen", i, "proxy_protocol"),
                "server.trusted_proxies is empty, so no PROXY header would be believed: "
                "list the balancer's addresses there",
            )
            for i, listen in enumerate(self.listen)
            if listen.proxy_protocol
        ]

    def _undefined_upstreams(self) -> list[tuple[Loc, str]]:
        defined = ", ".join(sorted(self.upstream)) or "none"
        return [
            (
                ("site", s, "route", r, "upstream"),
                f'route names upstream "{route.upstream}" which is not defined '
                f"(defined: {defined})",
            )
            for s, site in enumerate(self.site)
            for r, route in enumerate(site.route)
            if route.upstream is not None and route.upstream not in self.upstream
        ]

    def _repeated_hosts(self) -> list[tuple[Loc, str]]:
        first_site: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for s, site in enumerate(self.site):
            for h, host in enumerate(site.hosts):
                if host in first_site:
                    where = "this site" if first_site[host] == s else f"site[{first_site[host]}]"
                    problems.append(
                        (("site", s, "hosts", h), f'host "{host}" is already listed by {where}')
                    )
                first_site.setdefault(host, s)
        return problems

    def _repeated_listens(self) -> list[tuple[Loc, str]]:
        first: dict[Address, int] = {}
        problems: list[tuple[Loc, str]] = []
        for i, listen in enumerate(self.listen):
            address = listen.address
            if address in first and (address.port != 0 or address.unix_path is not None):
                problems.append(
                    (
                        ("listen", i, "address"),
                        f'address "{address}" is already used by listen[{first[address]}]',
                    )
                )
            first.setdefault(address, i)
        return problems

    def _sticky_cookies_dropped(self) -> list[tuple[Loc, str]]:
        """A route that removes or replaces Set-Cookie would drop the sticky cookie too."""
        problems: list[tuple[Loc, str]] = []
        for s, site in enumerate(self.site):
            for r, route in enumerate(site.route):
                upstream = self.upstream.get(route.upstream or "")
                sticky = upstream.sticky if upstream is not None else None
                if sticky is None or sticky.cookie is None:
                    continue
                problems += [
                    (
                        ("site", s, "route", r, "headers", "response", *loc),
                        f'editing set-cookie would drop the sticky cookie "{sticky.cookie}" '
                        f'of upstream "{route.upstream}"',
                    )
                    for loc, name in route.headers.response.names()
                    if name.lower() == "set-cookie"
                ]
        return problems

    def _tls_listens_without_certificates(self) -> list[tuple[Loc, str]]:
        if any(site.tls is not None for site in self.site):
            return []
        return [
            (
                ("listen", i, "tls"),
                "a TLS listener needs at least one site with tls.certificate and tls.key; "
                "no site has a tls table",
            )
            for i, listen in enumerate(self.listen)
            if listen.tls
        ]
