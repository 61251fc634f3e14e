"""Command line: run one harness in-process, or every harness in its own process.

libFuzzer exits the process when it finishes, so each harness needs one.
Where atheris is not installed, a seeded random mutator stands in for it
(no coverage guidance, same pass/crash rule).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SECONDS = 60


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--target", help="one harness (default: all, one process each)")
    parser.add_argument("--seconds", type=int, help=f"time budget per harness ({DEFAULT_SECONDS})")
    parser.add_argument("--runs", type=int, help="number of inputs per harness")
    parser.add_argument("--artifacts", type=Path, help="where crashing inputs are written")
    parser.add_argument("--list", action="store_true", help="print the harness names")
    parser.add_argument("--no-atheris", action="store_true", help="use the random mutator")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        from fuzz.targets import TARGETS  # noqa: PLC0415 - keeps instrumentation optional

        print("\n".join(TARGETS))
        return 0
    if args.seconds is None and args.runs is None:
        args.seconds = DEFAULT_SECONDS
    artifacts = args.artifacts or Path(tempfile.gettempdir()) / "broker-fuzz-artifacts"
    if args.target is None:
        return _run_all(args, artifacts)
    use_atheris = not args.no_atheris and importlib.util.find_spec("atheris") is not None
    runner = _run_atheris if use_atheris else _run_random
    return runner(args.target, args.seconds, args.runs, artifacts / args.target)


def _run_all(args: argparse.Namespace, artifacts: Path) -> int:
    from fuzz.targets import TARGETS  # noqa: PLC0415 - keeps instrumentation optional

    failed = []
    for name in TARGETS:
        command = [sys.executable, "-m", "fuzz", "--target", name, "--artifacts", str(artifacts)]
        for flag, value in (("--seconds", args.seconds), ("--runs", args.runs)):
            if value is not None:
                command += [flag, str(value)]
        if args.no_atheris:
            command.append("--no-atheris")
        print(f"== {name}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:  # noqa: S603 - our own module
            failed.append(name)
    print("crashed: " + ", ".join(failed) if failed else "no crashes")
    return 1 if failed else 0


def _seed_corpus(name: str) -> Path:
    from fuzz.targets import TARGETS  # noqa: PLC0415 - imported after instrumentation

    folder = Path(tempfile.mkdtemp(prefix=f"broker-fuzz-{name}-"))
    for seed in TARGETS[name].seeds():
        (folder / hashlib.sha256(seed).hexdigest()[:16]).write_bytes(seed)
    return folder


def _run_atheris(name: str, seconds: int | None, runs: int | None, artifacts: Path) -> int:
    import atheris  # noqa: PLC0415 - optional dependency

    with atheris.instrument_imports(include=["broker", "joserfc"]):
        from fuzz.targets import TARGETS, one_input  # noqa: PLC0415

    if name not in TARGETS:
        print(f"unknown target {name!r}; try --list", file=sys.stderr)
        return 2
    artifacts.mkdir(parents=True, exist_ok=True)
    flags = [f"-artifact_prefix={artifacts}/", "-timeout=30", "-rss_limit_mb=4096"]
    if seconds is not None:
        flags.append(f"-max_total_time={seconds}")
    if runs is not None:
        flags.append(f"-runs={runs}")
    atheris.Setup([sys.argv[0], *flags, str(_seed_corpus(name))], one_input(TARGETS[name]))
    atheris.Fuzz()  # exits the process: 0 when the budget ran out, non-zero on a crash
    return 0


def _run_random(name: str, seconds: int | None, runs: int | None, artifacts: Path) -> int:
    from fuzz.targets import TARGETS, one_input  # noqa: PLC0415

    if name not in TARGETS:
        print(f"unknown target {name!r}; try --list", file=sys.stderr)
        return 2
    run = one_input(TARGETS[name])
    corpus = TARGETS[name].seeds() or [b""]
    rng = random.Random(0)  # noqa: S311 - reproducible mutations, not secrets
    deadline = time.monotonic() + (seconds if seconds is not None else 1e12)
    count = 0
    while time.monotonic() < deadline and (runs is None or count < runs):
        data = _mutate(rng, rng.choice(corpus))
        count += 1
        try:
            run(data)
        except Exception:
            artifacts.mkdir(parents=True, exist_ok=True)
            path = artifacts / f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
            path.write_bytes(data)
            print(f"crash after {count} inputs; input written to {path}", file=sys.stderr)
            raise
    print(f"{name}: {count} inputs, no crash")
    return 0


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del buf[at : at + rng.randint(1, 64)]
        else:
            buf[at:at] = rng.choice([b"\x00" * 8, b"\xff" * 8, b'"', b"{", b"[", b"-1", b"1e999"])
    return bytes(buf)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
