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


def test_the_warm_up_pauses_for_dask_ml_only_not_while_kernels_load(collecting, monkeypatch):
    """A first run compiles the kernels for tens of seconds, and numba's compiler makes garbage
    that a pause would keep for good: only the import of dask-ml is paused."""
    from pipeline.job import preload
    from pipeline.quantize import assign, lloyd

    importing, labelling = [], []
    real = lloyd.dask_ml_k_means

    def imported():
        importing.append(gc.isenabled())
        return real()

    monkeypatch.setattr(lloyd, "dask_ml_k_means", imported)
    monkeypatch.setattr(assign, "label_block", lambda *args: labelling.append(gc.isenabled()))
    preload.warm_up()
    preload.warm_up_meanwhile().join()
    assert importing.count(False) == 2  # once per warm-up; then the fits' own calls
    assert labelling
    assert all(labelling)
    assert gc.isenabled()
