"""Who may call the admin API: the bearer token, the loopback rule and the browser guards.

- With a token configured, every API call must send `Authorization: Bearer TOKEN`, loopback
  clients too (compared in constant time); otherwise 401 with `WWW-Authenticate: Bearer`.
- Without one, only loopback clients (127.0.0.0/8, ::1, IPv4-mapped loopback, a unix
  socket's peers) are served; others get 403. Their `Host` must then name a loopback address
  or `localhost`: a web page whose DNS name was re-pointed at 127.0.0.1 (DNS rebinding) does
  not get to call the API from a browser on the admin's machine.
- A `POST` that a browser sends from another origin (its `Origin` is not this listener's
  own) is refused with 403, so a page cannot drive the API by a cross-site form or fetch.

Pure: takes the peer address and header values, returns a `Refusal` or None.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

BEARER_CHALLENGE = 'Bearer realm="bastion admin"'


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def is_loopback(peer_host: str | None) -> bool:
    """Whether the peer is this machine: a loopback address, or None for a unix socket."""
    if peer_host is None:
        return True
    try:
        address = ipaddress.ip_address(peer_host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _local_host_name(host: str) -> bool:
    """`Host` names localhost or a loopback literal (with or without a port)."""
    name = urlsplit("//" + host).hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_token(token: str, authorization: str | None) -> Refusal | None:
    """None when `authorization` is `Bearer <token>`."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    ):
        return None
    why = "missing bearer token" if authorization is None else "wrong bearer token"
    return Refusal(401, why, (("WWW-Authenticate", BEARER_CHALLENGE),))


def admit(
    token: str | None,
    *,
    peer_host: str | None,
    host: str | None,
    authorization: str | None,
) -> Refusal | None:
    """The API call may go on (None), or the refusal to answer it with."""
    if token is not None:
        return check_token(token, authorization)
    if not is_loopback(peer_host):
        return Refusal(403, "the admin API serves only loopback clients when no admin token is set")
    if peer_host is not None and not _local_host_name(host or ""):
        return Refusal(403, "Host must name a loopback address or localhost")
    return None


def same_origin(origin: str | None, host: str | None) -> bool:
    """A browser's `Origin` names this listener (`Host`), or the client sent none."""
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == (host or "").lower()
