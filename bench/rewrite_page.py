"""The page and the origin of bench/rewrite_cost.py.

`page(internal)`: a deterministic ~1 MB HTML page written by an app that believes it lives at
`internal` (host:port): links to itself, root-relative links, images with srcset, inline
scripts with JSON-escaped URLs, links to a CDN, paragraphs of words.

`python bench/rewrite_page.py --port N`: an origin on 127.0.0.1:N serving `/page` (the page,
at once), `/page.gz` (gzip 6, `Content-Encoding: gzip`), and `/slow`, `/slow.gz` (the same
bodies in SLICES writes, SLICE_PAUSE apart); keep-alive, answers in order. It knows nothing of
bastion.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import random
import sys

SLICES, SLICE_PAUSE = 16, 0.020  # /slow: the page in 16 writes, 20 ms apart
_VOCABULARY = """order invoice customer shipping address total amount status pending delivered
returned product quantity price discount tax warehouse carrier tracking number date account
payment refund note priority region supplier catalogue item stock reorder level"""
WORDS = _VOCABULARY.split()


def page(internal: str, size: int = 1 << 20, seed: int = 5) -> bytes:
    """A ~`size` HTML page whose app believes it lives at `internal` (host:port)."""
    rnd = random.Random(seed)
    parts = [
        b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Orders</title>\n'
        b'<link rel="stylesheet" href="/static/site.css">\n'
        b"<style>.logo{background:url(/static/logo.png)}</style></head>\n<body>\n"
    ]
    total, n = len(parts[0]), 0
    while total < size:
        n += 1
        r = rnd.random()
        if r < 0.0625:
            line = f'<li><a href="http://{internal}/orders/{n}">Order {n}</a></li>\n'
        elif r < 0.1875:
            line = f'<li><a href="/orders/{n}?tab=items" class="order">Order {n}</a></li>\n'
        elif r < 0.25:
            line = (
                f'<img src="/img/{n}.jpg" srcset="/img/{n}.jpg 1x, /img/{n}@2x.jpg 2x"'
                f' alt="picture {n}" width="160" height="120">\n'
            )
        elif r < 0.30:
            line = (
                f'<script>window.cfg = {{"api": "http:\\/\\/{internal}\\/api\\/{n}"}};</script>\n'
            )
        elif r < 0.45:
            line = f'<a href="https://cdn.example.net/docs/{n}.pdf" rel="noopener">Manual {n}</a>\n'
        else:
            words = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 30)))
            line = f'<p class="note">{words.capitalize()} ({n}).</p>\n'
        data = line.encode()
        parts.append(data)
        total += len(data)
    parts.append(b"</body></html>\n")
    return b"".join(parts)


class OriginProtocol(asyncio.Protocol):
    """GET /page, /page.gz at once; /slow, /slow.gz in SLICES writes. Keep-alive, in order."""

    def __init__(self, bodies: dict[bytes, tuple[bytes, bytes]]) -> None:
        self.bodies = bodies
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer and self.transport is not None:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            slow = path.startswith(b"/slow")
            coding, body = self.bodies.get(path.replace(b"/slow", b"/page"), (b"", b""))
            status = b"200 OK" if body else b"404 Not Found"
            self.transport.write(
                b"HTTP/1.1 %s\r\nContent-Type: text/html; charset=utf-8\r\n%s"
                b"Content-Length: %d\r\n\r\n" % (status, coding, len(body))
            )
            if slow:
                asyncio.get_running_loop().create_task(self.trickle(body))
            else:
                self.transport.write(body)

    async def trickle(self, body: bytes) -> None:
        step = -(-len(body) // SLICES)
        for at in range(0, len(body), step):
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(body[at : at + step])
            await asyncio.sleep(SLICE_PAUSE)


async def serve_origin(port: int) -> None:
    body = page(f"127.0.0.1:{port}")
    bodies = {
        b"/page": (b"", body),
        b"/page.gz": (b"Content-Encoding: gzip\r\n", gzip.compress(body, 6)),
    }
    server = await asyncio.get_running_loop().create_server(
        lambda: OriginProtocol(bodies), "127.0.0.1", port
    )
    print("origin ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The origin of bench/rewrite_cost.py.")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    asyncio.run(serve_origin(parser.parse_args(argv).port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
