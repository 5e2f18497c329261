"""The regular expressions that find what a body rewrite changes, compiled once per set of
internal authorities and mount prefix.

Two kinds of match:

- `abs`: an absolute (`http://host:port`), protocol-relative (`//host:port`) or
  JSON-escaped (`http:\\/\\/host:port`, `\\/\\/host:port`) URL naming an internal authority,
  in every kind of body. The authority must end there (`http://app:80800/` and
  `http://app.evil.com/` do not name `app`); a path already under the prefix is captured as
  `under` so it is not prefixed twice.
- under a prefix only, the start of a root-relative URL (`/x`, never `//x` nor `/\\x`, never a
  path already under the prefix) where a browser will fetch it: HTML URL attributes, `srcset`
  candidates, `<meta http-equiv=refresh>`, CSS `url()` and `@import`. The rewriter inserts
  the prefix at the end of such a match.

An HTML body is scanned in modes, as a browser tokenizes it: in `<style>` only CSS rules
apply, in `<script>` and comments only `abs` (script text is not HTML attributes).

Speed: every top-level pattern starts with one byte from a small set of case-less bytes
(`[hH/\\=<]` for HTML), so `re` skips to candidates in C; what follows is checked with
lookbehinds and scoped `(?i:...)`. Streaming: every top-level pattern examines at most
`Grammar.reach` bytes from where it starts and `LOOKBEHIND` before, and none uses `^`, `$` or
`\\b`: that is what lets the scanner hold back only a bounded tail and still decide exactly as
on the whole body.

Compiling costs milliseconds; `grammar()` memoizes this pure function of (authorities,
prefix) in small bounded caches (as `re` itself caches patterns), so the UrlMap a filter builds
per request costs nothing here. The caches hold compiled patterns only, no request state.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

VALUE_MAX = 2048  # longest srcset / style value, <meta> / <script> / <style> tag looked into
LOOKBEHIND = 16  # bytes before a match start that a pattern may look at

# Bytes that continue a path segment: `/legacy` followed by one of these is not under `/legacy`.
SEGMENT_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&*+,;=:@"

_SP = rb"\s{0,16}"
_SEGMENT = rb"[A-Za-z0-9\-._~%!$&*+,;=:@]"
_HOST_GOES_ON = rb"(?![A-Za-z0-9\-._~%:@\[\]])"
_ROOT_RELATIVE = rb"(?=/(?![/\\]))"
_URL_ATTRS: tuple[bytes, ...] = (b"href", b"src", b"action", b"formaction", b"poster", b"data")
_URL_ATTRS += (b"cite", b"background", b"longdesc", b"manifest", b"xlink:href")
_UNQUOTED = rb"[^\s\"'<>`=]"


class Mode(enum.IntEnum):
    """Which patterns apply at the current position of a body."""

    PLAIN = 0  # JavaScript, JSON, XML, and every type when there is no prefix: `abs` only
    HTML = 1
    HTML_SCRIPT = 2
    HTML_STYLE = 3
    HTML_COMMENT = 4
    CSS = 5


MAX_ABS_OFFSET = len(b"https:\\/\\/")  # from an `abs` match's start to its authority, at most
_ABS_FIRST = b"hH/\\\\"


@dataclass(frozen=True, slots=True)
class PrefixRules:
    """The compiled prefix rules (they do not depend on the authorities)."""

    structure: tuple[tuple[re.Pattern[bytes], ...], ...]  # by Mode: top-level rules but `abs`
    srcset_value: re.Pattern[bytes]  # inside a srcset value: cand
    style_value: re.Pattern[bytes]  # inside a style attribute value: urlfn
    tag: re.Pattern[bytes]  # inside a <script>/<style> start tag: attr | srcset | style
    refresh_tag: re.Pattern[bytes]  # inside <meta http-equiv=refresh>: refresh
    http_equiv_refresh: re.Pattern[bytes]


@dataclass(frozen=True, slots=True)
class Grammar:
    """The compiled patterns for one (authorities, prefix)."""

    absolute: re.Pattern[bytes]  # `abs`: tried (`match`) where an authority occurs
    needles: tuple[bytes, ...]  # "/" + authority, lowercase: where an `abs` match may be
    rules: PrefixRules  # no rule matches anything without a prefix
    reach: int  # no top-level decision looks further than this past its start


@functools.lru_cache(maxsize=256)
def grammar(authorities: tuple[bytes, ...], prefix: bytes | None) -> Grammar:
    """The grammar for these authority spellings (longest first) and prefix (no trailing /).

    Memoized twice: per (authorities, prefix), and the prefix rules per prefix, which cost
    most to compile (~7 ms); a new set of authorities (a new Host) costs ~0.5 ms.
    """
    return Grammar(
        absolute=re.compile(_first(_ABS_FIRST, _absolute(authorities, prefix))),
        needles=_needles(authorities),
        rules=_prefix_rules(prefix),
        reach=_reach(authorities, prefix or b""),
    )


@functools.lru_cache(maxsize=32)
def _prefix_rules(prefix: bytes | None) -> PrefixRules:
    if prefix is None:
        never = re.compile(rb"(?!)")
        return PrefixRules(((),) * len(Mode), never, never, never, never, never)
    rules = _Rules(prefix)
    return PrefixRules(
        structure=tuple(rules.structure(mode) for mode in Mode),
        srcset_value=re.compile(rb"(?P<cand>(?:^|,)\s*" + rules.root + b")"),
        style_value=re.compile(rb"\((?:" + rules.urlfn + b")"),
        tag=re.compile(rb"=(?:" + rules.after_equals + b")"),
        refresh_tag=re.compile(rules.refresh),
        http_equiv_refresh=re.compile(rb"(?i)http-equiv\s*=\s*[\"']?\s*refresh"),
    )


def _first(first_bytes: bytes, *rules: bytes) -> bytes:
    """One pattern of `rules`, each of which starts right after one of `first_bytes` (and
    checks which with a lookbehind): a leading byte (class) lets `re` skip in C to candidates."""
    return b"[" + first_bytes + b"](?:" + b"|".join(rules) + b")"


def _needles(authorities: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """`/` + each authority spelling, leaving out one that starts with a shorter one (its
    occurrences are found with the shorter one's)."""
    shortest_first = sorted({b"/" + a.lower() for a in authorities}, key=len)
    needles: list[bytes] = []
    for needle in shortest_first:
        if not any(needle.startswith(kept) for kept in needles):
            needles.append(needle)
    return tuple(needles)


def _absolute(authorities: tuple[bytes, ...], prefix: bytes | None) -> bytes:
    """The `abs` rule, after its first byte (h, H, / or \\): group `under` holds a path
    already under the prefix. Whether a scheme was written (the match starts with h/H) and
    whether the slashes are JSON-escaped the rewriter reads from the matched bytes."""
    if not authorities:
        return rb"(?P<abs>(?!)(?P<under>))"
    names = b"|".join(re.escape(authority) for authority in authorities)
    under = rb"(?P<under>(?!))?"
    if prefix is not None:
        spellings = re.escape(prefix) + b"|" + re.escape(prefix.replace(b"/", b"\\/"))
        under = rb"(?P<under>(?:" + spellings + rb")(?!" + _SEGMENT + rb"))?"
    not_scheme = rb"[A-Za-z0-9+.\-"
    return (
        rb"(?P<abs>(?:"
        rb"(?<=/)/(?<!" + not_scheme + rb":/\\]//)"
        rb"|(?<=\\)/\\/(?<!" + not_scheme + rb":/\\]\\/\\/)"
        rb"|(?<=[hH])(?i:ttps?:)(?<!" + not_scheme + rb"][hH](?i:ttp):)"
        rb"(?<!" + not_scheme + rb"][hH](?i:ttps):)(?://|\\/\\/)"
        rb")(?i:" + names + b")" + _HOST_GOES_ON + under + b")"
    )


class _Rules:
    """The prefix rules, as pattern sources, each after its first byte (which it checks with
    a lookbehind)."""

    def __init__(self, prefix: bytes) -> None:
        not_under = rb"(?!" + re.escape(prefix) + rb"(?!" + _SEGMENT + rb"))"
        self.root = _ROOT_RELATIVE + not_under
        quote_then_root = rb"(?:[\"']" + _SP + rb")?" + self.root
        # After "=": the value's shape first (most values are not root-relative), then the
        # attribute name behind the "=" (no or one space between them).
        self.after_equals = (
            rb"(?<==)(?:"
            rb"(?="
            + _SP
            + rb"(?:[\"']"
            + _SP
            + rb")?/)(?P<attr>"
            + _named(_URL_ATTRS)
            + _SP
            + quote_then_root
            + b")"
            rb"|(?:(?<=[tTeE]=)|(?<=[tTeE]\s=))(?:"
            rb"(?P<srcset>" + _named((b"srcset", b"imagesrcset")) + _value("ss") + b")"
            rb"|(?P<style>" + _named((b"style",)) + _value("st", guard=rb"(?i:url)\(") + b")"
            b"))"
        )
        self.urlfn = (
            rb"(?<=\()(?P<urlfn>(?<=(?i:url)\()(?<![\w\-\\](?i:url)\()"
            + _SP
            + quote_then_root
            + b")"
        )
        self.css_import = rb"(?<=@)(?P<import>(?i:import)" + _SP + rb"[\"']" + self.root + b")"
        self.refresh = (
            rb"(?P<refresh>(?<=[\s\"'/])(?i:content)\s*=\s*[\"']?\s*[0-9.]+\s*[;,]\s*"
            rb"(?:(?i:url)\s*=\s*)?[\"']?\s*" + self.root + b")"
        )
        tag_rest = rb"[^>]{0,%d}>" % VALUE_MAX
        refresh_ahead = rb"(?=[^>]{0,%d}?(?i:refresh))" % VALUE_MAX
        self.after_less_than = (
            rb"(?<=<)(?:"
            rb"(?P<meta>(?i:meta)(?=[\s/])" + refresh_ahead + tag_rest + b")"
            rb"|(?P<script_open>(?i:script)(?=[\s/>])" + tag_rest + b")"
            rb"|(?P<style_open>(?i:style)(?=[\s/>])" + tag_rest + b")"
            rb"|(?P<comment_open>!--(?!-?>))"
            b")"
        )

    def structure(self, mode: Mode) -> tuple[re.Pattern[bytes], ...]:
        """The top-level rules of a mode, `abs` aside (the scanner finds those itself), as
        patterns that each start with one literal byte: `re` finds those fastest."""
        match mode:
            case Mode.PLAIN:
                sources: tuple[bytes, ...] = ()
            case Mode.HTML:
                sources = (
                    b"=(?:" + self.after_equals + b")",
                    b"<(?:" + self.after_less_than + b")",
                )
            case Mode.HTML_SCRIPT:
                sources = (rb"<(?P<close>/(?i:script)(?=[\s/>]))",)
            case Mode.HTML_STYLE:
                sources = (*self._css(), rb"<(?P<close>/(?i:style)(?=[\s/>]))")
            case Mode.HTML_COMMENT:
                sources = (rb"-(?P<close>-!?>)",)
            case Mode.CSS:
                sources = self._css()
        return tuple(re.compile(source) for source in sources)

    def _css(self) -> tuple[bytes, ...]:
        return (rb"\((?:" + self.urlfn + b")", b"@(?:" + self.css_import + b")")


def _named(names: tuple[bytes, ...]) -> bytes:
    """Right after "=": the attribute before it is one of `names` (any case), preceded by a
    space or quote, with no or one space between name and "="."""
    behind = []
    for name in names:
        for space in (b"", rb"\s"):
            behind.append(rb"(?<=[\s\"'](?i:" + re.escape(name) + b")" + space + b"=)")
    return b"(?:" + b"|".join(behind) + b")"


def _value(name: str, guard: bytes = b"") -> bytes:
    """Right after "=": the value, its text in group `<name>d`, `<name>s` or `<name>u` as it
    was double-quoted, single-quoted or unquoted; with `guard`, only a value containing it."""

    def look(chars: bytes) -> bytes:
        return rb"(?=%s{0,%d}?%s)" % (chars, VALUE_MAX, guard) if guard else b""

    n = name.encode()
    return (
        _SP + rb"(?:"
        rb"\"" + look(rb"[^\"]") + rb"(?P<%bd>[^\"]{0,%d})\"" % (n, VALUE_MAX) + b"|"
        rb"'"
        + look(rb"[^']")
        + rb"(?P<%bs>[^']{0,%d})'" % (n, VALUE_MAX)
        + b"|"
        + look(_UNQUOTED)
        + rb"(?P<%bu>%s{1,%d})(?!%s))" % (n, _UNQUOTED, VALUE_MAX, _UNQUOTED)
    )


def _reach(authorities: tuple[bytes, ...], prefix: bytes) -> int:
    """An upper bound on how far past its start any top-level rule looks: the longest
    bounded value (plus its guard's lookahead, quotes and spaces), or an escaped scheme +
    authority + escaped prefix, with slack for the bounded runs of spaces around them."""
    longest = max((len(a) for a in authorities), default=0)
    return VALUE_MAX + 2 * longest + 4 * len(prefix) + 256
