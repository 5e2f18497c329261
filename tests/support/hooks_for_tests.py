"""Hooks the hook tests load by name: `"tests.support.hooks_for_tests:Name"`.

Each exercises one capability of the hook API and shows its result where a test over
sockets can see it: in a header the origin echoes back, a response header, a rewritten
body, or a JSON-lines file (`log_file` option) for what happens after the response. Options
name what to do, so one class serves several tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion.hooks import Hook, LogEntry, Reply, Request, Response


class ReportClient(Hook):
    """Tells the origin (request headers `x-hook-*`) who the client is and where the request
    goes, as seen in on_request."""

    def on_request(self, request: Request) -> None:
        facts = {
            "client-ip": request.client_ip,
            "client-port": str(request.client_port),
            "scheme": request.scheme,
            "method": request.method,
            "http-version": request.http_version,
            "host": request.host,
            "path": request.path,
            "query": request.query,
            "site": str(request.site),
            "route": str(request.route),
            "upstream": str(request.upstream),
            "request-id": request.request_id,
        }
        tls = request.tls
        if tls is not None:
            facts["tls"] = f"{tls.version} sni={tls.server_name}"
        certificate = request.client_certificate
        if certificate is not None:
            facts["cert-subject"] = certificate.subject
            facts["cert-fingerprint"] = certificate.fingerprint
        for name, value in facts.items():
            request.headers.set(f"x-hook-{name}", value)


class EditRequest(Hook):
    """on_request: `set` (table) and `remove` (list) request headers; before_upstream:
    `origin_set` / `origin_remove`, on the list the origin gets."""

    def on_request(self, request: Request) -> None:
        for name, value in self.options.get("set", {}).items():
            request.headers.set(name, value)
        for name in self.options.get("remove", ()):
            request.headers.remove(name)

    def before_upstream(self, request: Request) -> None:
        seen = ",".join(name for name, _ in request.headers)
        request.headers.set("x-hook-origin-saw", seen)
        for name, value in self.options.get("origin_set", {}).items():
            request.headers.set(name, value)
        for name in self.options.get("origin_remove", ()):
            request.headers.remove(name)


class EditResponse(Hook):
    """on_response: `set` (table) and `remove` (list) response headers; adds
    `x-hook-status` with the status it saw."""

    def on_response(self, request: Request, response: Response) -> None:
        response.headers.set("x-hook-status", str(response.status))
        for name, value in self.options.get("set", {}).items():
            response.headers.set(name, value)
        for name in self.options.get("remove", ()):
            response.headers.remove(name)


class RewritePath(Hook):
    """Paths starting with `from` start with `to` instead; `query` replaces the query."""

    def on_request(self, request: Request) -> None:
        prefix = self.options["from"]
        if request.path.startswith(prefix):
            request.path = self.options["to"] + request.path[len(prefix) :]
            if "query" in self.options:
                request.query = self.options["query"]


class RerouteByHeader(Hook):
    """Server hook: `X-Go-Host` changes the host and `X-Go-Path` the path before routing."""

    def on_request(self, request: Request) -> None:
        host = request.headers.get("x-go-host")
        if host is not None:
            request.host = host
        path = request.headers.get("x-go-path")
        if path is not None:
            request.path = path


class ChooseUpstream(Hook):
    """`X-Upstream: NAME` sends the request to that upstream."""

    def on_request(self, request: Request) -> None:
        name = request.headers.get("x-upstream")
        if name is not None:
            request.upstream = name


class AnswerDirectly(Hook):
    """Requests for `path` get a Reply: `status`, a str body naming the client, and a
    header."""

    def on_request(self, request: Request) -> Reply | None:
        if request.path != self.options["path"]:
            return None
        body = f"answered by a hook for {request.client_ip}\n"
        return Reply(self.options.get("status", 200), body, {"x-hook": "reply"})


class Uppercase(Hook):
    """Text bodies uppercased as they stream; others untouched (wants_body False)."""

    def wants_body(self, request: Request, response: Response) -> bool:
        return (response.headers.get("content-type") or "").startswith("text/")

    def on_body_chunk(
        self, request: Request, response: Response, chunk: bytes, last: bool
    ) -> bytes:
        return chunk.upper() + (b"[END]" if last else b"")


class HoldBack(Hook):
    """Holds the whole body back until the end, then sends its length: exercises b"" from
    on_body_chunk and the final `last` call."""

    def on_request(self, request: Request) -> None:
        request.state["held"] = 0

    def on_body_chunk(
        self, request: Request, response: Response, chunk: bytes, last: bool
    ) -> bytes:
        request.state["held"] += len(chunk)
        return f"held {request.state['held']} bytes\n".encode() if last else b""


class RecordLog(Hook):
    """Appends one JSON line per request to the `log_file` option: the LogEntry, plus the
    `state` on_request left."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.path = Path(options["log_file"])

    def on_request(self, request: Request) -> None:
        request.state["seen_path"] = request.path

    def on_log(self, request: Request, entry: LogEntry) -> None:
        record = {
            "request_id": entry.request_id,
            "status": entry.status,
            "bytes_out": entry.bytes_out,
            "duration": entry.duration,
            "upstream": entry.upstream,
            "server": entry.server,
            "flag": entry.flag,
            "state": request.state,
        }
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


class Fail(Hook):
    """Raises RuntimeError in the method named by the `in` option, for requests whose path
    starts with `path` (default: every request), once it was called `after` times for the
    request (default 0); on_body_chunk lets the first `skip` pieces through."""

    def _maybe_fail(self, request: Request, method: str) -> None:
        if self.options["in"] != method or not request.path.startswith(
            self.options.get("path", "/")
        ):
            return
        calls = request.state[f"calls {method}"] = request.state.get(f"calls {method}", 0) + 1
        if calls > self.options.get("after", 0):
            raise RuntimeError(f"boom in {method}")

    def on_request(self, request: Request) -> None:
        self._maybe_fail(request, "on_request")

    def before_upstream(self, request: Request) -> None:
        self._maybe_fail(request, "before_upstream")

    def on_response(self, request: Request, response: Response) -> None:
        self._maybe_fail(request, "on_response")

    def on_body_chunk(
        self, request: Request, response: Response, chunk: bytes, last: bool
    ) -> bytes:
        passed = request.state.get("pieces", 0)
        request.state["pieces"] = passed + 1
        if passed >= self.options.get("skip", 0):
            self._maybe_fail(request, "on_body_chunk")
        return chunk

    def on_log(self, request: Request, entry: LogEntry) -> None:
        self._maybe_fail(request, "on_log")


class Misuse(Hook):
    """Does what the API refuses, chosen by the `do` option: editing a framing header,
    naming an unknown upstream, injecting CR/LF, returning a non-Reply."""

    def on_request(self, request: Request) -> Any:
        action = self.options["do"]
        if action == "framing":
            request.headers.set("content-length", "0")
        elif action == "unknown_upstream":
            request.upstream = "nowhere"
        elif action == "crlf":
            request.headers.set("x-evil", "a\r\nx-injected: yes")
        elif action == "not_a_reply":
            return "not a reply"
        return None


class NeedsOption(Hook):
    """Refuses to start without the `required` option."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        if "required" not in options:
            raise ValueError('the "required" option is missing')


def make_tagger(options: Mapping[str, Any]) -> Hook:
    """A factory function instead of a class: its hook tags responses with `tag`."""
    return EditResponse({"set": {"x-tag": options["tag"]}})


class NotAHook:
    """A class that is no Hook: loading it is a configuration error."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options
