"""What a notebook prints for the objects the public API returns: one short line each.

Real results of ``pipeline.compress``/``compress_array`` (no cluster), a real store opened with
``pipeline.open_store`` and verified with ``pipeline.verify_store``. A palette's values never
appear: printed whole, 128 colours were hundreds of lines per image.
"""

import dataclasses
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from pipeline import compress, compress_array, open_store, verify_store
from pipeline.results import REPR_ERROR, ImageResult

#: Most characters of any repr here.
LONGEST = 160


def one_short_line(text: str) -> str:
    assert "\n" not in text
    assert len(text) <= LONGEST, text
    return text


@pytest.fixture(scope="module")
def stored(tmp_path_factory, small_photo):
    """(store, results): a photo at 128 colours from a file, a failed input, an RGBA array."""
    folder = tmp_path_factory.mktemp("reprs")
    iio.imwrite(folder / "photo.png", small_photo)
    (folder / "broken.png").write_bytes(b"not an image")
    store = str(folder / "s.zarr")
    results = compress([str(folder / "photo.png"), str(folder / "broken.png")], store, chunk=64)
    return store, {r.name: r for r in results}


def test_a_done_result_shows_its_figures_not_its_attributes(stored):
    _, results = stored
    done = results["photo.png"]
    metrics = done.metrics
    text = one_short_line(repr(done))
    assert text == (
        f"ImageResult(name='photo.png', done, {done.attrs['colors']} colours, "
        f"{metrics['psnr_db']:.1f} dB, {metrics['ratio']:.1f}x, {done.seconds:.1f} s)"
    )
    assert done.attrs["colors"] == 128
    assert "rgba" not in text  # the colour table of its OME metadata
    assert str(done) == text
    assert len(repr(list(results.values()))) <= 2 * LONGEST


def test_a_failed_result_shows_its_error_cut_to_one_line(stored):
    _, results = stored
    failed = results["broken.png"]
    text = one_short_line(repr(failed))
    assert text.startswith(f"ImageResult(name='broken.png', failed: {failed.error[:40]}")
    long = dataclasses.replace(failed, error="broken.png: " + "x" * 500)
    cut = one_short_line(repr(long))
    assert f"failed: broken.png: {'x' * (REPR_ERROR - 15)}..., " in cut


def test_results_keep_dataclass_equality(stored):
    _, results = stored
    done = results["photo.png"]
    assert done == dataclasses.replace(done)
    assert done != dataclasses.replace(done, seconds=done.seconds + 1)
    assert ImageResult("a", "a.png", "skipped") == ImageResult("a", "a.png", "skipped")
    assert repr(ImageResult("a", "a.png", "skipped")) == "ImageResult(name='a', skipped, 0.0 s)"


def test_stored_images_show_size_colours_and_labels(stored, tmp_path):
    store, _ = stored
    image = open_store(store)["photo.png"]
    text = one_short_line(repr(image))
    metrics = image.attrs["metrics"]
    assert text == (
        f"StoredImage(name='photo.png', 170x120, 128 colours, {metrics['psnr_db']:.1f} dB, "
        f"{metrics['ratio']:.1f}x, labels uint8 in 64x64 chunks)"
    )
    assert str(image.palette[5].tolist()) not in text
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:10, :, :] = [200, 100, 50, 255]
    rgba[10:, :15] = [10, 20, 30, 128]
    iio.imwrite(tmp_path / "alpha.png", rgba)
    (result,) = compress([str(tmp_path / "alpha.png")], str(tmp_path / "a.zarr"), colors=4)
    assert result.status == "done", result.error
    shown = repr(open_store(str(tmp_path / "a.zarr")))
    assert shown == (
        "{'alpha.png': StoredImage(name='alpha.png', 30x20, RGBA, 3 colours, lossless, "
        f"{result.metrics['ratio']:.1f}x, labels uint8 in 20x30 chunks)}}"
    )
    gray = compress_array(np.full((8, 8, 3), 7, np.uint8), str(tmp_path / "a.zarr"), "flat")
    assert "1 colour, lossless" in repr(gray)


def test_findings_show_whole_or_the_first_problem(stored, tmp_path):
    store, _ = stored
    (whole,) = verify_store(store)
    assert one_short_line(repr(whole)).startswith(
        "Finding(name='photo.png', whole, digests checked, "
    )
    chunks = sorted((Path(store) / "photo.png" / "labels" / "c").rglob("*"))
    for chunk in [c for c in chunks if c.is_file()][:2]:
        chunk.unlink()
    (damaged,) = verify_store(store)
    assert len(damaged.problems) >= 1
    text = one_short_line(repr(damaged))
    assert text.startswith(f"Finding(name='photo.png', damaged: {damaged.problems[0]}")
