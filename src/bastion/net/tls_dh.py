"""The RFC 7919 ffdhe2048 group for the DHE-RSA suites of Mozilla's "intermediate" profile.

Python's `ssl` can only load DH parameters from a PEM file (`SSLContext.load_dh_params`), so
the group is computed from its definition in RFC 7919 (appendix A.1) rather than pasted:

    p = 2^2048 - 2^1984 + (floor(2^1918 * e) + 560316) * 2^64 - 1,  g = 2

with e's bits from exact integer arithmetic (a lower and an upper bound with guard bits that
must agree), then checked against facts known from the RFC before anything uses it: the
leading and trailing 64 bits, and p and (p - 1) / 2 passing a Miller-Rabin test (a safe
prime). The computation and the check take about 70 ms (two 2048-bit modular powers), once
per process; the PEM is cached, and each context gets it through a private temporary file
that is removed as soon as OpenSSL has read it.

The PEM is PKCS #3 ("DH PARAMETERS"), encoded here (two DER integers); OpenSSL 3 recognises
the prime as its named group ffdhe2048.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
import tempfile
from collections.abc import Sequence

FFDHE2048_BITS = 2048
FFDHE2048_GENERATOR = 2
_E_BITS = 1918  # floor(2^1918 * e) is the 1920-bit middle of the prime
_OFFSET = 560316  # the smallest offset making p a safe prime (RFC 7919, A.1)
_GUARD_BITS = 64
# Known facts of the RFC's prime, to check the computation against.
KNOWN_LEADING_HEX = "FFFFFFFFFFFFFFFFADF85458A2BB4A9A"
KNOWN_TRAILING_HEX = "FFFFFFFFFFFFFFFF"
_WITNESSES = (2,)  # Miller-Rabin bases: a check of the computation, not a primality search


def floor_e_scaled(bits: int, guard: int = _GUARD_BITS) -> int:
    """floor(2^bits * e), exactly: e = sum(1/k!) summed with `guard` extra bits.

    Each term floor(2^(bits+guard) / k!) is exact, so the sum is a lower bound at most
    one unit per term (plus a tail under 2) below the true value; both bounds must give the
    same result once the guard bits are dropped, else more guard bits are needed.
    """
    scale = bits + guard
    term, total, k = 1 << scale, 0, 0
    while term:
        total += term
        k += 1
        term //= k  # floor(floor(x) / k) == floor(x / k): term is floor(2^scale / k!)
    # Terms 0..k-1 each lost under 1; the terms from k on are each under 1 and sum under 2.
    lower, upper = total, total + k + 2
    if lower >> guard != upper >> guard:
        raise ArithmeticError(f"{guard} guard bits do not settle floor(2^{bits} * e)")
    return lower >> guard


def ffdhe2048_prime() -> int:
    """The ffdhe2048 prime from its definition (RFC 7919, appendix A.1)."""
    middle = floor_e_scaled(_E_BITS) + _OFFSET
    return (1 << FFDHE2048_BITS) - (1 << 1984) + middle * (1 << 64) - 1


def is_probable_prime(n: int, witnesses: Sequence[int] = _WITNESSES) -> bool:
    """Miller-Rabin with the given bases (n odd, above every base)."""
    if n < 3 or n % 2 == 0:
        return n == 2
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in witnesses:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def check_ffdhe2048(p: int) -> None:
    """Raise RuntimeError unless `p` has the known facts of the RFC 7919 ffdhe2048 prime."""
    digits = f"{p:X}"
    problems = [
        f"is {p.bit_length()} bits" if p.bit_length() != FFDHE2048_BITS else "",
        "leading bits differ" if not digits.startswith(KNOWN_LEADING_HEX) else "",
        "trailing bits differ" if not digits.endswith(KNOWN_TRAILING_HEX) else "",
        "fails Miller-Rabin" if not is_probable_prime(p) else "",
        "(p - 1) / 2 fails Miller-Rabin" if not is_probable_prime((p - 1) // 2) else "",
    ]
    found = [problem for problem in problems if problem]
    if found:
        raise RuntimeError(f"computed ffdhe2048 prime is wrong: {', '.join(found)}")


@functools.cache
def ffdhe2048_pem() -> bytes:
    """The checked ffdhe2048 parameters as PEM (computed once per process)."""
    p = ffdhe2048_prime()
    check_ffdhe2048(p)
    return pkcs3_pem(p, FFDHE2048_GENERATOR)


def pkcs3_pem(prime: int, generator: int) -> bytes:
    """PKCS #3 DH parameters, `SEQUENCE { INTEGER p, INTEGER g }` in DER, as PEM.

    Written here rather than by `cryptography`, which deprecates finite-field DH; the
    encoding is two DER integers."""
    body = _der_integer(prime) + _der_integer(generator)
    der = b"\x30" + _der_length(len(body)) + body
    text = base64.b64encode(der)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        b"-----BEGIN DH PARAMETERS-----\n" + b"\n".join(lines) + b"\n-----END DH PARAMETERS-----\n"
    )


def _der_integer(value: int) -> bytes:
    content = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0: positive
    return b"\x02" + _der_length(len(content)) + content


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def load_ffdhe2048(context: ssl.SSLContext) -> None:
    """Give a server context the ffdhe2048 group for its DHE suites."""
    descriptor, name = tempfile.mkstemp(prefix="bastion-ffdhe2048-", suffix=".pem")  # 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(ffdhe2048_pem())
        context.load_dh_params(name)
    finally:
        os.unlink(name)
