"""``python -m bench [--smoke] [--only NAME] [--json FILE] [--server MODE] [--enclaves N]``.

Runs the benchmarks in order, prints one table each, and exits 1 if any of
them reported an error (a vector that did not verify, a failed request ...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Budget, Result, quiet_known_warnings, render

BENCHMARKS = ("verify", "wrap", "release", "storm", "replicas")


def _runner(name: str, args: argparse.Namespace) -> Callable[[Budget], Result]:
    # Imported lazily so that --only pays for the imports it needs.
    if name == "verify":
        from bench import verify  # noqa: PLC0415

        return verify.run
    if name == "wrap":
        from bench import wrap  # noqa: PLC0415

        return wrap.run
    if name == "storm":
        from bench import storm  # noqa: PLC0415

        return lambda budget: storm.run(
            budget, enclaves=args.enclaves, profile=args.profile, workers=args.workers
        )
    if name == "replicas":
        from bench import replicas  # noqa: PLC0415

        return lambda budget: replicas.run(budget, enclaves=args.enclaves)
    from bench import release  # noqa: PLC0415

    return lambda budget: release.run(budget, mode=args.server)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny bounded counts: checks that everything runs"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--server",
        choices=("subprocess", "inproc"),
        default="subprocess",
        help="release: broker as a child process (default; its own CPU time) or in this process",
    )
    parser.add_argument(
        "--enclaves",
        type=int,
        metavar="N",
        help="storm, replicas: enclaves in the boot storm (default 10,000; with --smoke "
        "100 for storm, 60 for replicas)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="storm: the broker's worker processes (default: one per CPU)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="storm: record the broker with py-spy during the boot storm (.svg, or .txt raw)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    quiet_known_warnings()
    budget = Budget.smoke() if args.smoke else Budget.full()
    selected = [name for name in BENCHMARKS if not args.only or name in args.only]
    print(
        f"# broker benchmarks ({'smoke' if args.smoke else 'full'}) on "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {datetime.now(UTC).isoformat(timespec='seconds')}",
        flush=True,
    )
    results: list[Result] = []
    started = time.perf_counter()
    for name in selected:
        began = time.perf_counter()
        try:
            result = _runner(name, args)(budget)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
            result = Result(name=name, title="failed", columns=[])
            result.errors.append(f"{type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
        result.extra["seconds"] = round(time.perf_counter() - began, 2)
        results.append(result)
        print("\n" + render(result) + f"\n  ({result.extra['seconds']} s)", flush=True)
    failed = [r.name for r in results if r.errors]
    print(f"\n# done in {time.perf_counter() - started:.1f} s; errors in: {failed or 'none'}")
    if args.json is not None:
        payload: dict[str, Any] = {
            "smoke": args.smoke,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "benchmarks": {r.name: r.to_dict() for r in results},
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
