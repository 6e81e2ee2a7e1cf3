"""Inputs and store on object storage: a real S3-compatible server (moto) on 127.0.0.1.

The job reads its photos from a bucket and writes its store to it through fsspec URLs, with the
credentials and endpoint taken from the environment as on a cluster; the store is then listed
and rebuilt from the bucket, and must equal a local run on the same files.
"""

import os

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from tests.conftest import SECRET, store_files
from tests.test_cli import failures, run

pytestmark = pytest.mark.slow


def test_photos_from_a_bucket_into_a_store_in_it_and_back(tmp_path, s3, small_photo, china):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("photos")
    local = tmp_path / "local"
    local.mkdir()
    iio.imwrite(local / "small.png", small_photo)
    iio.imwrite(local / "china.jpg", china, quality=90)
    (local / "notes.jpg").write_text("not an image")
    (local / "empty.png").write_bytes(b"")
    for path in local.iterdir():
        fs.put_file(str(path), f"photos/incoming/{path.name}")

    done = run("run", "s3://photos/incoming/", "-o", "s3://photos/out.zarr", "-k", "32",
               "--workers", "2", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr  # the bad file fails alone
    assert failures(done.stderr) == {
        "empty.png": "s3://photos/incoming/empty.png: empty file",
        "notes.jpg": "s3://photos/incoming/notes.jpg: not a readable image: unknown or"
        " unsupported format",
    }
    assert "2 done, 0 skipped, 2 failed" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    assert not (tmp_path / "out.zarr").exists()  # nothing written locally

    info = run("info", "s3://photos/out.zarr", "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert SECRET not in info.stdout
    images = zarr.open_group("s3://photos/out.zarr", mode="r")
    names = sorted(n for n in images.group_keys() if not n.startswith("."))  # .pipeline: markers
    assert names == ["china.jpg", "small.png"]
    for name in names:
        assert images[name].attrs["status"] == "complete"
        assert images[name].attrs["source"]["path"] == f"s3://photos/incoming/{name}"

    rebuilt = run("reconstruct", "s3://photos/out.zarr", "--out", "rebuilt", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    palette = images["small.png"]["palette"][...]
    labels = images["small.png"]["labels"][...]
    assert np.array_equal(iio.imread(tmp_path / "rebuilt" / "small.png"), palette[labels])

    # damage on S3: a deleted labels chunk is seen by info (from the listing), named by verify,
    # and redone by a rerun
    fs.rm("photos/out.zarr/small.png/labels/c/0/0")
    damaged = run("info", "s3://photos/out.zarr", cwd=tmp_path)
    assert damaged.returncode == 1
    assert "error: small.png: 1 of 1 labels chunks missing" in damaged.stderr
    checked = run("verify", "s3://photos/out.zarr", cwd=tmp_path)
    assert checked.returncode == 1
    assert "damaged: small.png: 1 of 1 labels chunks missing (0/0)" in checked.stdout
    inputs = ["s3://photos/incoming/small.png", "s3://photos/incoming/china.jpg"]
    again = run("run", *inputs, "-o", "s3://photos/out.zarr", "-k", "32", "--workers", "1",
                cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "1 done, 1 skipped, 0 failed" in again.stdout
    assert run("verify", "s3://photos/out.zarr", cwd=tmp_path).returncode == 0

    # what no listing of chunks shows, on S3: an object where a group should be, and a group
    # document that is not JSON (read by the rerun in one batch of range reads)
    fs.rm("photos/out.zarr/small.png", recursive=True)
    fs.pipe("photos/out.zarr/small.png", b"x")
    fs.pipe("photos/out.zarr/china.jpg/zarr.json", b"not json")
    damaged = run("info", "s3://photos/out.zarr", cwd=tmp_path)
    assert damaged.returncode == 1
    assert "error: small.png: a file where an image group should be" in damaged.stderr
    assert "error: china.jpg: metadata is not valid JSON" in damaged.stderr
    again = run("run", *inputs, "-o", "s3://photos/out.zarr", "-k", "32", "--workers", "1",
                cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "2 done, 0 skipped, 0 failed" in again.stdout
    assert run("verify", "s3://photos/out.zarr", cwd=tmp_path).returncode == 0

    # the same files from a local folder give the same store, byte for byte
    os.remove(local / "notes.jpg")
    os.remove(local / "empty.png")
    same = run("run", str(local), "-o", "local.zarr", "-k", "32", "--workers", "2",
               cwd=tmp_path)  # fmt: skip
    assert same.returncode == 0, same.stderr
    fs.get("photos/out.zarr", str(tmp_path / "downloaded.zarr"), recursive=True)
    assert store_files(tmp_path / "downloaded.zarr") == store_files(tmp_path / "local.zarr")
