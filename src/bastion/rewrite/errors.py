"""The one error of the rewriting package."""

from __future__ import annotations


class RewriteError(ValueError):
    """A body that cannot be rewritten: a corrupt or truncated compressed stream, or text
    that is not valid in the charset the response declares (UTF-16/32 only; other charsets
    keep undecodable bytes as they are). Raised from `feed` or `end`; the body is then
    unusable and the exchange must end."""
