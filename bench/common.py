"""Shared pieces of the benchmarks: bounded timing loops, budgets, results, tables.

Every figure a benchmark reports is measured in the same run as the floor it is
compared with, and the two are measured in alternating rounds so that a noisy
neighbour on a shared machine slows both sides rather than one of them.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import warnings
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.utils import CryptographyDeprecationWarning

from broker.cli.heap import settle_heap

_T = TypeVar("_T")

REPO_ROOT = Path(__file__).resolve().parent.parent


def evidence_dir() -> Path:
    """The real vectors: ``BROKER_EVIDENCE_DIR`` or ``../shared/evidence`` beside the checkout."""
    return Path(
        os.environ.get("BROKER_EVIDENCE_DIR", str(REPO_ROOT.parent / "shared" / "evidence"))
    )


def run_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` on uvloop when it is installed, as the broker runs: the load
    generator shares the cores with the server, so its own loop overhead counts.

    The heap is settled as the broker's is after its start: a full collection of the
    load generator would stall every simulated enclave at once and show up in the
    broker's latencies, and frequent young ones take CPU from the broker.
    """
    settle_heap()
    try:
        import uvloop  # noqa: PLC0415 - optional, as for the broker
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


def quiet_known_warnings() -> None:
    # AMD VCEK/VLEK certificates carry serial number 0; the warning is expected noise here.
    warnings.filterwarnings(
        "ignore",
        message="Parsed a serial number which wasn't positive",
        category=CryptographyDeprecationWarning,
    )


@dataclass(frozen=True, slots=True)
class Budget:
    """How long each measured side of a comparison may run, and how often to alternate.

    ``seconds`` bounds one timing window, ``max_ops`` the calls inside it;
    ``rounds`` windows are taken per side, alternating target and floor.
    """

    seconds: float
    max_ops: int
    rounds: int
    # release: requests per concurrency level and enclaves per full-flow level.
    token_requests: int
    enclaves: int
    phase_seconds: float

    @classmethod
    def smoke(cls) -> Budget:
        return cls(
            seconds=0.05, max_ops=20, rounds=1, token_requests=40, enclaves=16, phase_seconds=5.0
        )

    @classmethod
    def full(cls) -> Budget:
        return cls(
            seconds=0.6,
            max_ops=20_000,
            rounds=3,
            token_requests=2_000,
            enclaves=400,
            phase_seconds=25.0,
        )


@dataclass(frozen=True, slots=True)
class Rate:
    """Operations per second of one side, the median over its rounds (and every round)."""

    ops_per_s: float
    rounds: tuple[float, ...]
    ops: int

    @property
    def seconds_per_op(self) -> float:
        return 1.0 / self.ops_per_s if self.ops_per_s > 0 else float("inf")


def time_window(fn: Callable[[], object], seconds: float, max_ops: int) -> tuple[int, float]:
    """Calls ``fn`` until ``seconds`` pass or ``max_ops`` calls are made (at least one)."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        count += 1
        now = time.perf_counter()
        if count >= max_ops or now >= deadline:
            return count, now - start


def compare(
    sides: Sequence[Callable[[], object]], budget: Budget, *, warmup: int = 2
) -> list[Rate]:
    """Rates of several callables measured in alternating, bounded rounds."""
    for fn in sides:
        for _ in range(warmup):
            fn()
    per_side: list[list[float]] = [[] for _ in sides]
    totals = [0] * len(sides)
    for _ in range(budget.rounds):
        for index, fn in enumerate(sides):
            count, elapsed = time_window(fn, budget.seconds, budget.max_ops)
            per_side[index].append(count / elapsed)
            totals[index] += count
    return [
        Rate(ops_per_s=statistics.median(rates), rounds=tuple(rates), ops=total)
        for rates, total in zip(per_side, totals, strict=True)
    ]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(slots=True)
class Result:
    """One benchmark's output: table rows (column -> value), notes and errors."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
            "errors": self.errors,
            **self.extra,
        }


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(result: Result) -> str:
    """A plain-text table with the title above and the notes and errors below."""
    cells = [[fmt(row.get(col)) for col in result.columns] for row in result.rows]
    widths = [
        max([len(col), *(len(line[i]) for line in cells)]) for i, col in enumerate(result.columns)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [f"== {result.name}: {result.title}", line(result.columns)]
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in cells)
    out.extend(f"  note: {note}" for note in result.notes)
    out.extend(f"  ERROR: {err}" for err in result.errors)
    return "\n".join(out)
