"""--quality (pngquant's 0-100 scale) and --psnr: fewest colours reaching MAX, MIN or fail."""

import re
import shutil
import subprocess

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from pipeline import Settings, compress, open_store
from pipeline.errors import SettingError
from pipeline.job.tasks import fit_block, fit_sampled
from pipeline.quantize.colours import histogram, pack, unpack
from pipeline.quantize.quality import (
    PRINTED_MSE,
    QualityNotReached,
    Target,
    liq_error,
    mse_to_quality,
    quality_to_mse,
    search_colours,
)
from pipeline.settings import psnr_range, quality_range
from pipeline.store.write import COMPLETE, digest


@pytest.fixture(scope="module")
def crop(china):
    return np.ascontiguousarray(china[100:260, 200:400])


@pytest.fixture(scope="module")
def counts(crop):
    return histogram(crop)[1]


def fit_of(image, k):
    return fit_block(image, Settings.from_config(colors=k, sample=2000))


def reached(target, fit, counts):
    return target.reached(fit, counts)


# -- libimagequant's mapping, against an oracle written from its C source (2.17) ----------------


def oracle_error(original, rebuilt):
    """libimagequant 2.17's colordifference, pixel by pixel, averaged (pam.h, to_f_set_gamma)."""
    total = 0.0
    for x, y in zip(original.tolist(), rebuilt.tolist(), strict=True):
        ax = x[3] / 255 if len(x) == 4 else 1.0
        ay = y[3] / 255 if len(y) == 4 else 1.0
        alphas = ay - ax
        for c in range(3):
            px = (x[c] / 255) ** (0.5499 / 0.45455) * ax
            py = (y[c] / 255) ** (0.5499 / 0.45455) * ay
            black = px - py
            white = black + alphas
            total += max(black * black, white * white)
    return total / len(original)


def oracle_quality_to_mse(q):
    if q == 0:
        return float("inf")
    if q == 100:
        return 0.0
    fudge = max(0, 0.016 / (0.001 + q) - 0.001)
    return fudge + 2.5 / (210.0 + q) ** 1.2 * (100.1 - q) / 100.0


@pytest.mark.parametrize("channels", [3, 4])
def test_the_error_is_libimagequants(channels):
    rng = np.random.default_rng(channels)
    original = rng.integers(0, 256, (300, channels), dtype=np.uint8)
    rebuilt = rng.integers(0, 256, (300, channels), dtype=np.uint8)
    if channels == 4:
        original[:50, 3] = 255  # opaque, half-transparent and transparent pixels together
        rebuilt[:50, 3] = 255
        original[50:60, 3] = 0
    assert liq_error(original, rebuilt) == pytest.approx(oracle_error(original, rebuilt), rel=1e-9)
    weights = rng.integers(1, 9, 300)
    repeated = oracle_error(np.repeat(original, weights, 0), np.repeat(rebuilt, weights, 0))
    assert liq_error(original, rebuilt, weights) == pytest.approx(repeated, rel=1e-9)


def test_the_quality_mapping_is_libimagequants():
    for q in range(101):
        assert quality_to_mse(q) == pytest.approx(oracle_quality_to_mse(q), rel=1e-12)
        assert mse_to_quality(quality_to_mse(q)) == q
    errors = np.linspace(0, 0.05, 2001)
    qualities = [mse_to_quality(e) for e in errors]
    assert qualities == sorted(qualities, reverse=True)  # more error, never more quality
    # the largest q whose error bound (plus libimagequant's epsilon) holds the error
    for e, q in zip(errors, qualities, strict=True):
        assert q == 0 or e <= oracle_quality_to_mse(q) + 1e-6
        assert q == 100 or e > oracle_quality_to_mse(q + 1) + 1e-6
    assert quality_to_mse(80) * PRINTED_MSE == pytest.approx(6.09, abs=0.01)


@pytest.mark.skipif(shutil.which("pngquant") is None, reason="pngquant is not installed")
@pytest.mark.parametrize("colours", ["256", "64", "16"])
def test_our_quality_is_on_pngquants_scale(tmp_path, crop, colours):
    """pngquant -v prints its error and quality; ours of its own output is close (loosely:
    pngquant measures against its palette before rounding it to 8 bits)."""
    iio.imwrite(tmp_path / "in.png", crop)
    done = subprocess.run(
        ["pngquant", "-v", "--nofs", "-o", "out.png", colours, "in.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    mse, q = re.search(r"MSE=([\d.]+) \(Q=(\d+)\)", done.stderr).groups()
    from PIL import Image

    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    error = liq_error(crop.reshape(-1, 3), out.reshape(-1, 3))
    assert error * PRINTED_MSE == pytest.approx(float(mse), rel=0.2)
    assert abs(mse_to_quality(error) - int(q)) <= 6


@pytest.mark.skipif(shutil.which("pngquant") is None, reason="pngquant is not installed")
def test_pngquant_and_we_both_fail_what_cannot_reach_min(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "noise.png", noise)
    refused = subprocess.run(
        ["pngquant", "--quality", "65-80", "-o", "out.png", "noise.png"], cwd=tmp_path
    )
    assert refused.returncode == 99  # pngquant's "quality too low"
    target = Target("quality", *quality_range("65-80"), "65-80")
    with pytest.raises(QualityNotReached):
        search_colours(lambda k: fit_of(noise, k), 256, target, histogram(noise)[1])


# -- the search ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measure", "text"),
    [("psnr", "26"), ("psnr", "31.5"), ("quality", "-20"), ("quality", "-40")],
)
def test_the_fewest_colours_reaching_the_target(crop, counts, measure, text):
    target = Target(measure, *(psnr_range if measure == "psnr" else quality_range)(text), text)
    tried = []

    def fit_with(k):
        tried.append(k)
        return fit_of(crop, k)

    fit = search_colours(fit_with, 64, target, counts)
    k = len(fit.palette)
    assert reached(target, fit, counts) >= target.high
    assert reached(target, fit_of(crop, k - 1), counts) < target.high
    assert len(tried) <= 8  # a binary search, not a scan
    record = fit.info["quality"]
    assert record["target"] == measure
    figure = "psnr_db" if measure == "psnr" else "quality"
    assert [t["colors"] for t in record["tried"]] == tried
    (kept,) = [t[figure] for t in record["tried"] if t["colors"] == k]
    assert kept == pytest.approx(reached(target, fit, counts), abs=1e-4)


def test_every_pixel_counted_gives_the_quality_of_the_rebuilt_image(crop, counts):
    fit = fit_of(crop, 32)
    rebuilt = fit.palette[fit.labels[np.searchsorted(fit.keys, pack(crop))]]
    every_pixel = liq_error(crop.reshape(-1, 3), rebuilt.reshape(-1, 3))
    counted = liq_error(unpack(fit.keys), fit.palette[fit.labels], counts)
    assert counted == pytest.approx(every_pixel, rel=1e-9)
    assert Target("quality", 0, 100, "0-100").reached(fit, counts) == mse_to_quality(counted)


def test_between_min_and_max_the_largest_palette_is_kept(crop, counts):
    fit = search_colours(lambda k: fit_of(crop, k), 16, Target("quality", 1, 100, "1-100"), counts)
    assert len(fit.palette) == 16
    assert [t["colors"] for t in fit.info["quality"]["tried"]] == [16]


@pytest.mark.parametrize(
    ("measure", "text", "message"),
    [
        (
            "quality",
            "95-99",
            r"^quality \d+ reached with 8 colours, below the 95 asked "
            r"\(--quality 95-99; --colors 256 allows more colours\)$",
        ),
        (
            "psnr",
            "45-50",
            r"^\d+\.\d\d dB reached with 8 colours, below the 45 dB asked "
            r"\(--psnr 45-50; --colors 256 allows more colours\)$",
        ),
    ],
)
def test_below_min_is_an_error_in_the_users_units(crop, counts, measure, text, message):
    target = Target(measure, *(psnr_range if measure == "psnr" else quality_range)(text), text)
    with pytest.raises(QualityNotReached, match=message):
        search_colours(lambda k: fit_of(crop, k), 8, target, counts)


@pytest.mark.parametrize("setting", ["quality", "psnr"])
def test_fit_sampled_uses_the_setting(crop, setting):
    value = "-30" if setting == "quality" else "25"
    settings = Settings.from_config(colors=64, sample=2000, **{setting: value})
    rows = np.random.default_rng(0).integers(0, crop.shape[0], 2000)
    cols = np.random.default_rng(1).integers(0, crop.shape[1], 2000)
    fit = fit_sampled(crop[rows, cols], histogram(crop), settings)
    assert len(fit.palette) < 64
    assert fit.info["quality"]["target"] == setting


# -- the settings' forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("65-80", (65, 80)),
        ("80", (72, 80)),  # pngquant: MIN is 90% of MAX
        (80, (72, 80)),  # a job file's number
        ("-80", (0, 80)),
        (-80, (0, 80)),  # DASK_PIPELINE__QUALITY=-80, as dask reads it
        ("65-", (65, 100)),
        ("0-100", (0, 100)),
        ("70-70", (70, 70)),
    ],
)
def test_quality_takes_pngquants_forms(value, expected):
    assert quality_range(value) == expected


@pytest.mark.parametrize(
    "value", ["80-65", "abc", "1-2-3", "-", "", "30-101", "101", "65.5-80", 80.0, True]
)
def test_bad_quality_ranges(value):
    with pytest.raises(
        SettingError, match=r"^quality must be MIN-MAX, MAX, -MAX or MIN-, 0\.\.100"
    ):
        quality_range(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("40", (0.0, 40.0)), (40, (0.0, 40.0)), ("30-40", (30.0, 40.0)), ("35.5-35.5", (35.5, 35.5))],
)
def test_psnr_range(value, expected):
    assert psnr_range(value) == expected


@pytest.mark.parametrize("value", ["40-30", "abc", "1-2-3", "-5", "30-101", ""])
def test_bad_psnr_ranges(value):
    with pytest.raises(SettingError, match=r"^psnr must be MIN-MAX or MAX, in dB"):
        psnr_range(value)


# -- jobs ------------------------------------------------------------------------------------


def test_a_job_with_quality(tmp_path, write_image, crop):
    good = write_image("crop.png", crop)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    flat = write_image("noise.png", noise)
    store = str(tmp_path / "q.zarr")
    results = {r.name: r for r in compress([good, flat], store, colors=64, quality="20-40")}
    done, failed = results["crop.png"], results["noise.png"]
    assert done.status == "done"
    assert failed.status == "failed"
    assert re.fullmatch(
        rf"{re.escape(flat)}: quality \d+ reached with 64 colours, below the 20 asked "
        r"\(--quality 20-40; --colors 256 allows more colours\)",
        failed.error,
    )
    image = open_store(store)["crop.png"]
    assert image.attrs["colors"] == len(image.palette) < 64
    record = image.attrs["fit"]["quality"]
    assert (record["target"], record["min"], record["max"]) == ("quality", 20, 40)
    assert record["scale"].startswith("pngquant 0-100")
    assert record["tried"][0]["colors"] == 64
    assert [t["quality"] for t in record["tried"] if t["colors"] == len(image.palette)] >= [40]
    rebuilt = image.palette[np.asarray(image.labels)]
    assert mse_to_quality(liq_error(crop.reshape(-1, 3), rebuilt.reshape(-1, 3))) >= 40
    assert image.attrs["fit_settings"]["pngquant_quality"] == "20-40"
    assert "quality" not in image.attrs["fit_settings"]


def make_legacy(store, name):
    """Rewrite image ``name`` as a store written before --psnr recorded it: ``quality`` (PSNR)
    in its fit settings, and a completion marker of those settings' digest."""
    group = zarr.open_group(store, path=name, mode="r+")
    attrs = dict(group.attrs)
    fit_settings = dict(attrs["fit_settings"])
    fit_settings["quality"] = fit_settings.pop("psnr")
    group.attrs["fit_settings"] = fit_settings
    markers = store / COMPLETE
    (old,) = [p for p in markers.iterdir() if p.name.endswith(f"-{name}")]
    values = {
        "source_path": attrs["source"]["path"],
        "colors_requested": attrs["colors_requested"],
        "sample_size_requested": attrs["sample_size_requested"],
        "seed": attrs["seed"],
        "fit_settings": fit_settings,
    }
    chunks = old.name[len(digest(values)) :].split("-", 1)[0]
    old.rename(markers / f"{digest(values)}{chunks}-{name}")


def test_an_old_store_with_psnr_recorded_as_quality_is_reused_by_psnr_only(
    tmp_path, write_image, crop
):
    path = write_image("crop.png", crop)
    store = tmp_path / "old.zarr"
    (first,) = compress([path], str(store), colors=64, psnr="25-30")
    assert first.status == "done"
    make_legacy(store, "crop.png")

    (again,) = compress([path], str(store), colors=64, psnr="25-30")
    assert again.status == "skipped"
    (other,) = compress([path], str(store), colors=64, quality="25-30")  # not the same target
    assert other.status == "failed"
    assert "other settings: psnr 25-30 (asked None), quality None (asked 25-30)" in other.error
    (third,) = compress([path], str(store), colors=64, psnr="25-30")  # its marker rewritten
    assert third.status == "skipped"


def test_an_old_store_is_repaired_with_its_psnr_target(tmp_path, write_image, crop):
    from pipeline.api import recompress

    path = write_image("crop.png", crop)
    store = tmp_path / "old.zarr"
    compress([path], str(store), colors=64, psnr="25-30")
    make_legacy(store, "crop.png")
    attrs = dict(zarr.open_group(store, path="crop.png", mode="r").attrs)
    (result,) = recompress(str(store), [("crop.png", attrs)])
    assert result.status == "done"
    image = open_store(str(store))["crop.png"]
    assert image.attrs["fit"]["quality"]["target"] == "psnr"
    assert image.attrs["fit_settings"]["psnr"] == "25-30"
    assert "quality" not in image.attrs["fit_settings"]
