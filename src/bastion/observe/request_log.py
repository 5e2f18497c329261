"""Turns each finished exchange into one access-log record.

The proxy core announces finished requests through the `ExchangeLog` port; this adapter reads
the request context and the exchange and writes the record. Nothing here runs unless the
access log is enabled.
"""

from __future__ import annotations

import time

from bastion.http.events import Headers
from bastion.http.headers import header_value
from bastion.observe.access_log import AccessLog, AccessRecord
from bastion.proxy.exchange import Exchange


class AccessLogger:
    """The `ExchangeLog` that writes the access log."""

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def log_exchange(self, ex: Exchange) -> None:
        ctx = ex.ctx
        now = time.monotonic()
        record = AccessRecord()
        head = ctx.head
        record.start_time = time.time() - (now - ctx.started)
        record.client_ip = ctx.client_ip
        record.method = head.method.decode("latin-1")
        record.target = head.target.decode("latin-1")
        record.http_version = head.http_version.decode()
        record.host = head.host.decode("latin-1") or "-"
        record.status = ex.status
        record.bytes_in = head.head_size + ex.received
        record.bytes_out = ex.bytes_out
        record.referer = _header_text(head.headers, b"referer")
        record.user_agent = _header_text(head.headers, b"user-agent")
        record.request_id = ctx.request_id
        route = ctx.route
        if route is not None and route.routed:
            record.site = route.site
            record.route = route.label
        if ctx.upstream is not None:
            record.upstream = ctx.upstream.name
        if ctx.server is not None:
            record.upstream_server = ctx.server.label
        if ex.response_head is not None:
            record.upstream_status = ex.response_head.status
        record.duration = now - ctx.started
        record.connect_time = ex.connect_time
        if ex.first_byte_at is not None:
            record.first_byte_time = ex.first_byte_at - ctx.started
        record.flag = ctx.flag
        tls = ctx.client.tls
        if tls is not None:
            record.tls_version = tls.version
            record.tls_cipher = tls.cipher
            record.alpn = tls.alpn
        self.access_log.write(record)


def _header_text(headers: Headers, name: bytes) -> str:
    value = header_value(headers, name)
    return value.decode("latin-1") if value is not None else "-"
