"""The live policy set: loaded at start, swapped atomically on reload.

A broken file at start-up refuses to start (PolicyError propagates); a broken
file on reload keeps the last good set and reports why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from broker.errors import PolicyError
from broker.policy.load import load_policy_dir
from broker.policy.model import PolicySet

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    digest: str
    loaded_at: datetime
    error: str = ""


class PolicyHolder:
    def __init__(self, directory: Path, *, now: datetime) -> None:
        self._dir = directory
        self._current = load_policy_dir(directory, now=now)
        self._loaded_at = now
        self._last_error = ""

    @property
    def current(self) -> PolicySet:
        return self._current

    @property
    def loaded_at(self) -> datetime:
        return self._loaded_at

    @property
    def last_error(self) -> str:
        return self._last_error

    def reload(self, *, now: datetime) -> ReloadResult:
        try:
            candidate = load_policy_dir(self._dir, now=now)
        except PolicyError as exc:
            self._last_error = exc.diagnostics()
            log.warning(
                "policy.reload_failed", error=self._last_error, kept_digest=self._current.digest
            )
            return ReloadResult(False, self._current.digest, self._loaded_at, self._last_error)
        self._current, self._loaded_at, self._last_error = candidate, now, ""
        log.info("policy.reloaded", digest=candidate.digest)
        return ReloadResult(True, candidate.digest, now)
