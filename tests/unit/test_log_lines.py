"""Log lines are written once per loop turn, in the order they were logged."""

from __future__ import annotations

import asyncio
import io
import threading

from broker.log_lines import BatchedBytesLogger, LineBatcher, batcher_for


class CountingFile(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_without_a_running_loop_a_line_is_written_at_once() -> None:
    out = CountingFile()
    LineBatcher(out).write(b'{"event":"a"}')
    assert out.getvalue() == b'{"event":"a"}\n' and out.writes == 1


async def test_on_the_loop_lines_wait_for_the_next_turn_and_go_out_in_one_write() -> None:
    out = CountingFile()
    batcher = LineBatcher(out)
    for n in range(5):
        batcher.write(b"%d" % n)
    assert out.getvalue() == b""
    await asyncio.sleep(0)
    assert out.getvalue() == b"0\n1\n2\n3\n4\n" and out.writes == 1


async def test_a_line_from_another_thread_follows_the_queued_ones() -> None:
    out = CountingFile()
    batcher = LineBatcher(out)
    batcher.write(b"loop")
    thread = threading.Thread(target=batcher.write, args=(b"thread",))
    thread.start()
    thread.join()
    assert out.getvalue() == b"loop\nthread\n"
    await asyncio.sleep(0)
    assert out.getvalue() == b"loop\nthread\n"


def test_a_loop_that_stops_before_its_flush_does_not_strand_later_lines() -> None:
    out = CountingFile()
    batcher = LineBatcher(out)

    async def log(line: bytes) -> None:
        batcher.write(line)

    first = asyncio.new_event_loop()
    first.run_until_complete(log(b"first"))  # stops before the queued flush runs
    first.close()
    second = asyncio.new_event_loop()
    second.run_until_complete(log(b"second"))
    second.run_until_complete(asyncio.sleep(0))
    second.close()
    assert out.getvalue() == b"first\nsecond\n"


def test_a_closed_file_is_not_an_error() -> None:
    out = io.BytesIO()
    out.close()
    LineBatcher(out).write(b"lost")


def test_loggers_of_one_file_share_one_queue() -> None:
    out = CountingFile()
    assert batcher_for(out) is batcher_for(out)
    BatchedBytesLogger(out).info(b"a")
    BatchedBytesLogger(out).error(b"b")
    assert out.getvalue() == b"a\nb\n"
