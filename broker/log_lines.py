"""Log lines written in batches: one write per event-loop turn, not one per line.

Usage (``configure_logging`` does this)::

    structlog.configure(logger_factory=lambda *_: BatchedBytesLogger(sys.stderr.buffer), ...)

A busy worker logs one line per request, dozens per loop turn; a write and
flush each cost as much as the rest of the line. Lines logged on the event
loop's thread are queued and written together by a callback the loop runs at
its next turn, in the order they were logged. A line logged where no loop
runs (start-up, shutdown, another thread) is written at once, after whatever
is queued, so the order on the file is the order of logging. What is queued
is also written at interpreter exit; only a process killed outright loses the
lines of its last loop turn.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from typing import BinaryIO

__all__ = ["BatchedBytesLogger", "LineBatcher", "batcher_for"]


class LineBatcher:
    """The queue of lines for one binary file; thread-safe."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        # The loop a flush is queued on. A loop may stop before it runs the
        # callback (the end of a test, say): then the next loop queues its own.
        self._scheduled: asyncio.AbstractEventLoop | None = None

    def write(self, line: bytes) -> None:
        """Queues ``line`` (no newline) for the next loop turn, or writes it now
        when the caller is not on a running event loop."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append(line)
            if loop is None:
                self._write_pending()
            elif self._scheduled is not loop:
                self._scheduled = loop
                loop.call_soon(self.flush)

    def flush(self) -> None:
        """Writes every queued line."""
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        self._scheduled = None
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self._file.write(b"\n".join(lines) + b"\n")
            self._file.flush()
        except (OSError, ValueError):
            # A closed or broken stderr must not take the request down with it.
            pass


_BATCHERS: weakref.WeakKeyDictionary[BinaryIO, LineBatcher] = weakref.WeakKeyDictionary()
_BATCHERS_LOCK = threading.Lock()


def batcher_for(file: BinaryIO) -> LineBatcher:
    """The one batcher of ``file``: every logger writing there shares its queue."""
    with _BATCHERS_LOCK:
        batcher = _BATCHERS.get(file)
        if batcher is None:
            batcher = _BATCHERS[file] = LineBatcher(file)
        return batcher


@atexit.register
def _flush_all() -> None:
    with _BATCHERS_LOCK:
        batchers = list(_BATCHERS.values())
    for batcher in batchers:
        batcher.flush()


class BatchedBytesLogger:
    """A structlog logger for renderers that return bytes, writing through a batcher."""

    __slots__ = ("_batcher",)

    def __init__(self, file: BinaryIO) -> None:
        self._batcher = batcher_for(file)

    def msg(self, message: bytes) -> None:
        self._batcher.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg
