"""A shared secret for an application that has no authentication of its own.

Some internal applications trust whoever can reach them. Behind bastion, they can be made
to trust only bastion: the application (or a firewall rule, or a tiny check in its web
server) refuses requests without the right `X-Proxy-Secret`, and this hook adds it to every
request bastion sends. A client that sends the header itself has it replaced, so nobody can
present the secret but bastion; and if the application echoes request headers back (debug
pages do), the secret is taken out of its responses.

    [[site.route]]
    path = "/"
    upstream = "legacy"
    hooks = ["shared_secret:SharedSecret"]
    hook_options = { secret_file = "/etc/bastion/legacy.secret" }

Options: `secret_file` (required; an absolute path is best, a relative one is taken from
bastion's working directory), `header` (default `"X-Proxy-Secret"`). The file is read when
the configuration is loaded: a missing or empty file stops bastion from starting, and
`bastion check` says so. Rotate the secret by replacing the file and reloading (SIGHUP).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion.hooks import Hook, Request, Response


class SharedSecret(Hook):
    """Adds the secret header to every upstream request; a client's own copy is replaced."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.header: str = options.get("header", "X-Proxy-Secret")
        self.secret = _read_secret(options.get("secret_file"))

    def before_upstream(self, request: Request) -> None:
        # `set` replaces every field of that name: a spoofed one from the client goes.
        request.headers.set(self.header, self.secret)

    def on_response(self, request: Request, response: Response) -> None:
        response.headers.remove(self.header)


def _read_secret(path: object) -> bytes:
    if not isinstance(path, str) or not path:
        raise ValueError('the "secret_file" option is required: the file holding the secret')
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as error:
        raise ValueError(f'secret_file "{path}": {error.strerror or error}') from None
    if not secret:
        raise ValueError(f'secret_file "{path}" is empty')
    if any(byte < 0x21 or byte > 0x7E for byte in secret):
        raise ValueError(f'secret_file "{path}" must hold one line of visible ASCII')
    return secret
