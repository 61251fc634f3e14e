"""Shared pieces of the importers: JSON input, CEL literals, YAML output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from broker.errors import PolicyError

MAX_INPUT_BYTES = 1 << 20


class PolicyImportError(PolicyError):
    """The foreign policy cannot be read or has nothing we can convert."""

    code = "PolicyImportInvalid"


def load_json(data: bytes, what: str) -> Any:
    if len(data) > MAX_INPUT_BYTES:
        raise PolicyImportError(f"{what} is larger than {MAX_INPUT_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyImportError(f"{what} is not JSON: {exc}") from None


def literal(value: object) -> str:
    """A CEL literal for a JSON scalar; hex-looking text is lower-cased."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.lower() if _is_hex(value) else value
        return json.dumps(text)
    raise PolicyImportError(f"cannot convert value {value!r:.40} (expected text, number or bool)")


def _is_hex(text: str) -> bool:
    return len(text) >= 16 and all(c in "0123456789abcdefABCDEF" for c in text)


def deny_debug(tee: str) -> dict[str, Any]:
    return {
        "name": f"refuse-debug-{tee}",
        "tee": tee,
        "effect": "deny",
        "when": ["flags.debug"],
    }


def emit(
    *,
    name: str,
    description: str,
    resources: Sequence[str],
    rules: list[dict[str, Any]],
    source: str,
    notes: Sequence[str],
) -> str:
    document = {
        "version": 1,
        "name": name,
        "description": description,
        "resources": list(resources),
        "rules": rules,
    }
    header = [f"# Converted from {source} by `broker policy import`. Review before use."]
    header += [f"# NOTE: {n}" for n in notes]
    body = yaml.safe_dump(document, sort_keys=False, width=1000, allow_unicode=True)
    return "\n".join(header) + "\n" + body
