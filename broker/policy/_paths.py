"""Finding the ``claims.…`` and ``flags.…`` paths a condition reads.

The bundled CEL runtime exposes no syntax tree, so paths are found in the
source text with string literals masked out (a ``"claims.x"`` inside a
string is not a read). A path is a chain of ``.name`` and ``["key"]``
selections; a ``.name(`` ends it, being a method call. Each path comes with
what it is compared against, when that is a literal or ``refs.<set>``, so
lint can check types without a type checker in the runtime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LITERAL = re.compile(r"""(?:[rR])?("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_HEAD = re.compile(r"(?<![\w.])(claims|flags)\b")
_FIELD = re.compile(r"\s*\.\s*([A-Za-z_]\w*)\b(?!\s*\()")
_INDEX = re.compile(r"""\s*\[\s*("[^"\n]*"|'[^'\n]*')\s*\]""")
_OPERATOR = r"(==|!=|<=|>=|<|>)"
_VALUE = r"""("[^"\n]*"|'[^'\n]*'|-?\d+(?:\.\d+)?u?|true|false|null)"""
_AFTER_OP = re.compile(rf"\s*{_OPERATOR}\s*{_VALUE}")
_BEFORE_OP = re.compile(rf"{_VALUE}\s*{_OPERATOR}\s*$")
_AFTER_IN = re.compile(r"\s+in\s+refs\s*\.\s*([A-Za-z_]\w*)")
_HAS = re.compile(r"has\s*\(\s*$")


@dataclass(frozen=True, slots=True)
class PathRead:
    """``root`` is ``claims`` or ``flags``; ``offset`` is 0-based in the source."""

    root: str
    path: tuple[str, ...]
    offset: int
    text: str
    literal: str | None = None  # the literal it is compared with, as written
    ref: str | None = None  # the reference set it is tested for membership in
    in_has: bool = False

    @property
    def dotted(self) -> str:
        return ".".join((self.root, *self.path))


def mask_strings(source: str) -> str:
    """``source`` with the inside of every string literal blanked, offsets kept."""

    def blank(match: re.Match[str]) -> str:
        text = match.group(0)
        quote_at = 1 if text[0] in "rR" else 0
        inner = len(text) - quote_at - 2
        return text[: quote_at + 1] + " " * inner + text[-1]

    return _LITERAL.sub(blank, source)


def reads(source: str) -> list[PathRead]:
    """Every claims/flags path in ``source``, in order."""
    masked = mask_strings(source)
    out = []
    for head in _HEAD.finditer(masked):
        pos = head.end()
        path: list[str] = []
        while True:
            field = _FIELD.match(masked, pos)
            if field is not None:
                path.append(field.group(1))
                pos = field.end()
                continue
            index = _INDEX.match(masked, pos)
            if index is not None:
                literal = source[index.start(1) : index.end(1)]
                path.append(literal[1:-1])
                pos = index.end()
                continue
            break
        if not path:
            continue
        compared = _literal_near(source, masked, head.start(), pos)
        member = _AFTER_IN.match(masked, pos)
        out.append(
            PathRead(
                root=head.group(1),
                path=tuple(path),
                offset=head.start(),
                text=source[head.start() : pos],
                literal=compared,
                ref=member.group(1) if member else None,
                in_has=_HAS.search(masked[: head.start()]) is not None,
            )
        )
    return out


def _literal_near(source: str, masked: str, start: int, end: int) -> str | None:
    after = _AFTER_OP.match(masked, end)
    if after is not None:
        return source[after.start(2) : after.end(2)]
    before = _BEFORE_OP.search(masked[:start])
    if before is not None:
        return source[before.start(1) : before.end(1)]
    return None


def literal_kind(literal: str) -> str:
    """The CEL type of a literal as ``_VALUE`` matches it."""
    if literal[0] in "\"'":
        return "string"
    if literal in ("true", "false"):
        return "bool"
    if literal == "null":
        return "null"
    if literal.endswith("u"):
        return "uint"
    return "double" if "." in literal else "int"
