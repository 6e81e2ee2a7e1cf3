"""What a store's bytes hold: no padding around small images, no pyramid a viewer does not need.

Real jobs write real stores on disk from real photos; bytes are deterministic.
"""

import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from pipeline import compress, open_store
from pipeline.cli import main
from pipeline.store.read import open_pyramid
from tests.conftest import sklearn_photo


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """china.jpg and flower.jpg (427 x 640), compressed at 64 colours in 1024-pixel chunks."""
    store = tmp_path_factory.mktemp("bytes") / "out.zarr"
    files = [sklearn_photo("china.jpg"), sklearn_photo("flower.jpg")]
    results = compress(files, str(store), colors=64)
    assert {r.status for r in results} == {"done"}, [r.error for r in results]
    return store


def test_an_image_smaller_than_a_chunk_is_one_chunk_of_its_own_shape(photos, tmp_path):
    labels = zarr.open_group(str(photos), mode="r")["china.jpg/labels"]
    assert labels.shape == (427, 640)
    assert labels.chunks == (427, 640)
    # the same labels as when worked on in chunks smaller than the image
    other = tmp_path / "small-chunks.zarr"
    compress([sklearn_photo("china.jpg")], str(other), colors=64, chunk=256)
    chunked = zarr.open_group(str(other), mode="r")["china.jpg/labels"]
    assert chunked.chunks == (256, 256)
    assert np.array_equal(chunked[...], labels[...])


@pytest.fixture
def format3(tmp_path):
    """A store of format version 3 as it wrote it: a 600 x 60 strip in 64-pixel chunks, with
    the four pyramid levels that version gave it (written by the code of 2026-12-05)."""
    store = tmp_path / "format3.zarr"
    shutil.copytree(Path(__file__).parent / "data" / "format3.zarr", store)
    return store


def test_a_format_3_store_is_still_listed_verified_and_rebuilt(format3, tmp_path, capsys):
    assert main(["verify", str(format3)]) == 0
    assert f"{format3}: 1 images, 1 whole, 0 damaged" in capsys.readouterr().out
    (image,) = open_store(str(format3)).values()
    assert [a.path.rpartition("/")[2] for a in open_pyramid(image)] == [
        f"labels_{n}" for n in range(1, 5)
    ]
    assert main(["reconstruct", str(format3), "--out", str(tmp_path / "out")]) == 0
    rebuilt = iio.imread(tmp_path / "out" / "strip.png")
    assert np.array_equal(rebuilt, image.palette[image.labels[...]])
