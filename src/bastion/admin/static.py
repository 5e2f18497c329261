"""The dashboard's files (`static/`), read once from the installed package and served as is.

Only the files listed in `_FILES` are served, each at a fixed path; the page loads nothing
from elsewhere (its Content-Security-Policy says so). No sockets here.
"""

from __future__ import annotations

from importlib.resources import files

from bastion.admin.messages import Response

# URL path -> (file in static/, content type)
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class StaticFiles:
    """The dashboard, in memory."""

    def __init__(self) -> None:
        folder = files("bastion.admin") / "static"
        self._content = {
            path: (folder.joinpath(name).read_bytes(), kind)
            for path, (name, kind) in _FILES.items()
        }

    def __contains__(self, path: str) -> bool:
        return path in self._content

    def response(self, path: str) -> Response:
        body, kind = self._content[path]
        return Response(200, body, kind, (("Content-Security-Policy", _POLICY),))
