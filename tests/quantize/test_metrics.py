"""Quality figures: CIEDE2000 as scikit-image computes it, the same whatever the chunking."""

import os
import subprocess
import sys

import dask
import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from pipeline import compress, open_store
from pipeline.quantize.metrics import (
    DE_PIXELS,
    DE_UNIT,
    ciede2000,
    colour_error,
    lab,
    measured_positions,
)


def colours(n, seed):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    c[: n // 10] = c[: n // 10, :1]  # grays: zero chroma, the formula's special cases
    return c


def test_lab_and_ciede2000_agree_with_scikit_image():
    a, b = colours(50_000, 1), colours(50_000, 2)
    b[:100] = a[:100]  # identical colours: 0
    assert np.allclose(lab(a), rgb2lab(a[None])[0], atol=1e-9)
    expected = deltaE_ciede2000(rgb2lab(a[None])[0], rgb2lab(b[None])[0])
    got = ciede2000(lab(a), lab(b))
    assert np.allclose(got, expected, atol=1e-9)
    assert np.all(got[:100] == 0)


def test_sharma_reference_pairs():
    # from Sharma, Wu and Dalal (2005), table 1: L*a*b* pairs and their CIEDE2000
    pairs = [
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, -1.0, 2.0), (50.0, 0.0, 0.0), 2.3669),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
        ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
    ]
    first = np.array([p[0] for p in pairs])
    second = np.array([p[1] for p in pairs])
    assert np.allclose(ciede2000(first, second), [p[2] for p in pairs], atol=1e-4)


def test_colour_error_adds_up_over_any_chunking():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    labels = rng.integers(0, 16, (300, 500)).astype(np.uint8)
    whole, n = colour_error(image, labels, palette, (0, 0), (300, 500))
    assert isinstance(whole, int)
    assert n == DE_PIXELS
    rows, cols = measured_positions((300, 500))
    expected = deltaE_ciede2000(
        rgb2lab(image[rows, cols][None])[0], rgb2lab(palette[labels[rows, cols]][None])[0]
    ).sum()
    assert whole * DE_UNIT == pytest.approx(expected, rel=1e-9)
    for size in (64, 77, 128):
        total, count = 0, 0
        for top in range(0, 300, size):
            for left in range(0, 500, size):
                part = (slice(top, top + size), slice(left, left + size))
                t, c = colour_error(image[part], labels[part], palette, (top, left), (300, 500))
                total += t
                count += c
        assert count == n
        assert total == whole
    # a small image is measured at every pixel
    assert colour_error(image[:10, :10], labels[:10, :10], palette, (0, 0), (10, 10))[1] == 100


def test_stored_metrics_match_a_direct_computation_and_the_source_file(write_image, tmp_path):
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:240, 0:320]
    image = np.stack([x % 256, y, (x + y) % 256], axis=-1).astype(np.uint8)
    image = np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
    path = write_image("ramp.png", image)
    stores = {}
    for chunk, batch in ((1024, 4 << 20), (64, 1000)):
        store = str(tmp_path / f"s{chunk}.zarr")
        with dask.config.set({"pipeline.batch-pixels": batch}):
            (result,) = compress([path], store, colors=16, sample=2000, chunk=chunk)
        assert result.status == "done", result.error
        stores[chunk] = open_store(store)[result.name]
    whole, chunked = stores[1024], stores[64]
    assert whole.attrs["metrics"]["ciede2000_mean"] == chunked.attrs["metrics"]["ciede2000_mean"]
    metrics = whole.attrs["metrics"]
    rebuilt = whole.palette[np.asarray(whole.labels[...])]
    rows, cols = measured_positions((240, 320))
    expected = deltaE_ciede2000(
        rgb2lab(image[rows, cols][None])[0], rgb2lab(rebuilt[rows, cols][None])[0]
    ).mean()
    assert metrics["ciede2000_mean"] == pytest.approx(expected, rel=1e-9)
    assert metrics["ciede2000_pixels"] == DE_PIXELS
    assert metrics["source_bytes"] == os.path.getsize(path)
    assert metrics["ratio_source"] == pytest.approx(os.path.getsize(path) / metrics["stored_bytes"])
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "info", str(tmp_path / "s64.zarr")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header, _, row = out.splitlines()[1:4]
    assert "dE00" in header
    assert "vs source" in header
    assert f"{metrics['ciede2000_mean']:.2f}" in row
    assert f"{chunked.attrs['metrics']['ratio_source']:.2f}x" in row
