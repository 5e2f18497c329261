"""One admin request and its response, as the admin server and the routes exchange them.

JSON bodies are compact UTF-8; every error is `{"error": "..."}`. No sockets here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Request:
    """One admin request: header names lowercase; `peer_host` None for a unix socket."""

    method: str
    path: str
    headers: dict[str, str]
    peer_host: str | None
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = field(default=())


def json_response(status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode(), JSON, headers)


def error_response(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return json_response(status, {"error": message}, headers)
