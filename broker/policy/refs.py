"""Reference-value files (``policies/refs/*.yaml``) and their expiry.

Example::

    version: 1
    refs:
      snp_measurements:
        description: Launch measurements of the release guest image
        source: build pipeline, image 2025.09
        added_by: security-team
        version: 3                         # optional, default 1; bumped by `broker refs add`
        expires: "2026-06-30T00:00:00Z"   # optional, RFC 3339 with offset
        values:
          - a1f3...d38c

An expired set reads as an empty list: it matches nothing, so a release that
depends on it is refused (fail closed), and the decision says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import yaml

from broker.policy import _yaml
from broker.policy.model import REF_NAME_RE, RefSet

_SET_KEYS = ("description", "source", "added_by", "version", "expires", "values")
_REQUIRED = ("description", "source", "added_by", "values")
MAX_VALUES = 10_000


def parse_refs_file(data: bytes, sink: _yaml.Sink) -> list[RefSet]:
    """Every reference set in one file; errors go to ``sink``."""
    root = _yaml.compose(data, sink)
    if root is None:
        return []
    top = _yaml.mapping(
        root, sink, "refs file", allowed=("version", "refs"), required=("version", "refs")
    )
    if top is None:
        return []
    _yaml.check_version(top, sink)
    if "refs" not in top:
        return []
    sets = _yaml.mapping(top["refs"][1], sink, "refs", allowed=())
    if sets is None:
        return []
    if not sets:
        sink.add("refs must name at least one reference set", top["refs"][1])
    out = []
    for name, (key, value) in sets.items():
        ref = _parse_set(name, key, value, sink)
        if ref is not None:
            out.append(ref)
    return out


def _parse_set(name: str, key: yaml.Node, node: yaml.Node, sink: _yaml.Sink) -> RefSet | None:
    errors_before = len(sink.errors)
    if not REF_NAME_RE.fullmatch(name):
        sink.add(f"reference set name {name!r} must match [a-z][a-z0-9_]*", key)
    what = f"refs.{name}"
    keys = _yaml.mapping(node, sink, what, allowed=_SET_KEYS, required=_REQUIRED)
    if keys is None:
        return None
    text = {k: _yaml.string(keys[k][1], sink, f"{what}.{k}") for k in _REQUIRED[:3] if k in keys}
    expires = _expires(keys["expires"][1], sink, what) if "expires" in keys else None
    values = _values(keys["values"][1], sink, what) if "values" in keys else ()
    version = 1
    if "version" in keys:
        number = _yaml.integer(keys["version"][1], sink, f"{what}.version")
        if number is not None and number < 1:
            sink.add(f"{what}.version must be 1 or more", keys["version"][1])
        version = number or 1
    if len(sink.errors) != errors_before:
        return None
    line, col = _yaml.position(key)
    return RefSet(
        name=name,
        description=text["description"] or "",
        source=text["source"] or "",
        added_by=text["added_by"] or "",
        expires=expires,
        values=values,
        path=sink.path,
        line=line,
        col=col,
        version=version,
    )


def _expires(node: yaml.Node, sink: _yaml.Sink, what: str) -> datetime | None:
    # An unquoted timestamp resolves to YAML's timestamp tag; read its text
    # either way so that the offset rules are ours, not PyYAML's.
    if not isinstance(node, yaml.ScalarNode):
        sink.add(f"{what}.expires must be an RFC 3339 date-time", node)
        return None
    try:
        when = datetime.fromisoformat(str(node.value))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or "T" not in str(node.value).upper():
        sink.add(
            f"{what}.expires must be an RFC 3339 date-time with an offset, "
            f"e.g. 2026-06-30T00:00:00Z (got {str(node.value)[:40]!r})",
            node,
        )
        return None
    return when


def _values(node: yaml.Node, sink: _yaml.Sink, what: str) -> tuple[str | int, ...]:
    items = _yaml.sequence(node, sink, f"{what}.values")
    if items is None:
        return ()
    if len(items) > MAX_VALUES:
        sink.add(f"{what}.values holds more than {MAX_VALUES} entries", node)
        return ()
    out: list[str | int] = []
    for i, item in enumerate(items):
        if isinstance(item, yaml.ScalarNode) and item.tag == _yaml.INT:
            number = _yaml.integer(item, sink, f"{what}.values[{i}]")
            if number is not None:
                out.append(number)
        else:
            text = _yaml.string(item, sink, f"{what}.values[{i}]")
            if text is not None:
                out.append(text)
    return tuple(out)


def refs_context(
    refs: Iterable[RefSet], now: datetime
) -> tuple[dict[str, list[str | int]], set[str]]:
    """The ``refs`` CEL variable at ``now`` and the names of expired sets."""
    values: dict[str, list[str | int]] = {}
    expired: set[str] = set()
    for ref in refs:
        if ref.expired(now):
            expired.add(ref.name)
            values[ref.name] = []
        else:
            values[ref.name] = list(ref.values)
    return values, expired
