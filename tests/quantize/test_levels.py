"""Gray images get their exact best palette; no image gets fewer entries than it can use."""

import itertools

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Settings
from pipeline.job.tasks import fit_block
from pipeline.quantize.assign import label_block, label_dtype
from pipeline.quantize.colours import histogram, unpack
from pipeline.quantize.fit import fill, fit_palette
from pipeline.quantize.levels import best_levels, is_gray, nearest_level


def brute_force(levels, counts, k):
    """Least error over every split of the levels into k runs and every integer centre."""
    values = np.arange(256, dtype=np.float64)
    best = np.inf
    for cuts in itertools.combinations(range(1, len(levels)), k - 1):
        bounds = [0, *cuts, len(levels)]
        error = 0.0
        for a, b in itertools.pairwise(bounds):
            x, w = levels[a:b].astype(np.float64), counts[a:b]
            error += min((w[:, None] * (x[:, None] - values) ** 2).sum(axis=0))
        best = min(best, error)
    return best


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_best_levels_is_the_optimum(data):
    n = data.draw(st.integers(1, 8))
    levels = np.sort(
        np.array(data.draw(st.lists(st.integers(0, 255), min_size=n, max_size=n, unique=True)))
    )
    counts = np.array(data.draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n)))
    k = data.draw(st.integers(1, n))
    values, error = best_levels(levels, counts, k)
    assert len(values) == k
    assert np.all(np.diff(values.astype(int)) > 0)
    assert error == pytest.approx(brute_force(levels, counts, k), abs=1e-6)
    # the error claimed is the error of labelling each level with its nearest value
    gaps = (levels[:, None].astype(float) - values[None, :].astype(float)) ** 2
    assert (gaps.min(axis=1) * counts).sum() == pytest.approx(error, abs=1e-6)


def test_nearest_level_prefers_the_lower_of_two():
    coordinate = np.arange(256, dtype=np.float64)
    assert list(nearest_level(np.array([-3.0, 0.4, 2.5, 2.51, 300.0]), coordinate)) == [
        0,
        0,
        2,
        3,
        255,
    ]


def psnr_of(image, fit, k):
    _, error = label_block(image, fit, label_dtype(k))
    return 10 * np.log10(255**2 / (error / image.size))


@pytest.mark.parametrize("name", ["camera", "coins", "page", "moon", "text"])
@pytest.mark.parametrize("k", [16, 128])
def test_gray_images_get_the_exact_optimum(name, k):
    gray = getattr(skimage.data, name)()
    image = np.repeat(gray[:, :, None], 3, axis=2)
    levels, counts = np.unique(gray, return_counts=True)
    _, error = best_levels(levels, counts, k)
    oracle = 10 * np.log10(255**2 / (error / gray.size))
    fit = fit_block(image, Settings.from_config(colors=k))
    assert is_gray(fit.palette)
    assert len(fit.palette) == k
    assert psnr_of(image, fit, k) == pytest.approx(oracle, abs=0.01)


def test_a_nearly_gray_image_stays_near_the_gray_optimum():
    # one tinted pixel sends the image through the general fit, which must not collapse the way
    # it once did on colours along a line (camera at k = 128 kept 79 entries, 7 dB below)
    gray = skimage.data.camera()
    image = np.repeat(gray[:, :, None], 3, axis=2)
    image[0, 0, 2] ^= 1
    levels, counts = np.unique(gray, return_counts=True)
    _, error = best_levels(levels, counts, 128)
    oracle = 10 * np.log10(255**2 / (error / gray.size))
    fit = fit_block(image, Settings.from_config(colors=128))
    assert len(fit.palette) == 128
    assert psnr_of(image, fit, 128) > oracle - 1.0


@pytest.mark.parametrize("k", [8, 64, 256])
@pytest.mark.parametrize("effort", [0, 1, 3])
def test_the_palette_uses_every_entry_it_can(k, effort):
    # few colours, clustered: the refinement used to merge them and drop entries
    rng = np.random.default_rng(k + effort)
    centres = rng.integers(0, 256, size=(6, 3))
    colours = np.clip(centres[rng.integers(0, 6, 400)] + rng.integers(-3, 4, (400, 3)), 0, 255)
    image = colours[rng.integers(0, 400, (96, 96))].astype(np.uint8)
    keys, _ = histogram(image)
    fit = fit_block(image, Settings.from_config(colors=k, effort=effort))
    assert len(fit.palette) == min(k, len(keys))
    assert len(np.unique(fit.palette, axis=0)) == len(fit.palette)
    assert np.array_equal(np.unique(fit.labels), np.arange(len(fit.palette)))


def test_logo_keeps_its_colours():
    image = np.ascontiguousarray(skimage.data.logo()[:, :, :3])
    fit = fit_block(image, Settings.from_config(colors=256))
    assert len(fit.palette) == 256
    # pngquant 2.17 --nofs --speed 1 256 reaches 57.42 dB on it
    assert psnr_of(image, fit, 256) > 57.42


def test_fill_adds_the_worst_colours_and_lowers_the_error():
    colours = unpack(np.array([0, 10, 20, 0xFFFFFF, 0xFF0000], dtype=np.uint32))
    counts = np.array([5, 1, 1, 7, 3], dtype=np.int64)
    palette = colours[[0]]
    labels = np.zeros(len(colours), dtype=np.intp)
    grown, relabelled = fill(colours, counts, palette, labels, 3)
    assert len(grown) == 3
    assert {tuple(c) for c in grown[1:]} == {(255, 255, 255), (255, 0, 0)}
    assert np.array_equal(np.unique(relabelled), np.arange(3))
    # a palette already exact for every colour is not grown
    same, _ = fill(colours, counts, colours, np.arange(5), 8)
    assert len(same) == 5


def test_fit_palette_on_a_gray_histogram_records_the_method():
    levels = np.arange(0, 256, 3, dtype=np.uint32)
    keys = levels << 16 | levels << 8 | levels
    counts = np.ones(len(keys), dtype=np.int64)
    fit = fit_palette(unpack(keys[:64]), keys, counts, 16, random_state=0)
    assert fit.info["method"].startswith("exact optimum of a gray image")
    assert len(fit.palette) == 16
