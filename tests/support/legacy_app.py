"""A "legacy" web application that believes it lives at its own internal address.

`LegacyApp` listens on 127.0.0.1 (port 0) and writes every URL as a badly behaved app
does: absolute ones with its own `http://127.0.0.1:PORT` (and a second internal name,
`http://intranet-app:8080`, as apps configured with a "base URL" do), protocol-relative ones,
and root-relative ones that ignore any mount prefix. Cookies name its internal domain and
`Path=/`. Pages need the session cookie (403 without it), so a client that loses cookies
cannot get far. Text responses are gzip- or br-compressed when the client accepts it.

Site map (paths as the app sees them):
  /                302 to http://127.0.0.1:PORT/login, or to /home with a session
  /login           sets `session` (Domain=127.0.0.1) and `theme` (Domain=.intranet-app,
                   Expires) cookies, Path=/; 302 to /home (root-relative)
  /home            HTML (gzip): absolute, protocol-relative, root-relative links, img
                   src/srcset, a form action, a stylesheet, a script on the second name;
                   Link (preload) and Content-Location headers
  /about           HTML (plain) linking back with absolute URLs; meta refresh
  /contact         HTML (br)
  /products        HTML, links to /products/1; /products/1 has a Refresh header
  /relative/page   HTML reached by a relative link
  /search          the form's target (GET)
  /static/site.css CSS (gzip): url(/img/x.png), url(http://127.0.0.1:PORT/img/bg.png)
  /static/app.js   JavaScript (gzip) with an internal absolute URL string
  /api/items       JSON with `http:\\/\\/` escaped internal URLs
  /img/*.png       PNG bytes that happen to contain the internal URL (must pass untouched)

Test endpoints (no session needed), under /t/:
  /t/respond?status=N&h=Name:Value...   answers with exactly these headers and `body`
  /t/page?coding=gzip|br|identity       the /home HTML, so bodies can be compared
  /t/image                              a PNG (image/png) with internal URLs inside
  /t/split                              HTML whose internal URL is cut in two writes
  /t/gate?coding=gzip|identity          HTML part 1, then waits for `app.gate` to be set
  /t/corrupt                            gzip-encoded HTML that turns into garbage
  /t/mislabelled                        plain HTML that claims to be gzip-encoded
What it must not know: anything of bastion.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import brotli
import h11

HOST = "127.0.0.1"
SECOND_NAME = "http://intranet-app:8080"
SESSION = "s3cr3t-value"
# 8-byte PNG signature, then bytes that look like an internal URL: binary must pass as is.
PNG_STUB = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"http://%s:%d/img/x.png\x00\xff\xfe"


@dataclass
class Reply:
    """What a page answers: status, headers, body pieces written with a pause between."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    coding: str = "identity"  # compress `body` with this when the client accepts it
    pieces: Sequence[bytes] = ()  # instead of `body`: written one by one (already encoded)
    gate: bool = False  # wait for LegacyApp.gate between the pieces


@dataclass
class LegacyRequest:
    method: str
    target: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str] = field(default_factory=dict)

    def param(self, name: str, default: str = "") -> str:
        return next((value for key, value in self.query if key == name), default)

    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for pair in self.headers.get("cookie", "").split(";"):
            name, _, value = pair.strip().partition("=")
            if name:
                jar[name] = value
        return jar

    def accepts(self, coding: str) -> bool:
        offered = self.headers.get("accept-encoding", "")
        return coding in [item.split(";")[0].strip() for item in offered.split(",")]


Page = Callable[["LegacyApp", LegacyRequest], Reply]


class LegacyApp:
    """The legacy origin. `base` is what it thinks its URL is; `reached` counts 2xx/3xx
    answers by path; `gate` releases /t/gate's second part."""

    def __init__(self) -> None:
        self.port = 0
        self.reached: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # 403 for want of the session cookie
        self.requests: list[LegacyRequest] = []
        self.gate = asyncio.Event()
        self.errors: list[BaseException] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.address}"

    @property
    def internal_marks(self) -> tuple[str, ...]:
        """Text that must never reach a client of the proxy."""
        return (self.address, "intranet-app", "127.0.0.1")

    def png(self) -> bytes:
        return PNG_STUB % (HOST.encode(), self.port)

    async def __aenter__(self) -> LegacyApp:
        self._server = await asyncio.start_server(self._on_connect, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next_event(connection, reader)
                if not isinstance(event, h11.Request):
                    return
                while not isinstance(await _next_event(connection, reader), h11.EndOfMessage):
                    pass
                request = _request(event)
                self.requests.append(request)
                await self._answer(connection, writer, request)
                if connection.our_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        except Exception as failure:
            self.errors.append(failure)
            raise
        finally:
            writer.close()

    async def _answer(
        self, connection: h11.Connection, writer: asyncio.StreamWriter, request: LegacyRequest
    ) -> None:
        page = _page_for(request.path)
        if page is None:
            reply = Reply(404, [], b"not found\n", "text/plain")
        elif request.path.startswith(("/t/", "/login")) or request.path == "/":
            reply = page(self, request)
        elif request.cookies().get("session") != SESSION:
            self.refused[request.path] += 1
            reply = Reply(403, [], b"no session\n", "text/plain")
        else:
            reply = page(self, request)
        if reply.status < 400:
            self.reached[request.path] += 1
        await self._send(connection, writer, request, reply)

    async def _send(
        self,
        connection: h11.Connection,
        writer: asyncio.StreamWriter,
        request: LegacyRequest,
        reply: Reply,
    ) -> None:
        headers = list(reply.headers)
        pieces = list(reply.pieces)
        if not pieces and reply.status not in (204, 304):
            body = reply.body
            coding = reply.coding if request.accepts(reply.coding) else "identity"
            if coding != "identity":
                body = compress(body, coding)
                headers += [("content-encoding", coding), ("vary", "accept-encoding")]
            headers.append(("content-length", str(len(body))))
            pieces = [body]
        if reply.status not in (204, 304):
            headers.insert(0, ("content-type", reply.content_type))
        writer.write(connection.send(h11.Response(status_code=reply.status, headers=headers)))
        for index, piece in enumerate(pieces):
            if index:
                if reply.gate:
                    await asyncio.wait_for(self.gate.wait(), 10)
                else:
                    await asyncio.sleep(0.2)
            if request.method != "HEAD" and piece:
                writer.write(connection.send(h11.Data(data=piece)))
            await writer.drain()
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()


async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader) -> object:
    while (event := connection.next_event()) is h11.NEED_DATA:
        connection.receive_data(await reader.read(65536))
    return event


def _request(event: h11.Request) -> LegacyRequest:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    return LegacyRequest(
        method=event.method.decode("ascii"),
        target=target,
        path=parts.path,
        query=parse_qsl(parts.query, keep_blank_values=True),
        headers={name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers},
    )


def compress(body: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(body)
    if coding == "br":
        return bytes(brotli.compress(body))
    raise ValueError(coding)


def gzip_pieces(*parts: bytes) -> list[bytes]:
    """`parts` gzip-compressed as one stream, each piece flushed so it decodes on its own."""
    compressor = zlib.compressobj(wbits=31)
    pieces = [compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH) for part in parts]
    pieces[-1] += compressor.flush()
    return pieces


# -- pages ----------------------------------------------------------------------------------


def _root(app: LegacyApp, request: LegacyRequest) -> Reply:
    if request.cookies().get("session") == SESSION:
        return Reply(302, [("location", "/home")], b"", "text/plain")
    return Reply(302, [("location", f"{app.base}/login")], b"", "text/plain")


def _login(app: LegacyApp, request: LegacyRequest) -> Reply:
    cookies = [
        ("set-cookie", f"session={SESSION}; Domain=127.0.0.1; Path=/; HttpOnly; SameSite=Lax"),
        (
            "set-cookie",
            "theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Domain=.intranet-app; Path=/",
        ),
    ]
    return Reply(302, [*cookies, ("location", "/home")], b"", "text/plain")


def home_html(app: LegacyApp) -> bytes:
    base, second = app.base, SECOND_NAME
    return f"""<!doctype html>
<html><head><title>Home</title>
<link rel="stylesheet" href="/static/site.css">
<script src="{second}/static/app.js"></script>
</head><body>
<h1>Welcome</h1>
<a href="{base}/about">About (absolute)</a>
<a href="//{app.address}/contact">Contact (protocol-relative)</a>
<a href='/products?page=1'>Products (root-relative)</a>
<a href="relative/page">Relative</a>
<a href="http://example.org/elsewhere">Elsewhere</a>
<img src="/img/logo.png" srcset="/img/logo.png 1x, {base}/img/logo@2x.png 2x" alt="">
<form action="/search" method="get"><input name="q"></form>
<p>Write to us at {base}/contact or see {second}/about.</p>
</body></html>
""".encode()


def _home(app: LegacyApp, request: LegacyRequest) -> Reply:
    headers = [
        (
            "link",
            f'<{app.base}/static/site.css>; rel="preload"; as="style", '
            '</static/app.js>; rel=preload; as="script"',
        ),
        ("content-location", f"{app.base}/home"),
        ("etag", '"home-v1"'),
    ]
    return Reply(200, headers, home_html(app), coding="gzip")


def _about(app: LegacyApp, request: LegacyRequest) -> Reply:
    body = f"""<html><head>
<meta http-equiv="refresh" content="600; url={app.base}/home">
</head><body><a href="{app.base}/home">Home</a> <a href="{SECOND_NAME}/api/items">API</a>
<a href="{app.base}/products/1#top">First product</a></body></html>
""".encode()
    return Reply(200, [], body)


def _contact(app: LegacyApp, request: LegacyRequest) -> Reply:
    body = f'<html><body><a href="{app.base}/home">Back</a></body></html>\n'.encode()
    return Reply(200, [], body, coding="br")


def _products(app: LegacyApp, request: LegacyRequest) -> Reply:
    body = b'<html><body><a href="/products/1">One</a> <a href="/home">Home</a></body></html>\n'
    return Reply(200, [], body)


def _product(app: LegacyApp, request: LegacyRequest) -> Reply:
    body = b"<html><body><p id=top>Product one</p></body></html>\n"
    return Reply(200, [("refresh", f"30;URL='{app.base}/products'")], body)


def _relative(app: LegacyApp, request: LegacyRequest) -> Reply:
    return Reply(200, [], f'<html><a href="{app.base}/home">Home</a></html>'.encode())


def _search(app: LegacyApp, request: LegacyRequest) -> Reply:
    found = f'<html><a href="{app.base}/products/1">Result for {request.param("q")}</a></html>'
    return Reply(200, [], found.encode())


def site_css(app: LegacyApp) -> bytes:
    return (
        b"body { background: url(" + app.base.encode() + b"/img/bg.png) }\n"
        b'h1 { background-image: url("/img/x.png") }\n'
    )


def _css(app: LegacyApp, request: LegacyRequest) -> Reply:
    return Reply(200, [], site_css(app), "text/css", coding="gzip")


def _js(app: LegacyApp, request: LegacyRequest) -> Reply:
    body = f'var api = "{app.base}/api/items";\nfetch(api).then(r => r.json());\n'
    return Reply(200, [], body.encode(), "application/javascript", coding="gzip")


def api_json(app: LegacyApp) -> bytes:
    escaped = app.base.replace("/", "\\/")
    return (
        f'{{"self": "{escaped}\\/api\\/items", "next": "{escaped}\\/api\\/items?page=2", '
        f'"home": "{escaped}\\/home"}}'
    ).encode()


def _api(app: LegacyApp, request: LegacyRequest) -> Reply:
    return Reply(200, [], api_json(app), "application/json")


def _image(app: LegacyApp, request: LegacyRequest) -> Reply:
    return Reply(200, [], app.png(), "image/png")


def _respond(app: LegacyApp, request: LegacyRequest) -> Reply:
    headers = [
        (name.strip().lower(), value.strip())
        for key, item in request.query
        if key == "h"
        for name, _, value in [item.partition(":")]
    ]
    content_type = next((value for name, value in headers if name == "content-type"), None)
    headers = [(name, value) for name, value in headers if name != "content-type"]
    status = int(request.param("status", "200"))
    body = request.param("body").encode()
    return Reply(status, headers, body, content_type or "text/plain")


def _test_page(app: LegacyApp, request: LegacyRequest) -> Reply:
    return Reply(200, [("etag", '"page-v1"')], home_html(app), coding=request.param("coding"))


def _split(app: LegacyApp, request: LegacyRequest) -> Reply:
    url = f"{app.base}/products/1".encode()
    half = len(b'<a href="') + len(url) // 2
    body = b'<a href="' + url + b'">split</a>\n'
    return Reply(200, [], pieces=[body[:half], body[half:]])


def gate_parts(app: LegacyApp) -> tuple[bytes, bytes]:
    first = f'<html><a href="{app.base}/one">one</a>\n'.encode() + b" " * 16000 + b"\n"
    second = f'<a href="{app.base}/two">two</a></html>\n'.encode()
    return first, second


def _gate(app: LegacyApp, request: LegacyRequest) -> Reply:
    first, second = gate_parts(app)
    if request.param("coding") == "gzip":
        return Reply(
            200, [("content-encoding", "gzip")], pieces=gzip_pieces(first, second), gate=True
        )
    return Reply(200, [], pieces=[first, second], gate=True)


def _corrupt(app: LegacyApp, request: LegacyRequest) -> Reply:
    good = gzip_pieces(f'<a href="{app.base}/x">x</a>'.encode() + b"." * 4000, b"more")[0]
    garbage = b"\x00this is not deflate data\xff" * 64
    headers = [("content-encoding", "gzip"), ("content-length", str(len(good + garbage)))]
    return Reply(200, headers, pieces=[good, garbage])


def _mislabelled(app: LegacyApp, request: LegacyRequest) -> Reply:
    body = f'<a href="{app.base}/x">x</a>'.encode()
    headers = [("content-encoding", "gzip"), ("content-length", str(len(body)))]
    return Reply(200, headers, pieces=[body])


_PAGES: dict[str, Page] = {
    "/": _root,
    "/login": _login,
    "/home": _home,
    "/about": _about,
    "/contact": _contact,
    "/products": _products,
    "/products/1": _product,
    "/relative/page": _relative,
    "/search": _search,
    "/static/site.css": _css,
    "/static/app.js": _js,
    "/api/items": _api,
    "/t/respond": _respond,
    "/t/page": _test_page,
    "/t/image": _image,
    "/t/split": _split,
    "/t/gate": _gate,
    "/t/corrupt": _corrupt,
    "/t/mislabelled": _mislabelled,
}

SITE_PAGES = frozenset(path for path in _PAGES if not path.startswith("/t/")) | {
    "/img/logo.png",
    "/img/logo@2x.png",
    "/img/x.png",
    "/img/bg.png",
}


def _page_for(path: str) -> Page | None:
    if path.startswith("/img/") and path.endswith(".png"):
        return _image
    return _PAGES.get(path)
