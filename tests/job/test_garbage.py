"""Garbage collection paused while a process imports the job's libraries."""

import gc
import subprocess
import sys
import threading

import pytest

from pipeline.job import garbage


def paused() -> bool:
    """Whether automatic collection is off (a first threshold of zero)."""
    return gc.get_threshold()[0] == 0


@pytest.fixture
def collecting():
    assert gc.isenabled()
    assert not paused()
    yield
    gc.enable()


def test_overlapping_pauses_from_two_threads_collect_nothing_until_the_last_ends(
    collecting, monkeypatch
):
    monkeypatch.setattr(garbage, "_freeze", True)  # as in the pipeline's own processes
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
    assert paused()
    assert gc.get_freeze_count() <= frozen  # (a frozen object may be freed meanwhile)
    kept = [[]]  # an object created during the pauses
    leave.set()
    thread.join()
    assert not paused()
    assert gc.get_freeze_count() > frozen  # the objects so far, among them the one above
    assert kept


def test_in_someone_elses_process_the_pauses_freeze_nothing(collecting, monkeypatch):
    """The Python API in a notebook: the user's objects must stay collectable."""
    monkeypatch.setattr(garbage, "_freeze", False)
    frozen = gc.get_freeze_count()
    with garbage.collection_paused():
        assert paused()
    assert not paused()
    assert gc.get_freeze_count() <= frozen  # (a frozen object may be freed meanwhile)


def test_a_pause_leaves_collection_off_if_it_was_off_before(collecting):
    gc.disable()
    with garbage.collection_paused():
        assert paused()
    assert not gc.isenabled()
    assert not paused()


def test_dask_arrays_sliced_after_a_pause_leave_collection_on():
    """dask.array.slicing imported during a pause: its ``disable_gc`` decorator records at
    import whether collection was enabled, and enables it again after each call only if so."""
    check = (
        "import gc\n"
        "from pipeline.job.garbage import collection_paused\n"
        "with collection_paused():\n"
        "    import dask.array as da\n"
        "da.ones((10, 10), chunks=5)[2:7, 3]\n"
        "assert gc.isenabled() and gc.get_threshold()[0] > 0, gc.get_threshold()\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_a_pause_ends_when_its_block_raises(collecting):
    with pytest.raises(ValueError, match="in the block"), garbage.collection_paused():
        raise ValueError("in the block")
    assert not paused()


def test_the_warm_up_pauses_for_dask_ml_only_not_while_kernels_load(collecting, monkeypatch):
    """A first run compiles the kernels for tens of seconds, and numba's compiler makes garbage
    that a pause would keep for good: only the import of dask-ml is paused."""
    from pipeline.job import preload
    from pipeline.quantize import assign, lloyd

    importing, labelling = [], []
    real = lloyd.dask_ml_k_means

    def imported():
        importing.append(paused())
        return real()

    monkeypatch.setattr(lloyd, "dask_ml_k_means", imported)
    monkeypatch.setattr(assign, "label_block", lambda *args: labelling.append(paused()))
    preload.warm_up()
    preload.warm_up_meanwhile().join()
    assert importing.count(True) == 2  # once per warm-up; then the fits' own calls
    assert labelling
    assert not any(labelling)
    assert not paused()
