"""Adding a value to a reference-value file, keeping its comments and layout.

Example::

    text = add_value(old_text, "snp_measurements", "a1f3...", provenance=Provenance(
        source="evidence sha256:9f.. (sev-snp, verified 2025-09-01T00:00:00Z)",
        added_by="alice", description="Release images"), now=now)

The value goes at the end of the set's ``values`` list, preceded by a comment
naming where it came from, who added it and when; the set's ``version`` is
bumped (a set that had none was version 1). A set that does not exist is
appended to the file (which is created if it is empty). The result is parsed
again before it is returned, so the edit can never leave an invalid file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import yaml

from broker.errors import PolicyError
from broker.policy import _yaml
from broker.policy.model import REF_NAME_RE
from broker.policy.refs import parse_refs_file

__all__ = ["Provenance", "add_value"]


@dataclass(frozen=True, slots=True)
class Provenance:
    source: str
    added_by: str
    description: str = ""


def add_value(
    text: str, name: str, value: str | int, *, provenance: Provenance, now: datetime, path: str = ""
) -> str:
    """``text`` with ``value`` added to reference set ``name``.

    Raises:
        PolicyError: the file or the name is invalid, or the value is already listed.
    """
    if not REF_NAME_RE.fullmatch(name):
        raise PolicyError(f"reference set name {name!r} must match [a-z][a-z0-9_]*", path=path)
    note = f"# {provenance.source}; added by {provenance.added_by} at {now.isoformat()}"
    rendered = json.dumps(value)
    sink = _yaml.Sink(path)
    fresh = not text.strip()
    if fresh:
        text = "version: 1\nrefs:\n"
    existing = {} if fresh else {r.name: r for r in parse_refs_file(text.encode(), sink)}
    if sink.errors:
        raise sink.errors[0]
    if name in existing:
        if value in existing[name].values:
            raise PolicyError(f"{rendered[:40]} is already in {name}", path=path)
        out = _append_to_set(text, name, note, rendered, existing[name].version)
    else:
        block = [
            f"  {name}:",
            f"    description: {json.dumps(provenance.description or name)}",
            f"    source: {json.dumps(provenance.source)}",
            f"    added_by: {json.dumps(provenance.added_by)}",
            "    version: 1",
            "    values:",
            f"      {note}",
            f"      - {rendered}",
        ]
        out = text.rstrip("\n") + "\n" + "\n".join(block) + "\n"
    check = _yaml.Sink(path)
    parse_refs_file(out.encode(), check)
    if check.errors:
        raise check.errors[0]
    return out


def _append_to_set(text: str, name: str, note: str, rendered: str, version: int) -> str:
    lines = text.splitlines()
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert isinstance(root, yaml.MappingNode)
    refs = next(v for k, v in root.value if k.value == "refs")
    node = next(v for k, v in refs.value if k.value == name)
    fields = {k.value: (k, v) for k, v in node.value}
    values = fields["values"][1]
    if not isinstance(values, yaml.SequenceNode):
        raise PolicyError(f"{name}.values must be a list to be edited", line=1)
    if values.flow_style or not values.value:
        return _append_to_flow(text, fields, values, note, rendered, version)
    last = values.value[-1]
    indent = " " * last.start_mark.column
    insert_at = last.end_mark.line + (1 if last.end_mark.column else 0)
    key_indent = " " * node.value[0][0].start_mark.column
    if "version" in fields:
        number = fields["version"][1].start_mark.line
        lines[number] = f"{key_indent}version: {version + 1}"
    else:
        lines.insert(fields["values"][0].start_mark.line, f"{key_indent}version: {version + 1}")
        insert_at += 1
    lines[insert_at:insert_at] = [f"{indent[:-2]}{note}", f"{indent[:-2]}- {rendered}"]
    return "\n".join(lines) + "\n"


def _append_to_flow(
    text: str,
    fields: dict[str, tuple[yaml.Node, yaml.Node]],
    values: yaml.SequenceNode,
    note: str,
    rendered: str,
    version: int,
) -> str:
    # A flow list ("[a, b]") is rewritten in place; the note goes above its key.
    items = [text[v.start_mark.index : v.end_mark.index] for v in values.value]
    start, end = values.start_mark.index, values.end_mark.index
    text = text[:start] + "[" + ", ".join([*items, rendered]) + "]" + text[end:]
    lines = text.splitlines()
    key = fields["values"][0]
    indent = " " * key.start_mark.column
    at = key.start_mark.line
    if "version" in fields:
        lines[fields["version"][1].start_mark.line] = f"{indent}version: {version + 1}"
        lines.insert(at, f"{indent}{note}")
    else:
        lines[at:at] = [f"{indent}version: {version + 1}", f"{indent}{note}"]
    return "\n".join(lines) + "\n"
