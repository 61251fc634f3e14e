"""Which records an export holds: time window, resource, outcome, TEE, measurement, requester.

Usage::

    f = ExportFilter(resource="default/db/key", decision="deny", tee="snp")
    selected = [r for r in records if f.matches(r)]
    f.is_full()      # False: the export is a selection, verified record by record

Every criterion that is set must hold (AND). Text comparisons are exact,
except measurements, which compare case-insensitively (hex spellings vary).
A *measurement* matches when any string in the record's ``claims``, at any
depth, under a member named ``measurement``, ``launch_measurement``,
``mr_td``, ``mrtd``, ``mr_enclave``, ``mrenclave``, or ``pcr<N>``, or inside
an object named ``pcrs``, equals the value. A *requester* matches the
record's ``client`` or ``actor``; a value starting ``hmac-sha256:`` is
compared with their keyed hashes instead (so a redacted export can be
narrowed by the hashed value it shows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from broker.audit.privacy import HASH_PREFIX, RequesterKey
from broker.audit.record import DECISIONS, AuditRecord
from broker.errors import MalformedRequest

__all__ = ["MEASUREMENT_KEYS", "ExportFilter"]

MEASUREMENT_KEYS: Final = frozenset(
    {"measurement", "launch_measurement", "mr_td", "mrtd", "mr_enclave", "mrenclave"}
)
_PCR_RE: Final = re.compile(r"pcr_?\d+")
MAX_FILTER_CHARS: Final = 512


def _measurements(value: object, *, inside: bool = False) -> list[str]:
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            k = str(key).lower()
            hit = inside or k in MEASUREMENT_KEYS or bool(_PCR_RE.fullmatch(k))
            found.extend(_measurements(item, inside=hit or k == "pcrs"))
    elif isinstance(value, tuple | list):
        for item in value:
            found.extend(_measurements(item, inside=inside))
    elif inside and isinstance(value, str):
        found.append(value.lower())
    return found


@dataclass(frozen=True, slots=True)
class ExportFilter:
    """Selection criteria; ``None`` means "any". ``since``/``until`` are inclusive.

    Raises:
        MalformedRequest: a criterion no record could satisfy by construction
            (unknown decision, over-long text, naive time).
    """

    since: datetime | None = None
    until: datetime | None = None
    resource: str | None = None
    decision: str | None = None
    tee: str | None = None
    measurement: str | None = None
    requester: str | None = None

    def __post_init__(self) -> None:
        for name in ("resource", "decision", "tee", "measurement", "requester"):
            value = getattr(self, name)
            if value is not None and (not value or len(value) > MAX_FILTER_CHARS):
                raise MalformedRequest(f"filter {name} must be 1..{MAX_FILTER_CHARS} characters")
        if self.decision is not None and self.decision not in DECISIONS:
            raise MalformedRequest(f"filter decision must be one of {sorted(DECISIONS)}")
        for name in ("since", "until"):
            t = getattr(self, name)
            if t is not None and t.utcoffset() is None:
                raise MalformedRequest(f"filter {name} must carry a UTC offset")

    def is_full(self) -> bool:
        """True when nothing is filtered: the export is the whole log up to its size."""
        return all(getattr(self, f) is None for f in self.__slots__)

    def is_window(self) -> bool:
        """True when only the time window is set (the selection is then contiguous)."""
        return not self.is_full() and all(
            getattr(self, f) is None
            for f in ("resource", "decision", "tee", "measurement", "requester")
        )

    def matches(self, record: AuditRecord, requester_key: RequesterKey | None = None) -> bool:
        """All set criteria hold for ``record``. Time bounds here are exact (per record)."""
        return (
            (self.since is None or record.time >= self.since)
            and (self.until is None or record.time <= self.until)
            and (self.resource is None or record.resource == self.resource)
            and (self.decision is None or record.decision == self.decision)
            and (self.tee is None or record.tee == self.tee)
            and (
                self.measurement is None or self.measurement.lower() in _measurements(record.claims)
            )
            and (self.requester is None or self._requester(record, requester_key))
        )

    def _requester(self, record: AuditRecord, key: RequesterKey | None) -> bool:
        wanted = self.requester or ""
        if wanted.startswith(HASH_PREFIX):
            if key is None:
                return False
            return any(key.matches(v, wanted) for v in (record.client, record.actor) if v)
        return wanted in (record.client, record.actor)
