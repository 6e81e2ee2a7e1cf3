"""Batches of small images sharing their dask-ml fits (compress_batch): real files and stores."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from pipeline.api import open_store, verify_store
from pipeline.job.tasks import Deferred, Done, Failed, Job, Spec, compress_batch, fit_block
from pipeline.quantize.metrics import psnr
from pipeline.settings import Settings
from pipeline.store.location import Location
from pipeline.store.write import list_store, prepare
from tests.conftest import SKIMAGE_PHOTOS, skimage_photo, store_files

SETTINGS = {"colors": 16}


@pytest.fixture(scope="module")
def photo_files():
    return [skimage_photo(name) for name in SKIMAGE_PHOTOS]


@pytest.fixture(scope="module")
def thumbs(tmp_path_factory, china, photo_files):
    """40 thumbnails 32 x 32 of photos, one of them gray and one of 5 colours; a 64 x 64 photo."""
    folder = tmp_path_factory.mktemp("thumbs")
    photos = [china, *(iio.imread(path)[..., :3] for path in photo_files)]
    rng = np.random.default_rng(0)
    for i in range(40):
        image = photos[i % len(photos)]
        y, x = rng.integers(0, 300), rng.integers(0, 300)
        iio.imwrite(folder / f"t{i:02d}.png", image[y : y + 32, x : x + 32])
    gray = np.repeat((np.arange(1024).reshape(32, 32, 1) // 4).astype(np.uint8), 3, axis=2)
    iio.imwrite(folder / "t07.png", gray)
    iio.imwrite(folder / "t08.png", np.resize(np.arange(15, dtype=np.uint8) * 17, (32, 32, 3)))
    iio.imwrite(folder / "photo.png", china[:64, :64])
    return folder


def job_on(store: Path, batch_pixels: int = 4_194_304) -> Job:
    location = Location.at(str(store))
    prepare(location, list_store(location))
    return Job(location, Settings.from_config(**SETTINGS), "run", batch_pixels)


def specs_of(paths: list[Path]) -> list[Spec]:
    return [Spec(p.name, str(p), token=p.name, key="0" * 16, fresh=True) for p in paths]


def test_a_batch_stores_each_image_as_it_stores_it_alone(tmp_path, thumbs):
    specs = specs_of(sorted(thumbs.glob("t*.png")))
    together = compress_batch(specs, job_on(tmp_path / "together.zarr"))
    assert all(isinstance(outcome, Done) and outcome.seconds > 0 for outcome in together)
    fits = {o.attrs["fit"]["method"] for o in together if isinstance(o, Done)}
    assert len(fits) == 3  # sample fits shared, a gray image's and a few colours' exact fits
    job = job_on(tmp_path / "alone.zarr")
    for spec in specs:
        assert isinstance(compress_batch([spec], job)[0], Done)
    expected = store_files(tmp_path / "alone.zarr", metadata=True)
    assert store_files(tmp_path / "together.zarr", metadata=True) == expected
    findings = list(verify_store(str(tmp_path / "together.zarr")))
    assert len(findings) == len(specs)
    assert all(not finding.problems and finding.checked for finding in findings)


def test_a_batch_fits_as_well_as_one_image_at_a_time(tmp_path, thumbs):
    # the same quality, to the bit, as fitting each image by itself (fit_block)
    specs = specs_of(sorted(thumbs.glob("t*.png")))
    compress_batch(specs, job_on(tmp_path / "s.zarr"))
    stored = open_store(str(tmp_path / "s.zarr"))
    settings = Settings.from_config(**SETTINGS)
    for spec in specs:
        fit = fit_block(iio.imread(spec.path), settings)
        metrics = stored[spec.name].attrs["metrics"]
        assert metrics["psnr_db"] == pytest.approx(psnr(fit.info["mse"]))
        assert np.array_equal(stored[spec.name].palette, fit.palette)


def test_an_image_failing_inside_a_group_fails_alone(tmp_path, thumbs):
    truncated = tmp_path / "cut.png"
    truncated.write_bytes((thumbs / "t03.png").read_bytes()[:200])
    paths = [thumbs / "t00.png", truncated, thumbs / "t01.png", thumbs / "photo.png"]
    paths += [tmp_path / "absent.png", thumbs / "t02.png"]
    outcomes = compress_batch(specs_of(paths), job_on(tmp_path / "s.zarr", batch_pixels=2048))
    kinds = [type(outcome) for outcome in outcomes]
    assert kinds == [Done, Failed, Done, Deferred, Failed, Done]
    for failed in (outcomes[1], outcomes[4]):
        assert isinstance(failed, Failed)
        assert "\n" not in failed.problem
        assert failed.detail is None  # expected problems: no traceback
    assert sorted(list_store(Location.at(str(tmp_path / "s.zarr"))).complete) == [
        "t00.png",
        "t01.png",
        "t02.png",
    ]
