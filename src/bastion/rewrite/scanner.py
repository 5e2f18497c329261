"""The streaming scanner: text bytes in, rewritten text bytes out, with a bounded tail.

What it rewrites is the leftmost-first, non-overlapping matches of one pattern per mode,
`abs | structure[mode]` (patterns.py), exactly as `re.sub` over the whole body would, with a
mode switch after a `<script>`, `<style>` or `<!--` match and back after its end. It finds
them faster than that one pattern would: `abs` matches are only tried where the lowercased
text holds `/` + an internal authority (a plain substring search), the other rules with one
pattern each that starts with one literal byte, searched again only once passed; the earliest
next match wins (no two start on the same byte). Inside a matched tag or attribute value the
prefix rules, then `abs`, are applied with `re.sub` (their matches never overlap).

Streaming: `feed` rewrites up to `reach` bytes before the end of what it has and holds those
back (with `LOOKBEHIND` bytes already written before them, as context); `end` rewrites the
rest. No rule looks further than `reach` past its start, so a match that starts before the
cut is decided exactly as on the whole body, and one that starts after it is tried again
with the next bytes: the output is the same however the body is cut into reads, and the
scanner never holds more than `reach + LOOKBEHIND` bytes.

A `<script>` or `<style>` start tag closed with `/>` switches nothing (XHTML's empty element).
"""

from __future__ import annotations

import re

from bastion.rewrite.patterns import LOOKBEHIND, MAX_ABS_OFFSET, Grammar, Mode
from bastion.rewrite.urls import UrlMap

_INSERT_PREFIX = frozenset({"attr", "urlfn", "import", "cand", "refresh"})
_OPENS = {"script_open": Mode.HTML_SCRIPT, "style_open": Mode.HTML_STYLE}


class Scanner:
    """Rewrites one body's text (bytes in an ASCII-compatible charset) as it streams."""

    __slots__ = ("_carry", "_grammar", "_map", "_prefix", "_start", "_structure")

    def __init__(self, url_map: UrlMap, mode: Mode) -> None:
        self._map = url_map
        self._grammar: Grammar = url_map.grammar
        self._prefix = url_map.prefix or b""
        self._structure = self._grammar.rules.structure[mode]  # the mode's patterns, `abs` aside
        self._carry = b""  # held-back text; its first `_start` bytes are already written
        self._start = 0

    @property
    def buffered(self) -> int:
        """Bytes held back (at most the grammar's reach + LOOKBEHIND after a feed)."""
        return len(self._carry)

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        return self._scan(self._carry + data if self._carry else data, final=False)

    def end(self) -> bytes:
        return self._scan(self._carry, final=True)

    def _scan(self, text: bytes, *, final: bool) -> bytes:
        cut = len(text) if final else len(text) - self._grammar.reach
        pos = self._start
        out: list[bytes] = []
        if pos < cut:
            absolutes = self._absolutes(text, pos, cut)
            patterns = self._structure
            ahead: list[re.Match[bytes] | None] = [None] * len(patterns)
            starts = [-1] * len(patterns)  # of ahead[i]; -1: to search; _NEVER: none left
            while True:
                while absolutes and absolutes[-1].start() < pos:
                    absolutes.pop()
                match = absolutes[-1] if absolutes else None
                start = _NEVER if match is None else match.start()
                for i, next_start in enumerate(starts):
                    if next_start < pos:
                        found = ahead[i] = patterns[i].search(text, pos)
                        next_start = starts[i] = _NEVER if found is None else found.start()
                    if next_start < start:
                        match, start = ahead[i], next_start
                if match is None or start >= cut:
                    break
                out.append(text[pos:start])
                out.append(self._rewrite(match))
                pos = match.end()
                if patterns is not self._structure:  # the mode changed
                    patterns = self._structure
                    ahead = [None] * len(patterns)
                    starts = [-1] * len(patterns)
            if pos < cut:
                out.append(text[pos:cut])
                pos = cut
        keep = max(0, pos - LOOKBEHIND)
        self._carry = text[keep:]
        self._start = pos - keep
        return b"".join(out)

    def _absolutes(self, text: bytes, pos: int, cut: int) -> list[re.Match[bytes]]:
        """The `abs` matches starting in [pos, cut), last first. Where `/` + an authority
        occurs, the bytes before it say where a match could start (`//` or `\\/\\/`,
        after `http:` or `https:` or not: one place); the `abs` pattern decides there."""
        lowered = text.lower()
        match_at = self._grammar.absolute.match
        starts: set[int] = set()
        for needle in self._grammar.needles:
            at = lowered.find(needle, pos)
            while 0 <= at < cut + MAX_ABS_OFFSET:
                starts.add(_abs_start(lowered, at + 1))
                at = lowered.find(needle, at + 1)
        found = [
            match_at(text, start) for start in sorted(starts, reverse=True) if pos <= start < cut
        ]
        return [match for match in found if match is not None]

    def _rewrite(self, match: re.Match[bytes]) -> bytes:
        """The replacement for a top-level match; switches mode on HTML boundaries."""
        rule = match.lastgroup
        if rule == "abs":
            return self._map.replace_absolute(match)
        if rule in _INSERT_PREFIX:
            return match.group() + self._prefix
        rules = self._grammar.rules
        if rule in _OPENS:
            tag = self._absolutes_in(rules.tag.sub(self._rewrite_inside, match.group()))
            if not tag.endswith(b"/>"):
                self._structure = rules.structure[_OPENS[rule]]
            return tag
        if rule == "comment_open":
            self._structure = rules.structure[Mode.HTML_COMMENT]
            return match.group()
        if rule == "close":
            self._structure = rules.structure[Mode.HTML]
            return match.group()
        return self._absolutes_in(self._rewrite_inside(match))  # srcset, style, meta

    def _rewrite_inside(self, match: re.Match[bytes]) -> bytes:
        """The prefix rules' replacement, absolute URLs aside (done over the whole span)."""
        rule = match.lastgroup
        rules = self._grammar.rules
        if rule in _INSERT_PREFIX:
            return match.group() + self._prefix
        if rule == "srcset":
            return self._rewrite_value(match, "ss", rules.srcset_value)
        if rule == "style":
            return self._rewrite_value(match, "st", rules.style_value)
        if rule == "meta":
            tag = match.group()
            if rules.http_equiv_refresh.search(tag):
                return rules.refresh_tag.sub(self._rewrite_inside, tag)
            return tag
        raise AssertionError(f"no rewrite for rule {rule!r}")

    def _absolutes_in(self, text: bytes) -> bytes:
        return self._grammar.absolute.sub(self._map.replace_absolute, text)

    def _rewrite_value(
        self, match: re.Match[bytes], name: str, pattern: re.Pattern[bytes]
    ) -> bytes:
        """An attribute whose value (group `<name>d|s|u`) is rewritten with `pattern`."""
        for group in (name + "d", name + "s", name + "u"):
            start, end = match.span(group)
            if start >= 0:
                break
        whole, offset = match.group(), match.start()
        value = pattern.sub(self._rewrite_inside, whole[start - offset : end - offset])
        return whole[: start - offset] + value + whole[end - offset :]


def _abs_start(lowered: bytes, authority: int) -> int:
    """Where an `abs` match naming the authority at `authority` would start (-1: nowhere)."""
    if lowered[authority - 2 : authority] == b"//":
        slashes = authority - 2
    elif lowered[authority - 4 : authority] == b"\\/\\/":
        slashes = authority - 4
    else:
        return -1
    if lowered[slashes - 6 : slashes] == b"https:":
        return slashes - 6
    if lowered[slashes - 5 : slashes] == b"http:":
        return slashes - 5
    return slashes


_NEVER = 1 << 62
