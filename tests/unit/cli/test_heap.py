import gc
from collections.abc import Iterator

import pytest

from broker.cli.heap import GC_THRESHOLDS, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_survivors_and_raises_thresholds() -> None:
    settle_heap()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == GC_THRESHOLDS
