"""Disk full and failed writes: one line per image, or one line and a stop for the whole store.

Stores sit on real small tmpfs filesystems mounted by the tests (root only: skipped elsewhere),
inputs beside them in tmp_path. tmpfs counts whole 4 KiB pages: the root and the lease take 4,
each of the noisy images below about 8 (three for its labels chunk).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from pipeline.api import stream
from pipeline.errors import StoreUnwritable
from pipeline.inputs.sources import probe, read_whole
from pipeline.job.tasks import (
    Job,
    Spec,
    StoreWriteError,
    create_task,
    finish,
    finish_task,
    fit_block,
    label_task,
    recorded,
)
from pipeline.settings import Settings
from pipeline.store import lease
from pipeline.store.location import Location
from pipeline.store.read import scan
from pipeline.store.write import COMPLETE, list_store, open_root, prepare

SETTINGS = {"colors": 64, "sample": 500}
PAGE = 4096
#: Room for the root, the lease and three of the noisy images, not all eight.
TIGHT = "128k"


class Tmpfs:
    """A tmpfs mounted at ``path`` for one test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def remount(self, *options: str) -> None:
        mount("-o", ",".join(("remount", *options)), str(self.path))

    def fill(self) -> None:
        """Take all free space with a file of zeros."""
        with open(self._filler, "ab", buffering=0) as file:
            try:
                while True:
                    file.write(bytes(PAGE))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Tmpfs]]:
    """Mount tmpfs filesystems: ``tmpfs(size, where=None)``; unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def make(size: str, where: Path | None = None) -> Tmpfs:
        path = where or tmp_path / f"disk{len(mounted)}"
        path.mkdir(exist_ok=True)
        try:
            mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot mount a tmpfs here: {getattr(exc, 'stderr', exc)}")
        mounted.append(path)
        return Tmpfs(path)

    yield make
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory, china: np.ndarray) -> Path:
    """Eight 96 x 128 crops of china.jpg with noise, so that their labels hardly compress."""
    folder = tmp_path_factory.mktemp("noisy")
    rng = np.random.default_rng(0)
    for i in range(8):
        crop = china[i * 40 : i * 40 + 96, i * 60 : i * 60 + 128].astype(int)
        crop += rng.integers(-20, 21, crop.shape)
        iio.imwrite(folder / f"n{i}.png", np.clip(crop, 0, 255).astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, noisy: Path) -> dict[str, tuple]:
    """Palette and labels of every noisy image, from an undisturbed run into a roomy store."""
    store = str(tmp_path_factory.mktemp("roomy") / "out.zarr")
    assert {r.status for r in stream([str(noisy)], store, **SETTINGS)} == {"done"}
    return complete_images(store)


def complete_images(store: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Palette and labels of each image marked complete, checking it has every chunk.

    Groups are found as the package's readers find them (a listing, each group read on its
    own): a job stopped on a full disk may leave a group folder without its metadata, which
    zarr's own walk of the hierarchy cannot step over.
    """
    images = {}
    for entry in scan(Location.at(store)):
        if entry.attrs is None or entry.attrs["status"] != "complete":
            continue
        name = entry.name
        group = zarr.open_group(store, path=name, mode="r", zarr_format=3)
        labels, palette = group["labels"], group["palette"]
        assert labels.nchunks_initialized == labels.nchunks, name
        assert palette.nchunks_initialized == palette.nchunks, name
        images[name] = (palette[...], labels[...])
    assert set(list_store(Location.at(store)).complete) <= set(
        images
    )  # no marker without its image
    return images


def assert_same(images: dict[str, tuple], reference: dict[str, tuple]) -> None:
    for name, (palette, labels) in images.items():
        assert np.array_equal(palette, reference[name][0]), name
        assert np.array_equal(labels, reference[name][1]), name


def join_left_work() -> None:
    """Wait for the item an in-process job had in flight when it stopped (it ends on its own)."""
    for thread in threading.enumerate():
        if thread.name.startswith("pipeline"):
            thread.join(timeout=60)


def test_a_full_disk_stops_the_job_keeps_what_is_complete_and_a_rerun_finishes(
    tmpfs, noisy, reference
):
    disk = tmpfs(TIGHT)
    store = str(disk.path / "out.zarr")
    results = []
    with pytest.raises(StoreUnwritable) as stopped:
        results.extend(stream([str(noisy)], store, **SETTINGS))
    join_left_work()
    assert str(stopped.value) == (
        f"{store}: the store can no longer be written: [Errno 28] No space left on device"
    )
    done = {r.name for r in results if r.status == "done"}
    failed = [r for r in results if r.status == "failed"]
    assert 1 <= len(done) < 8
    assert failed, "the image that met the full disk is reported"
    for result in failed:
        assert result.error == (
            f"{noisy / result.name}: cannot write to the store: [Errno 28] No space left on device"
        )
    kept = complete_images(store)
    assert done <= set(kept)  # the item in flight at the stop may have completed one more
    assert_same(kept, reference)
    assert not list(disk.path.glob("*.tmp"))  # no lease write left a file behind

    disk.remount("size=2m")
    again = list(stream([str(noisy)], store, **SETTINGS))
    assert {r.name for r in again if r.status == "skipped"} == set(kept)
    assert {r.status for r in again} <= {"done", "skipped"}
    final = complete_images(store)
    assert set(final) == set(reference)
    assert_same(final, reference)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline", "run", *args, "--workers", "1"]
    options = ["-k", str(SETTINGS["colors"]), "--sample", str(SETTINGS["sample"])]
    return subprocess.run(
        command + options, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
def test_the_command_line_says_one_line_then_the_summary_and_exits_1(
    tmpfs, tmp_path, noisy, reference
):
    disk = tmpfs(TIGHT)
    store = disk.path / "out.zarr"
    done = run_cli(str(noisy), "-o", str(store), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    stops = [line for line in done.stderr.splitlines() if "can no longer be written" in line]
    assert len(stops) == 1, done.stderr
    (stop,) = stops
    assert stop.startswith(
        f"error: {store}: the store can no longer be written: [Errno 28] No space left on device;"
        " stopped, "
    )
    assert stop.endswith("images not done (run again once the store can be written)")
    reported = [line for line in done.stderr.splitlines() if ": done after" in line]
    assert 1 <= len(reported) < 8
    assert f"{len(reported)} done, 0 skipped" in done.stdout  # the summary of what was done
    kept = complete_images(str(store))
    assert len(kept) >= len(reported)  # a batch cancelled in flight may have completed one more
    assert_same(kept, reference)

    disk.remount("size=2m")
    again = run_cli(str(noisy), "-o", str(store), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{8 - len(kept)} done, {len(kept)} skipped, 0 failed" in again.stdout
    assert_same(complete_images(str(store)), reference)
    assert set(complete_images(str(store))) == set(reference)


@pytest.mark.slow
def test_a_disk_with_room_for_the_lease_only_is_one_line_and_exit_1(tmpfs, tmp_path, noisy):
    disk = tmpfs("4k")
    done = run_cli(str(noisy), "-o", str(disk.path / "out.zarr"), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {disk.path / 'out.zarr'}: the store can no longer be written: [Errno 28] No space"
        " left on device; stopped, 8 images not done (run again once the store can be written)"
    ]
    assert "0 done, 0 skipped, 0 failed" in done.stdout


def test_a_disk_full_before_the_job_fails_it_taking_the_lease(tmpfs, noisy):
    disk = tmpfs("64k")
    disk.fill()
    store = str(disk.path / "out.zarr")
    with pytest.raises(StoreUnwritable, match="No space left on device"):
        list(stream([str(noisy)], store, **SETTINGS))
    assert sorted(p.name for p in disk.path.iterdir()) == ["filler"]  # nothing left beside it


def test_a_rerun_after_a_disk_too_small_for_the_root_completes(tmpfs, noisy, reference):
    disk = tmpfs("4k")  # the lease takes the only page
    store = str(disk.path / "out.zarr")
    with pytest.raises(StoreUnwritable):
        list(stream([str(noisy)], store, **SETTINGS))
    disk.remount("size=2m")
    assert {r.status for r in stream([str(noisy)], store, **SETTINGS)} == {"done"}
    assert_same(complete_images(store), reference)


def test_a_lease_renewal_on_a_full_disk_gives_the_store_up_and_release_does_not_fail(tmpfs):
    disk = tmpfs("64k")
    store = str(disk.path / "out.zarr")
    with lease.hold(Location.at(store), ttl=1.5) as held:  # renewed every 0.5 s
        disk.fill()
        deadline = time.monotonic() + 5
        while not held.lost() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held.lost()
        assert held.unwritable() == "[Errno 28] No space left on device"
    assert sorted(p.name for p in disk.path.iterdir()) == ["filler"]  # released, nothing left


def test_a_lease_on_a_disk_turned_read_only_is_left_to_expire(tmpfs):
    disk = tmpfs("64k")
    store = str(disk.path / "out.zarr")
    with lease.hold(Location.at(store), ttl=30) as held:
        disk.remount("ro")
    assert lease.holder(Location.at(store)).run == held.run  # could not be removed; no error either
    disk.remount("rw")


def test_a_job_stops_when_only_its_lease_can_no_longer_be_written(tmpfs, tmp_path, noisy):
    # the lease sits beside the store: a full disk there, a roomy one for the store itself
    beside = tmpfs("64k")
    store = beside.path / "out.zarr"
    tmpfs("2m", where=store)
    inputs = [str(noisy / f"n{i}.png") for i in range(8)] * 3
    copies = []
    for i, path in enumerate(inputs):  # 24 inputs: the job outlasts a renewal period
        copy = tmp_path / "in" / f"{i:02d}-{Path(path).name}"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(Path(path).read_bytes())
        copies.append(str(copy))
    job = stream(copies, str(store), running={"lease_seconds": 1}, **SETTINGS)
    results = [next(job)]
    beside.fill()
    with pytest.raises(StoreUnwritable, match=r"\[Errno 28\] No space left on device"):
        results.extend(job)
    join_left_work()
    assert {r.status for r in results} == {"done"}
    assert len(results) < 24
    # the item in flight may have completed one more while the lease was still valid
    assert {r.name for r in results} <= set(complete_images(str(store)))


# The steps of a large image's graph, one by one, so the disk can change between two of them.


@pytest.fixture
def steps(noisy):
    """What the steps of one image's graph need: a job, the image's spec, pixels and fit."""

    def make(store: str) -> tuple[Job, Spec, np.ndarray, object, dict]:
        prepare(Location.at(store), list_store(Location.at(store)))
        job = Job(Location.at(store), Settings.from_config(**SETTINGS), "run", 4_194_304)
        path = str(noisy / "n0.png")
        spec = Spec("n0.png", path, token="t", key="0" * 16, fresh=True)
        found = probe(path)
        attrs = recorded(found.record(), found.shown, job.settings, job.run)
        pixels = read_whole(found)
        return job, spec, pixels, fit_block(pixels, job.settings), attrs

    return make


@pytest.mark.parametrize("when", ["while labelling", "before finishing"])
def test_a_disk_turned_read_only_never_lets_an_image_be_marked_complete(tmpfs, steps, when):
    disk = tmpfs("1m")
    store = str(disk.path / "out.zarr")
    job, spec, pixels, fit, attrs = steps(store)
    with lease.hold(Location.at(store), run=job.run):
        target = create_task(job, spec, attrs, pixels.shape[:2], (48, 128))
        if when == "while labelling":
            disk.remount("ro")
        try:
            labelled = [label_task(pixels, fit, target, (slice(None), slice(None)), job.settings)]
            disk.remount("ro")
            outcome = finish_task(job, spec, fit, target, labelled, pixels.shape[0] * 128)
        finally:
            disk.remount("rw")
    assert outcome.line(spec.path) == (
        f"{spec.path}: cannot write to the store: [Errno 30] Read-only file system"
    )
    assert outcome.unwritable == "[Errno 30] Read-only file system"
    # it could not be removed: left "writing", never complete, and the next run redoes it
    assert open_root(Location.at(store))["n0.png"].attrs["status"] == "writing"
    assert list_store(Location.at(store)).complete == {}


def test_a_finish_failing_on_a_full_disk_removes_the_image_and_leaves_no_marker(tmpfs, steps):
    disk = tmpfs("1m")
    store = str(disk.path / "out.zarr")
    job, spec, pixels, fit, attrs = steps(store)
    with lease.hold(Location.at(store), run=job.run):
        target = create_task(job, spec, attrs, pixels.shape[:2], (96, 128))
        labelled = [label_task(pixels, fit, target, (slice(None), slice(None)), job.settings)]
        disk.fill()
        with pytest.raises(StoreWriteError, match="No space left on device") as info:
            finish(job, spec, fit, labelled, pixels.shape[0] * 128)
        assert info.value.unwritable == "[Errno 28] No space left on device"
        assert open_root(Location.at(store))["n0.png"].attrs["status"] == "writing"
        outcome = finish_task(job, spec, fit, target, labelled, pixels.shape[0] * 128)
    assert outcome.unwritable == "[Errno 28] No space left on device"
    # Removing works on a full disk. zarr may still finish writes it had in flight when the
    # disk filled once the removal freed space (its concurrent chunk writes go on after the
    # first one fails), so a part of the group may come back: never complete, never marked.
    root = open_root(Location.at(store))
    assert "n0.png" not in root or root["n0.png"].attrs.get("status") != "complete"
    assert list_store(Location.at(store)).complete == {}


def test_a_completion_marker_the_store_refuses_is_removed_with_its_image(tmpfs, steps):
    disk = tmpfs("1m")
    store = disk.path / "out.zarr"
    job, spec, pixels, fit, attrs = steps(str(store))
    markers = tmpfs("4k", where=store / COMPLETE)  # full: only the marker cannot be written
    markers.fill()
    with lease.hold(Location.at(str(store)), run=job.run):
        target = create_task(job, spec, attrs, pixels.shape[:2], (96, 128))
        labelled = [label_task(pixels, fit, target, (slice(None), slice(None)), job.settings)]
        with pytest.raises(StoreWriteError, match="No space left on device"):
            finish(job, spec, fit, labelled, pixels.shape[0] * 128)
        assert open_root(Location.at(str(store)))["n0.png"].attrs["status"] == "complete"
        # its folder was made, its document refused: a folder alone would list as complete
        assert sorted(p.name for p in markers.path.iterdir()) == ["filler"]
        outcome = finish_task(job, spec, fit, target, labelled, pixels.shape[0] * 128)
    assert outcome.line(spec.path) == (
        f"{spec.path}: cannot write to the store: [Errno 28] No space left on device"
    )
    assert "n0.png" not in open_root(Location.at(str(store)))
    assert list_store(Location.at(str(store))).complete == {}


FILE_SIZE_LIMIT = """
import resource, sys
from pipeline.api import stream
inputs, (store, warm, limit) = sys.argv[1:-3], sys.argv[-3:]
list(stream(inputs[:1], warm, colors=256, sample=500))  # compiles (numba caches its code)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
for result in stream(inputs, store, colors=256, sample=500):
    print(result.name, result.status, result.error, sep="|")
"""


def test_a_file_too_large_fails_that_image_only(tmp_path, noisy):
    # A per-file size limit (FAT32's 4 GiB, a ulimit) refuses one image's large labels chunk,
    # not the store: that image fails with one line and the others are stored.
    big = tmp_path / "big.png"
    iio.imwrite(big, np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    inputs = [str(noisy / "n0.png"), str(big), str(noisy / "n1.png")]
    store = tmp_path / "out.zarr"
    limit = 64 * 1024  # the noisy crops' chunks are about 10 KiB, the big one's 256 KiB
    warm = str(tmp_path / "warm.zarr")
    done = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, *inputs, str(store), warm, str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("|", 1) for line in done.stdout.splitlines())
    assert lines == {
        "n0.png": "done|None",
        "big.png": f"failed|{big}: cannot write to the store: [Errno 27] File too large",
        "n1.png": "done|None",
    }
    assert set(complete_images(str(store))) == {"n0.png", "n1.png"}
    assert "big.png" not in open_root(Location.at(str(store)))  # its partial group removed
