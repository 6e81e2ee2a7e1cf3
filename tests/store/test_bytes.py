"""What a store's bytes hold: no padding around small images, no pyramid a viewer does not need.

Real jobs write real stores on disk from real photos; bytes are deterministic.
"""

import numpy as np
import pytest
import zarr

from pipeline import compress
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
