"""Per-request context and the clock the services read time from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    client: str
    actor: str = ""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
