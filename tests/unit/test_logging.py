"""Log lines are one JSON object each, redacted, and never lost to odd text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from broker.logging import configure_logging


@pytest.fixture
def lines(capfd: pytest.CaptureFixture[str]) -> Iterator[list[dict[str, object]]]:
    configure_logging("json", "info", cache=False)
    found: list[dict[str, object]] = []
    yield found
    structlog.reset_defaults()


def _read(capfd: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capfd.readouterr().err.splitlines()]


def test_a_line_is_json_with_level_time_and_redaction(
    lines: list[dict[str, object]], capfd: pytest.CaptureFixture[str]
) -> None:
    """Sensitive names are redacted; identifiers and odd values still render."""
    log = structlog.get_logger("t")
    log.info(
        "key.released", resource="a/b/c", secret_key="zz", when=datetime(2030, 1, 1, tzinfo=UTC)
    )
    (line,) = _read(capfd)
    assert line["event"] == "key.released" and line["level"] == "info"
    assert line["resource"] == "a/b/c" and line["secret_key"] == "[redacted]"
    assert str(line["when"]).startswith("2030-01-01") and "timestamp" in line


def test_lone_surrogates_and_non_ascii_text_are_kept(
    lines: list[dict[str, object]], capfd: pytest.CaptureFixture[str]
) -> None:
    """A surrogate-escaped header value neither crashes the request nor vanishes."""
    structlog.get_logger("t").info("request.failed", detail="bad \udcff byte", who="é")
    (line,) = _read(capfd)
    assert line["detail"] == "bad \udcff byte" and line["who"] == "é"


def test_below_the_level_nothing_is_written(
    lines: list[dict[str, object]], capfd: pytest.CaptureFixture[str]
) -> None:
    """debug lines are dropped at info."""
    structlog.get_logger("t").debug("noise")
    assert _read(capfd) == []
