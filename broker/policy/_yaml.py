"""Schema checks over YAML nodes, so every error can name its file:line:col.

Documents are composed (never constructed) with the safe loader: no Python
objects are built, anchors and aliases are refused (no "billion laughs"),
duplicate keys are errors (PyYAML would keep the last one silently).
"""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from broker.errors import PolicyError

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 16


class Sink:
    """Collects the errors of one file, so lint can report all of them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[PolicyError] = []

    def add(
        self, message: str, node: yaml.Node | None = None, *, line: int = 0, col: int = 0
    ) -> None:
        if node is not None:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
        self.errors.append(PolicyError(message, path=self.path, line=line, col=col))


def compose(data: bytes, sink: Sink) -> yaml.Node | None:
    """The single document in ``data``, or None with the error recorded."""
    if len(data) > MAX_FILE_BYTES:
        sink.add(f"file is larger than {MAX_FILE_BYTES} bytes", line=1, col=1)
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        sink.add("file is not valid UTF-8", line=line, col=1)
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        sink.add(f"YAML syntax error: {exc.problem or exc.context}", line=line, col=col)
        return None
    except yaml.YAMLError as exc:
        sink.add(f"YAML error: {exc}", line=1, col=1)
        return None
    if node is None:
        sink.add("file is empty: expected a mapping with 'version'", line=1, col=1)
        return None
    if not _tree_ok(node, sink, set(), 0, text):
        return None
    return node


def _tree_ok(node: yaml.Node, sink: Sink, seen: set[int], depth: int, text: str) -> bool:
    # An alias composes to the very node its anchor named: seeing a node twice
    # means an alias, which we refuse rather than expand.
    if id(node) in seen:
        alias = next(
            e for e in yaml.parse(text, Loader=yaml.SafeLoader) if isinstance(e, yaml.AliasEvent)
        )
        mark = alias.start_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        sink.add("anchors and aliases are not allowed", line=line, col=col)
        return False
    seen.add(id(node))
    if depth > MAX_DEPTH:
        sink.add(f"nesting deeper than {MAX_DEPTH} levels", node)
        return False
    children: Iterable[yaml.Node] = ()
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = (n for pair in node.value for n in pair)
    return all(_tree_ok(child, sink, seen, depth + 1, text) for child in children)


def mapping(
    node: yaml.Node, sink: Sink, what: str, *, allowed: Iterable[str], required: Iterable[str] = ()
) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
    """Keys of a mapping node -> (key node, value node), schema checked."""
    if not isinstance(node, yaml.MappingNode):
        sink.add(f"{what} must be a mapping", node)
        return None
    allowed = set(allowed)
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in node.value:
        if not (isinstance(key, yaml.ScalarNode) and key.tag == STR):
            sink.add(f"{what}: keys must be strings", key)
            continue
        name = str(key.value)
        if name in out:
            sink.add(f"{what}: duplicate key {name!r}", key)
        elif allowed and name not in allowed:
            sink.add(f"{what}: unknown key {name!r} (expected one of {_list(allowed)})", key)
        else:
            out[name] = (key, value)
    for name in required:
        if name not in out:
            sink.add(f"{what}: missing required key {name!r}", node)
    return out


def string(node: yaml.Node, sink: Sink, what: str) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == STR:
        return str(node.value)
    hint = ""
    if isinstance(node, yaml.ScalarNode) and node.tag.startswith("!"):
        hint = " (quote text that starts with '!', e.g. \"!flags.debug\")"
    sink.add(f"{what} must be a string{hint}", node)
    return None


def integer(node: yaml.Node, sink: Sink, what: str) -> int | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == INT:
        try:
            return int(str(node.value).replace("_", ""), 0)
        except ValueError:
            pass
    sink.add(f"{what} must be an integer", node)
    return None


def sequence(node: yaml.Node, sink: Sink, what: str) -> list[yaml.Node] | None:
    if not isinstance(node, yaml.SequenceNode):
        sink.add(f"{what} must be a list", node)
        return None
    return list(node.value)


def check_version(keys: dict[str, tuple[yaml.Node, yaml.Node]], sink: Sink) -> None:
    if "version" in keys:
        node = keys["version"][1]
        version = integer(node, sink, "version")
        if version is not None and version != 1:
            sink.add(f"unsupported version {version} (this broker reads version 1)", node)


def position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _list(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))
