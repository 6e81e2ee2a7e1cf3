"""Whole jobs: real Zarr stores on disk, real image files, and a real distributed cluster."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline import compress, compress_array, open_store, reconstruct
from pipeline.errors import InputError, PipelineError
from pipeline.job.preload import JOB_KERNELS
from pipeline.store.location import Location
from pipeline.store.write import open_root
from tests.oracles import brute_force, photo_psnr

FAST = {"colors": 32, "sample": 2000}


def test_compress_array_round_trip(store, small_photo):
    result = compress_array(small_photo, store, "crop", chunk=64, **FAST)
    assert result.status == "done"
    image = open_store(store)["crop"]
    assert image.labels.dtype == np.uint8
    assert image.labels.chunks == (64, 64)
    labels = image.labels[...]
    assert np.array_equal(labels, brute_force(small_photo, image.palette))
    rebuilt = reconstruct(store, "crop")
    assert rebuilt.chunks[:2] == ((64, 56), (64, 64, 42))
    assert np.array_equal(rebuilt.compute(), image.palette[labels])
    assert result.metrics["psnr_db"] == pytest.approx(photo_psnr(small_photo, rebuilt.compute()))
    assert result.attrs["status"] == "complete"
    assert result.attrs["colors"] == len(image.palette) <= 32


PLAIN_READER = """
import json, sys
import numpy as np
import zarr
root = zarr.open_group(sys.argv[1], mode="r")
assert root.attrs["format"] == "pipeline.palette-image"
group = root[sys.argv[2]]
assert group.attrs["status"] == "complete"
pixels = group["palette"][...][group["labels"][...]]
np.save(sys.argv[3], pixels)
print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("pipeline"))}))
"""


def test_plain_zarr_reader_rebuilds_without_the_package(store, small_photo, tmp_path):
    compress_array(small_photo, store, "crop", **FAST)
    out = tmp_path / "rebuilt.npy"
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_READER, store, "crop", str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(done.stdout)["modules"] == []
    assert np.array_equal(np.load(out), reconstruct(store, "crop").compute())


def test_rejected_array_leaves_no_group(store, small_photo):
    compress_array(small_photo, store, "crop", **FAST)
    with pytest.raises(InputError, match="unsupported pixel type float32"):
        compress_array(small_photo.astype(np.float32), store, "float", **FAST)
    assert list(open_store(store)) == ["crop"]
    assert "float" not in open_root(Location.at(store))


def test_failed_image_leaves_nothing_and_others_complete(
    store, tmp_path, write_image, small_photo, china
):
    good = write_image("good.png", small_photo)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(Path(write_image("whole.jpg", china)).read_bytes()[:5000])
    results = compress([good, str(cut), str(tmp_path / "absent.png")], store, **FAST)
    status = {r.name: r.status for r in results}
    assert status == {"absent.png": "failed", "good.png": "done", "cut.jpg": "failed"}
    errors = [r.error for r in results if r.error]
    assert any(str(cut) in e and "cannot decode image" in e for e in errors)
    assert all("\n" not in e for e in errors)
    root = open_root(Location.at(store))
    assert "cut.jpg" not in root  # the partly written group is removed
    assert root["good.png"].attrs["status"] == "complete"
    with pytest.raises(PipelineError, match="no such image"):
        reconstruct(store, "cut.jpg")


def test_interrupted_image_is_not_readable_and_is_redone(store, write_image, small_photo):
    path = write_image("a.png", small_photo)
    compress([path], store, **FAST)
    # as a job killed while rewriting it leaves it: status "writing", its marker removed
    open_root(Location.at(store), mode="a")["a.png"].attrs["status"] = "writing"
    shutil.rmtree(Path(store) / ".pipeline" / "complete")
    with pytest.raises(PipelineError, match="incomplete"):
        reconstruct(store, "a.png")
    assert "a.png" not in open_store(store)
    assert compress([path], store, **FAST)[0].status == "done"


def test_rerun_skips_complete_images_and_redoes_incomplete(store, write_image, small_photo):
    path = write_image("a.png", small_photo)
    first = compress([path], store, **FAST)[0]
    again = compress([path], store, **FAST)[0]
    assert again.status == "skipped"
    assert again.attrs is None  # known complete from the store's listing, not read
    assert open_store(store)["a.png"].attrs["completed"] == first.attrs["completed"]


def test_other_settings_need_overwrite(store, write_image, small_photo):
    path = write_image("a.png", small_photo)
    compress([path], store, **FAST)
    clash = compress([path], store, colors=16, sample=2000)[0]
    assert clash.status == "failed"
    assert "other settings: colors 32 (asked 16); use --overwrite" in clash.error
    assert open_store(store)["a.png"].attrs["colors_requested"] == 32  # nothing lost
    redone = compress([path], store, colors=16, sample=2000, overwrite=True)[0]
    assert redone.status == "done"
    assert len(open_store(store)["a.png"].palette) <= 16


def test_few_colours_store_a_smaller_lossless_palette(store):
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (7, 3), dtype=np.uint8)
    image = colours[rng.integers(0, 7, (50, 60))]
    result = compress_array(image, store, "flat", colors=128, sample=1000)
    assert result.attrs["colors"] == 7
    assert result.metrics["psnr_db"] is None  # lossless
    assert np.array_equal(reconstruct(store, "flat").compute(), image)


def test_more_than_256_colours_store_uint16(store, small_photo):
    compress_array(small_photo, store, "big", colors=300, sample=3000)
    image = open_store(store)["big"]
    assert image.labels.dtype == np.uint16
    assert np.array_equal(image.labels[...], brute_force(small_photo, image.palette))


def stored(store, name):
    group = zarr.open_group(store, mode="r", path=name)
    return group["palette"][...], group["labels"][...]


@pytest.mark.slow
@pytest.mark.parametrize("count_pixels", [None, 50_000], ids=["every-pixel", "grid"])
def test_same_seed_same_bytes_whatever_chunks_and_workers(
    tmp_path, write_image, china, client, count_pixels
):
    path = write_image("china.png", china)
    runs = {
        "threads-1024": {"chunk": 1024},
        "threads-100": {"chunk": 100},
        "cluster-2-workers-77": {"chunk": 77, "client": client},
    }
    out = {}
    for label, extra in runs.items():
        store = str(tmp_path / f"{label}.zarr")
        result = compress(
            [path], store, colors=64, sample=5000, seed=11, count_pixels=count_pixels, **extra
        )[0]
        assert result.status == "done"
        out[label] = palette, labels = stored(store, "china.png")
        # its pyramid's levels: every 2nd, 4th... pixel of the same labels, whatever the chunks
        group = zarr.open_group(store, mode="r", path="china.png")
        for level, dataset in enumerate(group.attrs["ome"]["multiscales"][0]["datasets"]):
            assert np.array_equal(group[dataset["path"]][...], labels[:: 2**level, :: 2**level])
        # the error recorded is over every pixel, however many were counted for the fit
        mse = ((china.astype(np.float64) - palette[labels]) ** 2).mean()
        assert result.metrics["mse"] == pytest.approx(mse, rel=1e-12)
        counted = result.attrs["fit"]["counted_pixels"]
        assert counted == china[..., 0].size if count_pixels is None else counted <= count_pixels
    palettes = [p.tobytes() for p, _ in out.values()]
    labels = [lab.tobytes() for _, lab in out.values()]
    assert len(set(palettes)) == 1
    assert len(set(labels)) == 1
    other_seed = str(tmp_path / "seed12.zarr")
    compress([path], other_seed, colors=64, sample=5000, seed=12)
    assert stored(other_seed, "china.png")[0].tobytes() != palettes[0]


@pytest.mark.slow
def test_cluster_runs_images_concurrently_and_isolates_failures(
    store, tmp_path, write_image, small_photo, client
):
    paths = [write_image(f"p{i}.png", np.roll(small_photo, 7 * i, axis=1)) for i in range(4)]
    bad = tmp_path / "inputs" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    seen = []
    results = compress([*paths, str(bad)], store, client=client, on_result=seen.append, **FAST)
    assert {r.name: r.status for r in results} == {
        "bad.png": "failed",
        **{f"p{i}.png": "done" for i in range(4)},
    }
    assert len(seen) == 5
    assert sorted(open_store(store)) == [f"p{i}.png" for i in range(4)]


def test_placement_splits_the_labelling_of_an_image_decoded_whole_between_two_workers():
    from pipeline.job.graph import LABEL_TASK, Placement

    place = Placement("tcp://a:1", "tcp://b:2")
    labels = [place(f"{LABEL_TASK}-0123abcd-{i}") for i in range(6)]
    assert labels == [["tcp://a:1"], ["tcp://b:2"]] * 3
    assert place("cut-0123abcd-7") == ["tcp://a:1"]  # cut where it was decoded
    assert place("read-0123") == ["tcp://a:1"]
    assert Placement(None, None)("anything") == []


@pytest.mark.slow
def test_local_cluster_workers_are_warmed_up_by_the_preload():
    from pipeline.job.cluster import connect

    def compiled():
        from pipeline.quantize import assign, colours, kmeans

        kernels = (
            colours._count,
            colours.nearest_search,
            colours._squared_errors,
            kmeans._greedy_plusplus,
        )
        kernels += (kmeans._candidates, kmeans._sums_after, assign._lookup, assign._lookup_at)
        return all(kernel.signatures for kernel in kernels)

    with connect(None, workers=1, dashboard_address="127.0.0.1:0") as fresh:  # no task run yet
        assert list(fresh.run(compiled).values()) == [True]


@pytest.mark.parametrize(
    ("kernels", "loaded"),
    [
        ("rgb none", (False, False)),
        ("oklab ordered", (True, False)),
        ("rgb blue-noise", (False, True)),
        (None, (True, True)),
    ],
)
def test_a_worker_of_one_job_warms_up_the_kernels_of_its_settings_only(kernels, loaded):
    """The default job: neither the 6-D (OKLab) kernels nor the blue-noise mask's.

    A fresh process, warmed up as a preloading worker is, with the environment a local
    cluster gives its workers; without it (a worker that may serve any job), every kernel.
    """
    check = (
        "from distributed import Worker\n"
        "from pipeline.job import preload\n"
        "from pipeline.quantize import colours, dither\n"
        "preload.dask_setup(object.__new__(Worker))\n"
        "six = any(s[3].count == 6 for s in colours.nearest_search.signatures)\n"
        "mask = bool(dither._void_and_cluster.signatures)\n"
        f"assert (six, mask) == {loaded}, (six, mask)\n"
        "assert colours.nearest_search.signatures\n"
        "import gc\n"  # collecting again after the warm-up, which froze what it imported
        "assert gc.isenabled() and gc.get_threshold()[0] > 0, gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != JOB_KERNELS}
    environ.update({JOB_KERNELS: kernels} if kernels else {})
    subprocess.run([sys.executable, "-c", check], check=True, env=environ)


def test_a_local_cluster_tells_its_workers_the_kernels_of_its_job():
    from pipeline.job.cluster import connect
    from pipeline.settings import Settings

    settings = Settings.from_config(space="oklab", dither="ordered")
    with connect(None, workers=1, dashboard_address="127.0.0.1:0", settings=settings) as client:
        assert list(client.run(os.environ.get, JOB_KERNELS).values()) == ["oklab ordered"]


def test_the_package_imports_its_public_names_on_first_use():
    check = (
        "import sys, pipeline\n"
        "assert 'dask.array' not in sys.modules and 'zarr' not in sys.modules\n"
        # submodules imported first change nothing
        "import pipeline.api, pipeline.store.write\n"
        "for name in pipeline.__all__:\n"
        "    value = getattr(pipeline, name)\n"
        "    assert not isinstance(value, type(sys)), name\n"
        "assert callable(pipeline.reconstruct) and set(pipeline.__all__) <= set(dir(pipeline))\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)
