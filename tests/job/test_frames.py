"""``frames``: the first frame or page of a file, or every one as an image of its own.

Real animated GIF, WebP and PNG files and a multi-page TIFF, three frames each, written by
Pillow and tifffile; whole jobs on a real local cluster; the frames told apart by their pixels.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from numpy.typing import NDArray
from PIL import Image

from pipeline import compress, open_store, reconstruct
from pipeline.api import repair, verify_store
from pipeline.job.progress import Progress
from pipeline.outputs.report import _original
from pipeline.store.location import Location
from pipeline.store.write import list_store
from tests.oracles import photo_psnr

FAST = {"colors": 16, "sample": 1000, "chunk": 32}

#: File name -> whether its frames are pages.
FILES = {"anim.gif": False, "anim.webp": False, "anim.png": False, "pages.tif": True}


def frames_of(photo: NDArray[np.uint8]) -> list[NDArray[np.uint8]]:
    """Three pictures that differ everywhere: the photo, turned round and recoloured, negative."""
    return [photo, np.ascontiguousarray(photo[::-1, ::-1, [2, 0, 1]]), 255 - photo]


def write(folder: Path, name: str, frames: list[NDArray[np.uint8]]) -> str:
    path = folder / name
    if name.endswith(".tif"):
        tifffile.imwrite(path, np.stack(frames), photometric="rgb")
    else:
        first, *rest = (Image.fromarray(frame) for frame in frames)
        extra = {"lossless": True} if name.endswith(".webp") else {}
        first.save(path, save_all=True, append_images=rest, duration=100, loop=0, **extra)
    return str(path)


def decoded(path: str, frame: int) -> NDArray[np.uint8]:
    """Frame ``frame`` as an independent decoder gives it (a GIF's palette and all), RGB."""
    if path.endswith(".tif"):
        return tifffile.imread(path, key=frame)
    return np.asarray(iio.imread(path, index=frame))[:, :, :3]


def closest(rebuilt: NDArray[np.uint8], path: str) -> tuple[int, list[float]]:
    """Which of the file's frames ``rebuilt`` is closest to, and its PSNR against each."""
    scores = [photo_psnr(decoded(path, i), rebuilt) for i in range(3)]
    return int(np.argmax(scores)), scores


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_photo) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("frames")
    crop = np.ascontiguousarray(small_photo[:60, :80])
    paths = {name: write(folder, name, frames_of(crop)) for name in FILES}
    Image.fromarray(crop).save(folder / "single.png")
    paths["single.png"] = str(folder / "single.png")
    return paths


@pytest.mark.parametrize("name", list(FILES))
def test_first_frame_is_one_image_that_records_its_frames(store, files, name):
    (result,) = compress([files[name]], store, **FAST)
    assert result.status == "done", result.error
    assert result.name == name
    source = result.attrs["source"]
    assert (source["frame"], source["frames"]) == (0, 3)
    kind = "page" if FILES[name] else "frame"
    assert f"{kind} 1 of 3" in source["conversion"]
    best, scores = closest(reconstruct(store, name).compute(), files[name])
    assert best == 0, scores
    assert scores[0] > 25, scores


def test_every_frame_is_an_image_of_its_own_and_reruns_redo_only_what_is_missing(
    store, files, client
):
    paths = list(files.values())
    sizes: list[tuple[int, int]] = []
    job = compress(paths, store, client=client, frames="all", on_start=_record(sizes), **FAST)
    results = {r.name: r for r in job}
    # the count grows as files of several frames are found; the bytes stay those of the files
    assert [images for images, _ in sizes] == [5, 7, 9, 11, 13]
    assert {size for _, size in sizes} == {sum(Path(p).stat().st_size for p in paths)}
    expected = {
        f"{name}.{'page' if paged else 'frame'}-{i}": (name, i - 1)
        for name, paged in FILES.items()
        for i in (1, 2, 3)
    }
    assert set(results) == {*expected, "single.png"}
    assert all(r.status == "done" for r in results.values()), [r.error for r in results.values()]
    assert results["single.png"].attrs["source"]["frames"] == 1
    for image, (name, frame) in expected.items():
        source = results[image].attrs["source"]
        assert (source["frame"], source["frames"]) == (frame, 3)
        best, scores = closest(reconstruct(store, image).compute(), files[name])
        assert best == frame, (image, scores)
        others = [s for i, s in enumerate(scores) if i != frame]
        assert scores[frame] > max(others) + 10, (image, scores)
    # a file's bytes are shared among its frames
    gif = [results[f"anim.gif.frame-{i}"].size for i in (1, 2, 3)]
    assert sum(gif) == Path(files["anim.gif"]).stat().st_size

    again = compress(paths, store, client=client, frames="all", **FAST)
    assert len(again) == 13
    assert {r.status for r in again} == {"skipped"}

    shutil.rmtree(Path(store) / "anim.webp.frame-2")
    third = {r.name: r.status for r in compress(paths, store, frames="all", **FAST)}
    assert third.pop("anim.webp.frame-2") == "done"
    assert set(third.values()) == {"skipped"}
    assert closest(reconstruct(store, "anim.webp.frame-2").compute(), files["anim.webp"])[0] == 1


def test_large_path_reads_the_frame_too(store, files):
    large = {"batch_bytes": 0, "batch_pixels": 0}
    results = compress([files["pages.tif"]], store, running=large, frames="all", **FAST)
    assert sorted(r.name for r in results) == [f"pages.tif.page-{i}" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        rebuilt = reconstruct(store, f"pages.tif.page-{i}").compute()
        assert closest(rebuilt, files["pages.tif"])[0] == i - 1


def test_a_frame_name_never_takes_a_real_files_name(tmp_path, store, files, small_photo):
    folder = tmp_path / "clash"
    folder.mkdir()
    shutil.copy(files["anim.gif"], folder / "anim.gif")
    Image.fromarray(small_photo[:30, :40]).save(folder / "anim.gif.frame-2", format="PNG")
    given = [str(folder / "anim.gif"), str(folder / "anim.gif.frame-2")]  # listed: not by name
    names = {r.name for r in compress(given, store, frames="all", **FAST)}
    assert "anim.gif.frame-2" in names  # the real file keeps its name
    assert {"anim.gif.frame-1", "anim.gif.frame-3"} <= names
    (tagged,) = names - {"anim.gif.frame-1", "anim.gif.frame-2", "anim.gif.frame-3"}
    assert tagged.startswith("anim.gif~")
    assert tagged.endswith(".frame-2")
    assert open_store(store)[tagged].attrs["source"]["frame"] == 1


def test_report_and_repair_read_the_recorded_frame(store, files):
    compress([files["anim.gif"]], store, frames="all", **FAST)
    for i in (1, 2, 3):
        original, problem = _original(open_store(store)[f"anim.gif.frame-{i}"])
        assert problem is None
        assert np.array_equal(original.compute(), decoded(files["anim.gif"], i - 1))

    before = list_store(Location.at(store)).complete
    labels = Path(store) / "anim.gif.frame-3" / "labels"
    kept = zarr_labels(store, "anim.gif.frame-3")
    (labels / "c" / "1" / "1").unlink()
    damaged = [f for f in verify_store(store) if f.problems]
    assert [f.name for f in damaged] == ["anim.gif.frame-3"]
    ((_finding, result),) = list(repair(store, damaged))
    assert result is not None
    assert result.status == "done", result.error
    assert result.attrs["source"]["frame"] == 2
    assert np.array_equal(zarr_labels(store, "anim.gif.frame-3"), kept)
    assert list_store(Location.at(store)).complete == before  # same markers: reruns skip it
    rerun = compress([files["anim.gif"]], store, frames="all", **FAST)
    assert {r.status for r in rerun} == {"skipped"}


def zarr_labels(store: str, name: str) -> NDArray[np.generic]:
    return np.asarray(open_store(store)[name].labels[...])


def _record(calls: list[tuple[int, int]]):
    return lambda images, size: calls.append((images, size))


def test_progress_grows_its_count_and_keeps_its_clock():
    progress = Progress(io.StringIO(), live=False)
    progress.start(2, 10)
    started = progress.started
    progress.start(4, 10)
    assert (progress.images, progress.bytes, progress.started) == (4, 10, started)
