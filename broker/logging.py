"""structlog set-up (entry points only) with a redaction processor."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import msgspec
import structlog

from broker.log_lines import BatchedBytesLogger

_SENSITIVE = ("key", "token", "secret", "password", "plaintext", "material")
# Names that contain a sensitive word but only ever hold identifiers.
_SAFE = {"kid", "key_id", "resource", "jti", "token_jti", "request_id"}


@functools.lru_cache(maxsize=1024)
def _sensitive(name: str) -> bool:
    # Field names come from the code, a few dozen of them: decided once each.
    lowered = name.lower()
    if lowered in _SAFE or lowered == "event":
        return False
    return any(word in lowered for word in _SENSITIVE)


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in [n for n in event_dict if _sensitive(n)]:
        event_dict[name] = "[redacted]"
    return event_dict


_PROCESS_FIELDS: dict[str, Any] = {}


def bind_process(**fields: Any) -> None:
    """Fields every line of this process carries (a worker's index): unlike context
    variables, which each request clears, they hold for the life of the process."""
    _PROCESS_FIELDS.update(fields)


def _process_fields(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name, value in _PROCESS_FIELDS.items():
        event_dict.setdefault(name, value)
    return event_dict


def _json_bytes(value: Any, default: Any = None) -> bytes:
    # msgspec renders a log line several times faster than the json module, and
    # writes bytes: the line goes to stderr without being encoded again.
    try:
        return msgspec.json.encode(value, enc_hook=default)
    except UnicodeEncodeError:
        # A lone surrogate (from a surrogate-escaped header, say): escaped, never lost.
        return json.dumps(value, default=default).encode()


def configure_logging(fmt: str = "json", level: str = "info", *, cache: bool = True) -> None:
    renderer: Any
    factory: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer()
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_bytes)

        # Looked up per logger, not once: whatever stderr is when logging starts.
        def factory(*_: Any) -> BatchedBytesLogger:
            return BatchedBytesLogger(sys.stderr.buffer)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _process_fields,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
