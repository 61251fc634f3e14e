"""Compiling conditions and the static facts lint and load need about them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cel
import yaml

from broker.policy.model import CONTEXT_VARIABLES

MAX_CONDITION_CHARS = 4096

# Functions the bundled CEL runtime implements; anything else fails at run time.
KNOWN_FUNCTIONS = frozenset(
    {
        "size", "int", "uint", "double", "string", "bytes", "bool", "type", "dyn",
        "matches", "contains", "startsWith", "endsWith", "timestamp", "duration",
        "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek",
        "getDayOfYear", "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    }
)  # fmt: skip

_STRING_LITERAL = re.compile(r"""(?:[rRbB]{0,2})("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_REF_ATTR = re.compile(r"\brefs\s*\.\s*([A-Za-z_]\w*)")
_REF_INDEX = re.compile(r"""\brefs\s*\[\s*["']([^"']*)["']\s*\]""")
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_CEL_POS = re.compile(r"<input>:(\d+):(\d+): (.*)")
_CLAIMS = re.compile(r"\bclaims\b")
# ``claims.<field>`` not followed by a call (``claims.exists(...)`` uses the whole map).
_CLAIM_FIELD = re.compile(r"\bclaims\s*\.\s*([A-Za-z_]\w*)\b(?!\s*\()")


@dataclass(frozen=True, slots=True)
class Compiled:
    program: Any
    refs: frozenset[str]
    variables: frozenset[str]
    claim_fields: frozenset[str] | None
    unknown_variables: frozenset[str]
    unknown_functions: frozenset[str]


class CompileError(Exception):
    """A condition that does not compile; ``line``/``col`` are 1-based in the source."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


def compile_condition(source: str) -> Compiled:
    """Raises CompileError for syntax errors and oversized expressions."""
    if len(source) > MAX_CONDITION_CHARS:
        raise CompileError(f"condition longer than {MAX_CONDITION_CHARS} characters")
    if not source.strip():
        raise CompileError("condition is empty")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise _compile_error(str(exc)) from None
    stripped = strip_strings(source)
    bound = set(_BOUND.findall(stripped))
    refs = set(_REF_ATTR.findall(stripped)) | set(_REF_INDEX.findall(source))
    variables = set(program.variables()) - bound
    functions = {f for f in program.functions() if f[:1].isalpha()}
    return Compiled(
        program=program,
        refs=frozenset(refs),
        # Not minus ``bound``: a macro variable may shadow a context name it also uses.
        variables=frozenset(program.variables()) & CONTEXT_VARIABLES,
        claim_fields=claim_fields(stripped, bound),
        unknown_variables=frozenset(variables - CONTEXT_VARIABLES),
        unknown_functions=frozenset(functions - KNOWN_FUNCTIONS),
    )


def claim_fields(stripped: str, bound: set[str]) -> frozenset[str] | None:
    """The top-level claims a condition reads, when it reads them only as
    ``claims.<field>``; None when it uses the map itself (``size(claims)``,
    ``claims["x"]``, a macro over it, or a macro variable named ``claims``).

    ``stripped`` is the source with its string literals emptied.
    """
    if "claims" in bound:
        return None
    uses = len(_CLAIMS.findall(stripped))
    fields = _CLAIM_FIELD.findall(stripped)
    return frozenset(fields) if len(fields) == uses else None


def strip_strings(source: str) -> str:
    """``source`` with every string literal emptied, for name searches."""
    return _STRING_LITERAL.sub('""', source)


def _compile_error(text: str) -> CompileError:
    match = _CEL_POS.search(text)
    if match is None:
        return CompileError(f"invalid CEL: {text.splitlines()[0] if text else 'compile error'}")
    return CompileError(f"invalid CEL: {match.group(3)}", int(match.group(1)), int(match.group(2)))


def source_position(
    node: yaml.ScalarNode, lines: list[str], line: int, col: int
) -> tuple[int, int]:
    """Maps a 1-based position inside a condition to the file's line and column."""
    start_line, start_col = node.start_mark.line, node.start_mark.column
    if node.style in ("|", ">"):
        # Block scalars start on the line after the indicator, indented.
        number = start_line + 1 + line
        text = lines[number - 1] if 0 < number <= len(lines) else ""
        return number, len(text) - len(text.lstrip(" ")) + col
    quote = 1 if node.style in ("'", '"') else 0
    if line == 1:
        return start_line + 1, start_col + quote + col
    return start_line + line, col
