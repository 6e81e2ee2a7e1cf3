"""``recompress``: a store moved to another compression, image by image, without refitting.

Real stores on disk, real subprocesses of the CLI; a stopped run is the state it leaves on disk
(an image's group set aside, a half-staged copy), made with plain file operations.
"""

import json
import os
import shutil

import numpy as np
import pytest
import zarr

from pipeline import compress, open_store, verify_store
from pipeline.store.recode import ASIDE, STAGING
from tests.conftest import sklearn_photo
from tests.test_cli import run

FILES = [sklearn_photo("china.jpg"), sklearn_photo("flower.jpg")]


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    store = tmp_path_factory.mktemp("recode") / "out.zarr"
    assert {r.status for r in compress(FILES, str(store), colors=32)} == {"done"}
    return store


@pytest.fixture
def copy(portable, tmp_path):
    store = tmp_path / "out.zarr"
    shutil.copytree(portable, store)
    return store


def labels_and_palettes(store):
    return {
        name: (image.palette, image.labels[...]) for name, image in open_store(str(store)).items()
    }


def test_recompress_moves_every_image_and_keeps_its_labels(portable, copy, tmp_path):
    done = run("recompress", str(copy), "--compression", "archival", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "china.jpg: portable -> archival" in done.stdout
    assert "2 images recompressed, 0 already archival" in done.stdout
    before, after = labels_and_palettes(portable), labels_and_palettes(copy)
    for name, (palette, labels) in before.items():
        assert np.array_equal(after[name][0], palette)
        assert np.array_equal(after[name][1], labels)
        attrs = zarr.open_group(str(copy / name), mode="r").attrs
        assert attrs["compression"] == "archival"
        assert (
            attrs["metrics"]["stored_bytes"]
            < open_store(str(portable))[name].attrs["metrics"]["stored_bytes"]
        )
    assert all(f.whole for f in verify_store(str(copy)))
    # a rerun of the job still finds them complete; recompress again has nothing to do
    assert {r.status for r in compress(FILES, str(copy), colors=32)} == {"skipped"}
    again = run("recompress", str(copy), "--compression", "archival", cwd=tmp_path)
    assert "0 images recompressed, 2 already archival" in again.stdout
    # and back
    back = run("recompress", str(copy), "--compression", "portable", cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert labels_and_palettes(copy).keys() == before.keys()
    assert all(f.whole for f in verify_store(str(copy)))


def test_a_stopped_recompress_is_finished_by_the_next_one(copy, tmp_path):
    # stopped between its two renames: china.jpg set aside, its new group not in place; and
    # flower.jpg half staged
    staging = copy / STAGING
    staging.mkdir(parents=True)
    os.rename(copy / "china.jpg", staging / f"china.jpg{ASIDE}")
    shutil.copytree(copy / "flower.jpg", staging / "flower.jpg")
    (staging / "flower.jpg" / "zarr.json").unlink()
    done = run("recompress", str(copy), "--compression", "archival", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 images recompressed" in done.stdout
    assert sorted(os.listdir(staging)) == ["zarr.json"]
    assert all(f.whole for f in verify_store(str(copy)))
    document = json.loads((copy / "china.jpg" / "zarr.json").read_text())
    assert document["attributes"]["compression"] == "archival"


def test_recompress_refuses_an_unknown_compression(copy, tmp_path):
    done = run("recompress", str(copy), "--compression", "smallest", cwd=tmp_path)
    assert done.returncode == 2
    assert "--compression" in done.stderr


def test_recompress_of_no_store_is_one_error_and_makes_nothing(tmp_path):
    done = run("recompress", "gone.zarr", "--compression", "archival", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: gone.zarr: no such store"
    assert list(tmp_path.iterdir()) == []
