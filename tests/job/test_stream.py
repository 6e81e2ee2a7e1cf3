"""The streaming job: batching, bounded work in flight, resuming from listings, fencing.

Real local clusters, real stores and image files. What a batch or a bound changes is how work
is cut into tasks, never a stored byte.
"""

import shutil
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from pipeline.api import stream
from pipeline.inputs.sources import probe
from pipeline.job.tasks import Job, Spec, compress_whole, failure
from pipeline.settings import Settings
from pipeline.store import lease
from pipeline.store.fence import Fenced
from pipeline.store.lease import Fence
from pipeline.store.location import Location
from pipeline.store.write import COMPLETE, list_store, open_root
from tests.conftest import store_files

FAST = {"colors": 16, "sample": 500}


@pytest.fixture(scope="module")
def crops(tmp_path_factory, china):
    """24 small PNG crops and one 700x500 JPEG (over the batch limits set below)."""
    folder = tmp_path_factory.mktemp("crops")
    for i in range(24):
        y, x = (i * 37) % 300, (i * 53) % 500
        iio.imwrite(folder / f"c{i:02d}.png", china[y : y + 40 + i, x : x + 64])
    iio.imwrite(folder / "big.jpg", china[:, :, :][::-1][:400, :600], quality=90)
    return folder


def run_job(inputs, store, client=None, running=None, **settings):
    return list(stream(inputs, str(store), client=client, running=running, **FAST, **settings))


@pytest.mark.slow
def test_batching_and_bounds_do_not_change_a_byte(tmp_path, crops, client):
    inputs = [str(crops)]
    ways = {
        "in-process": ({}, None),
        "default": ({}, client),
        "one-per-task": ({"batch_images": 1, "in_flight": 1}, client),
        "all-large": ({"batch_bytes": 0}, client),  # every file gets a chunked graph
        "small-batch-pixels": ({"batch_pixels": 1000}, client),  # deferred out of batches
    }
    stores = {}
    for label, (running, using) in ways.items():
        store = tmp_path / f"{label}.zarr"
        results = run_job(inputs, store, client=using, running=running, chunk=32)
        assert sorted(r.status for r in results) == ["done"] * 25, label
        stores[label] = store_files(store)
    reference = stores.pop("in-process")
    assert len(reference) > 25 * 2
    for label, content in stores.items():
        assert content == reference, label


@pytest.mark.slow
def test_work_in_flight_is_bounded_and_images_finish_in_order(tmp_path, crops, client):
    seen: list[int] = []
    stop = threading.Event()

    def unfinished(dask_scheduler):
        return sum(
            ts.state not in ("memory", "released", "forgotten", "erred")
            for ts in dask_scheduler.tasks.values()
        )

    def watch():
        while not stop.is_set():
            seen.append(client.run_on_scheduler(unfinished))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = run_job(
            [str(crops / "c*.png")],
            tmp_path / "s.zarr",
            client,
            {"batch_images": 1, "in_flight": 1},
        )
    finally:
        stop.set()
        watcher.join()
    assert [r.status for r in results] == ["done"] * 24
    threads = sum(client.nthreads().values())
    assert max(seen) <= threads  # one batch task per thread at most
    order = [int(r.name[1:3]) for r in results]
    assert all(abs(done - i) <= 2 * threads for i, done in enumerate(order))


def test_a_rerun_learns_what_is_complete_from_the_listing(tmp_path, crops):
    store = tmp_path / "s.zarr"
    first = run_job([str(crops / "c0*.png")], store)
    assert {r.status for r in first} == {"done"}
    listing = list_store(Location.at(str(store)))
    assert set(listing.complete) == {r.name for r in first} == set(listing.groups)
    # the listing vouches for complete images; their group's and labels' documents, read in
    # batches, must agree: a damaged one is redone, the others skipped without their attributes
    (store / "c00.png" / "zarr.json").write_text("not json")
    again = {r.name: r for r in run_job([str(crops / "c0*.png")], store)}
    assert again.pop("c00.png").status == "done"
    assert {r.status for r in again.values()} == {"skipped"}
    assert all(r.attrs is None for r in again.values())


def test_a_store_without_markers_is_read_once_and_healed(tmp_path, crops):
    store = tmp_path / "s.zarr"
    run_job([str(crops / "c0*.png")], store)
    shutil.rmtree(store / COMPLETE)  # as a store written before completion markers
    again = run_job([str(crops / "c0*.png")], store)
    assert {r.status for r in again} == {"skipped"}
    assert set(list_store(Location.at(str(store))).complete) == {r.name for r in again}


def test_an_image_left_writing_is_redone(tmp_path, crops):
    store = tmp_path / "s.zarr"
    run_job([str(crops / "c01.png")], store)
    open_root(Location.at(str(store)), mode="a")["c01.png"].attrs["status"] = "writing"
    shutil.rmtree(store / COMPLETE)
    assert [r.status for r in run_job([str(crops / "c01.png")], store)] == ["done"]


def test_a_deposed_job_writes_nothing(tmp_path, crops):
    store = str(tmp_path / "s.zarr")
    open_root(Location.at(store), mode="a")
    path = str(crops / "c02.png")
    with lease.hold(Location.at(store), ttl=30) as held:
        deposed = Fence(Location.at(store), "another-run", held.epoch - 1, margin=10.0)
        job = Job(
            Location.at(store).fenced(deposed),
            Settings.from_config(**FAST),
            "another-run",
            4_194_304,
        )
        spec = Spec("c02.png", path, token="t", key="0" * 16)
        found = probe(path)
        with pytest.raises(Fenced) as info:
            compress_whole(job, spec, found, np.asarray(iio.imread(path)))
        outcome = failure(info.value)
    assert outcome.line(path) == (
        f"{store}: this job no longer holds the store (run {held.run} holds it now);"
        " nothing more written"
    )
    assert outcome.detail is None
    assert "c02.png" not in open_root(Location.at(store))  # not even its group was made
    assert list_store(Location.at(store)).complete == {}


def test_a_failing_image_is_one_line_and_the_batch_goes_on(tmp_path, crops):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        shutil.copy(crops / "c03.png", folder / name)
    data = (crops / "big.jpg").read_bytes()
    (folder / "b.jpg").write_bytes(data[: len(data) // 3])  # truncated
    results = {r.name: r for r in run_job([str(folder)], tmp_path / "s.zarr")}
    assert results["a.png"].status == results["c.png"].status == "done"
    bad = results["b.jpg"]
    assert bad.status == "failed"
    assert bad.error.startswith(f"{folder / 'b.jpg'}: cannot decode image")
    assert "\n" not in bad.error
    assert bad.detail is None  # an expected problem: no traceback kept
    assert "b.jpg" not in open_root(Location.at(str(tmp_path / "s.zarr")))


def test_names_that_do_not_map_as_they_are_are_escaped_not_merged(tmp_path, crops):
    folder = tmp_path / "odd"
    (folder / "x").mkdir(parents=True)
    (folder / "y").mkdir()
    long = "L" * 247 + ".png"
    names = ["..\\x.png", "back\\slash.png", "dup.png", "\\dup.png", "zarr.json", "A.png", "a.png"]
    for name in names:
        shutil.copy(crops / "c04.png", folder / name)
    for sub in ("x", "y"):
        shutil.copy(crops / "c05.png", folder / sub / long)
    inputs = [str(folder / n) for n in names] + [str(folder / s / long) for s in ("x", "y")]
    results = run_job(inputs, tmp_path / "s.zarr")
    assert [r.status for r in results] == ["done"] * len(inputs)
    stored = {r.name for r in results}
    assert len(stored) == len(inputs)
    root = open_root(Location.at(str(tmp_path / "s.zarr")))
    assert all("/" not in n and "\\" not in n and len(n.encode()) <= 200 for n in stored)
    assert "back%5Cslash.png" in stored
    assert {"dup.png", "%5Cdup.png"} <= stored
    assert "zarr.json" not in stored
    assert all(root[n].attrs["status"] == "complete" for n in stored)
    sources = {root[n].attrs["source"]["path"] for n in stored}
    assert sources == {str(Path(p).absolute()) for p in inputs}
