"""Garbage collection paused while a process imports the job's libraries."""

import gc
import threading

import pytest

from pipeline.job import garbage


@pytest.fixture
def collecting():
    assert gc.isenabled()
    yield
    gc.enable()


def test_overlapping_pauses_from_two_threads_collect_nothing_until_the_last_ends(collecting):
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with garbage.collection_paused():
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=other)
    garbage.pause()
    thread.start()
    assert entered.wait(30)
    frozen = gc.get_freeze_count()
    garbage.resume()  # the first ends: the other still holds its pause
    assert not gc.isenabled()
    assert gc.get_freeze_count() == frozen
    kept = [[]]  # an object created during the pauses
    leave.set()
    thread.join()
    assert gc.isenabled()
    assert gc.get_freeze_count() > frozen  # the objects so far, among them the one above
    assert kept


def test_a_pause_leaves_collection_off_if_it_was_off_before(collecting):
    gc.disable()
    frozen = gc.get_freeze_count()
    with garbage.collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_a_pause_ends_when_its_block_raises(collecting):
    with pytest.raises(ValueError, match="in the block"), garbage.collection_paused():
        raise ValueError("in the block")
    assert gc.isenabled()


def test_the_warm_up_collects_while_it_loads_the_kernels(collecting, monkeypatch):
    """Only the imports are paused: a first run compiles the kernels for tens of seconds, and
    numba's compiler makes garbage that a pause would keep for good."""
    from pipeline.job import preload

    seen = []
    monkeypatch.setattr(preload, "load_kernels", lambda *args: seen.append(gc.isenabled()))
    preload.warm_up()
    preload.warm_up_meanwhile().join()
    assert seen == [True, True]
    assert gc.isenabled()
