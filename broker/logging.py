"""structlog set-up (entry points only) with a redaction processor."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SENSITIVE = ("key", "token", "secret", "password", "plaintext", "material")
# Names that contain a sensitive word but only ever hold identifiers.
_SAFE = {"kid", "key_id", "resource", "jti", "token_jti", "request_id"}


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event_dict):
        lowered = name.lower()
        if lowered in _SAFE or lowered == "event":
            continue
        if any(word in lowered for word in _SENSITIVE):
            event_dict[name] = "[redacted]"
    return event_dict


def configure_logging(fmt: str = "json", level: str = "info", *, cache: bool = True) -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
