"""Python hooks: user code in the request lifecycle. This package is their public API.

    from bastion.hooks import Hook, Reply, Request, Response, LogEntry

A hook subclasses `Hook` and overrides any of `on_request`, `before_upstream`,
`on_response`, `on_body_chunk` (with `wants_body`) and `on_log`; bastion loads it from a
`hooks` entry (`"package.module:Name"`) of a route or of `[server]`, with its options.
docs/hooks.md is the guide and the reference.

Inside: `hook.py` (Hook, Reply, LogEntry), `request.py` and `response.py` (the views a hook
gets), `fields.py` (header fields), `connection.py` (TLS session, client certificate),
`loading.py` (making instances), `invoke.py` (calling a hook in a phase; bastion's side).
This package must not know where in the core the phases are, nor what a failing hook
costs the request: bastion.filters.hooks decides both.
"""

from bastion.hooks.connection import ClientCertificate, TLSSession
from bastion.hooks.fields import HeaderFields
from bastion.hooks.hook import Hook, LogEntry, Reply
from bastion.hooks.request import Request
from bastion.hooks.response import Response

__all__ = [
    "ClientCertificate",
    "HeaderFields",
    "Hook",
    "LogEntry",
    "Reply",
    "Request",
    "Response",
    "TLSSession",
]
