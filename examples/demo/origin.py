"""A tiny origin for the demo: answers every request with what it received.

It plays the application behind the proxy, so a newcomer sees exactly which headers bastion
sends on (X-Forwarded-For, Forwarded, X-Request-Id, Via...). Standard library only.
"""

from __future__ import annotations

import asyncio


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            request_line, header_lines = lines[0], [line for line in lines[1:] if line]
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            body = "\n".join(
                ["The demo origin received:", f"  {request_line}"]
                + [f"  {line}" for line in header_lines]
                + [""]
            ).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Server: demo-origin\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def start_origin(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    return await asyncio.start_server(_handle, host, port)
