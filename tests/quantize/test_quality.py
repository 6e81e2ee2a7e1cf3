"""--quality: the fewest colours that reach a PSNR, and a failed image below the minimum."""

import subprocess
import sys

import numpy as np
import pytest

from pipeline import Settings, compress, open_store
from pipeline.errors import UsageError
from pipeline.job.tasks import fit_block, fit_sampled
from pipeline.quantize.colours import histogram
from pipeline.quantize.quality import QualityNotReached, fit_psnr, search_colours
from pipeline.settings import quality_range


@pytest.fixture(scope="module")
def crop(china):
    return np.ascontiguousarray(china[100:260, 200:400])


def fit_of(image, k):
    return fit_block(image, Settings.from_config(colors=k, sample=2000))


@pytest.mark.parametrize("target", [26.0, 29.0, 31.5])  # 64 colours: 32.3 dB
def test_the_fewest_colours_reaching_the_target(crop, target):
    tried = []

    def fit_with(k):
        tried.append(k)
        return fit_of(crop, k)

    fit = search_colours(fit_with, 64, 0.0, target)
    k = len(fit.palette)
    assert fit_psnr(fit) >= target
    assert fit_psnr(fit_of(crop, k - 1)) < target
    assert len(tried) <= 8  # a binary search, not a scan
    record = fit.info["quality"]
    assert record["max_db"] == target
    assert [t["colors"] for t in record["tried"]] == tried


def test_between_min_and_max_the_largest_palette_is_kept(crop):
    fit = search_colours(lambda k: fit_of(crop, k), 16, 20.0, 60.0)
    assert len(fit.palette) == 16
    assert [t["colors"] for t in fit.info["quality"]["tried"]] == [16]


def test_below_min_is_an_error_with_the_figures(crop):
    with pytest.raises(QualityNotReached, match=r"quality not reached: \d+\.\d\d dB with 8"):
        search_colours(lambda k: fit_of(crop, k), 8, 45.0, 50.0)


def test_fit_sampled_uses_the_setting(crop):
    plain = fit_of(crop, 64)
    settings = Settings.from_config(colors=64, sample=2000, quality=f"{fit_psnr(plain) - 3:.1f}")
    rows = np.random.default_rng(0).integers(0, crop.shape[0], 2000)
    cols = np.random.default_rng(1).integers(0, crop.shape[1], 2000)
    fit = fit_sampled(crop[rows, cols], histogram(crop), settings)
    assert len(fit.palette) < 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [("40", (0.0, 40.0)), ("30-40", (30.0, 40.0)), ("35.5-35.5", (35.5, 35.5))],
)
def test_quality_range(text, expected):
    assert quality_range(text) == expected


@pytest.mark.parametrize("text", ["40-30", "abc", "1-2-3", "-5", "30-101", ""])
def test_bad_quality_ranges(text):
    with pytest.raises(UsageError, match="quality must be"):
        quality_range(text)


def test_a_job_with_quality(tmp_path, write_image, crop):
    good = write_image("crop.png", crop)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    flat = write_image("noise.png", noise)
    store = str(tmp_path / "q.zarr")
    results = {r.name: r for r in compress([good, flat], store, colors=64, quality="25-30")}
    done, failed = results["crop.png"], results["noise.png"]
    assert done.status == "done"
    assert failed.status == "failed"
    assert failed.error.startswith(f"{flat}: quality not reached: ")
    image = open_store(store)["crop.png"]
    assert image.attrs["colors"] == len(image.palette) < 64
    tried = image.attrs["fit"]["quality"]["tried"]
    assert tried[0]["colors"] == 64
    assert tried[-1]["colors"] >= image.attrs["colors"]
    assert image.attrs["metrics"]["psnr_db"] >= 30  # every pixel counted: the fit's PSNR
    assert image.attrs["fit_settings"]["quality"] == "25-30"


def test_cli_quality_usage_error(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "--quality",
            "50-40",
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "quality must be MIN-MAX or MAX" in out.stderr
