"""A tiny authoritative DNS server over UDP on 127.0.0.1, answering from a mutable dict.

`records` maps `(name, type)` — name without the final dot, lowercase; type "A", "AAAA" or
"SRV" — to record texts in zone-file syntax (`"10 60 8080 app1.internal."` for SRV). A name
with no record of any type gets NXDOMAIN; a name with other types only, or an empty list, gets
an empty NOERROR answer. `mode` switches to SERVFAIL for every query, or to not answering at
all. Built on dnspython's message API, written for tests: no recursion, no TCP, no EDNS.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

HOST = "127.0.0.1"
TTL = 1

Mode = Literal["answer", "servfail", "silent"]


class DnsTestServer(asyncio.DatagramProtocol):
    """Async context manager; `port` is known once entered. Mutate `records`/`mode` any time."""

    def __init__(self, records: dict[tuple[str, str], list[str]] | None = None) -> None:
        self.records: dict[tuple[str, str], list[str]] = records if records is not None else {}
        self.mode: Mode = "answer"
        self.queries: list[tuple[str, str]] = []  # (name, type) as received
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> DnsTestServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(HOST, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # not DNS: drop it, as a real server would
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if self.mode == "silent" or self._transport is None:
            return
        self._transport.sendto(self._answer(query, name, rdtype).to_wire(), addr)

    def _answer(self, query: dns.message.Message, name: str, rdtype: str) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif not any(known == name for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif texts := self.records.get((name, rdtype)):
            response.answer.append(dns.rrset.from_text(name + ".", TTL, "IN", rdtype, *texts))
        return response
