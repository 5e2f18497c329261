"""The key-exchange groups a TLS server context accepts: Mozilla "intermediate" allows X25519,
P-256 and P-384, where OpenSSL's default list also has X448, P-521 and (TLS 1.3) the ffdhe
groups.

Python 3.11 has no call for a group list: `SSLContext.set_ecdh_curve` sets exactly one group
under OpenSSL 3. Newer Pythons have `SSLContext.set_groups`, used when present. Otherwise
OpenSSL's `SSL_CTX_set1_groups_list` (a macro: `SSL_CTX_ctrl(ctx, SSL_CTRL_SET_GROUPS_LIST,
0, list)`) is called through ctypes on the context's `SSL_CTX *`:

- the symbols come from the `_ssl` extension module's own handle, so they are those of the
  libssl the interpreter uses (dlsym on a handle also searches the libraries it loaded);
- the pointer is the first field after PyObject_HEAD of CPython's PySSLContext, at
  `id(context) + object.__basicsize__`;
- before the first write, a throw-away context proves the layout: `SSL_CTX_get_options` on
  its pointer must follow `context.options` through a change; before each write the options
  must match again.

If a symbol is missing, the interpreter is not CPython or a check fails, a warning is logged
once and the context keeps OpenSSL's default groups. Nothing here raises.
"""

from __future__ import annotations

import _ssl
import ctypes
import functools
import logging
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

log = logging.getLogger(__name__)

PROFILE_GROUPS = ("X25519", "P-256", "P-384")
_SSL_CTRL_SET_GROUPS_LIST = 92  # from OpenSSL's ssl.h, stable since 1.1.0


@dataclass(frozen=True, slots=True)
class _LibSSL:
    """The three OpenSSL functions needed, bound from the interpreter's own libssl."""

    ctrl: Callable[[int, int, int, bytes], int]  # SSL_CTX_ctrl
    get_options: Callable[[int], int]  # SSL_CTX_get_options
    clear_error: Callable[[], None]  # ERR_clear_error


def set_groups(context: ssl.SSLContext, groups: Sequence[str] = PROFILE_GROUPS) -> bool:
    """Restrict `context` to `groups` (OpenSSL names); False when OpenSSL's defaults stay."""
    names = ":".join(groups)
    public = getattr(context, "set_groups", None)
    if callable(public):
        try:
            public(names)
        except (ssl.SSLError, ValueError, TypeError) as exc:
            log.warning("TLS groups %s not set (%s): OpenSSL's defaults stay", names, exc)
            return False
        return True
    libssl = _libssl()
    if libssl is None:
        return False  # _libssl() has said why, once
    pointer = _context_pointer(context)
    if pointer is None or libssl.get_options(pointer) != int(context.options):
        log.warning("TLS groups not set: a context's SSL_CTX pointer did not check out")
        return False
    if libssl.ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, names.encode("ascii")) != 1:
        libssl.clear_error()  # leave no stale error for the next `ssl` call to report
        log.warning("TLS groups %s refused by OpenSSL: its defaults stay", names)
        return False
    return True


def _context_pointer(context: ssl.SSLContext) -> int | None:
    """The `SSL_CTX *` inside a CPython `_ssl._SSLContext`, or None if it cannot be read."""
    if sys.implementation.name != "cpython" or not isinstance(context, _ssl._SSLContext):
        return None
    offset = object.__basicsize__  # the end of PyObject_HEAD
    if _ssl._SSLContext.__basicsize__ < offset + ctypes.sizeof(ctypes.c_void_p):
        return None
    pointer = ctypes.c_void_p.from_address(id(context) + offset).value
    return pointer or None


@functools.cache
def _libssl() -> _LibSSL | None:
    """The bound functions, once per process, after a probe context proved the layout."""
    try:
        library = ctypes.CDLL(_ssl.__file__)
        ctrl = library.SSL_CTX_ctrl
        get_options = library.SSL_CTX_get_options
        clear_error = library.ERR_clear_error
    except (OSError, AttributeError, TypeError) as exc:
        log.warning("TLS groups stay OpenSSL's defaults (X448, P-521 too): %s", exc)
        return None
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    ctrl.restype = ctypes.c_long
    get_options.argtypes = [ctypes.c_void_p]
    get_options.restype = ctypes.c_uint64
    clear_error.argtypes = []
    clear_error.restype = None
    libssl = _LibSSL(
        ctrl=cast("Callable[[int, int, int, bytes], int]", ctrl),
        get_options=cast("Callable[[int], int]", get_options),
        clear_error=cast("Callable[[], None]", clear_error),
    )
    if not _layout_holds(libssl):
        log.warning(
            "TLS groups stay OpenSSL's defaults (X448, P-521 too): this Python's SSLContext "
            "layout is not the one expected"
        )
        return None
    return libssl


def _layout_holds(libssl: _LibSSL) -> bool:
    """Whether the pointer of a probe context reads back its options before and after a
    change (two different values, so a stray match is ruled out)."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pointer = _context_pointer(probe)
    if pointer is None:
        return False
    before = libssl.get_options(pointer) == int(probe.options)
    probe.options ^= ssl.OP_NO_TICKET
    after = libssl.get_options(pointer) == int(probe.options)
    return before and after
