import hashlib
import itertools

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from pipeline.job.tasks import fit_block
from pipeline.quantize.assign import label_block, label_dtype
from pipeline.quantize.colours import histogram, nearest
from pipeline.quantize.dither import (
    BAYER_SIZE,
    BLUE_NOISE_SIZE,
    DEFAULT_STRENGTH,
    METHODS,
    bayer_matrix,
    blue_noise_mask,
    dither_block,
    dither_offsets,
    palette_spacing,
    threshold_ranks,
)
from pipeline.quantize.fit import Fit, fit_palette
from pipeline.settings import CHOICES, Settings
from tests.oracles import brute_force


def fitted(image, k):
    return fit_block(image, Settings.from_config(colors=k))


def labeller(fit, k):
    dtype = label_dtype(k)
    return lambda block: label_block(block, fit, dtype)[0]


def dither_chunked(image, fit, k, method, strength, chunks):
    """Labels and error of ``image`` dithered chunk by chunk, chunks of ``chunks`` pixels."""
    label = labeller(fit, k)
    labels = np.empty(image.shape[:2], dtype=label_dtype(k))
    error = 0
    height, width = image.shape[:2]
    for row0, col0 in itertools.product(range(0, height, chunks[0]), range(0, width, chunks[1])):
        region = np.s_[row0 : row0 + chunks[0], col0 : col0 + chunks[1]]
        labels[region], part = dither_block(
            image[region], row0, col0, fit.palette, method, strength, label, fit.space
        )
        error += part
    return labels, error


def moved(image, row0, col0, method, palette, strength):
    """``image`` at ``(row0, col0)`` moved by the offsets of ``method``, clipped to uint8."""
    offsets = dither_offsets(method, palette, strength).astype(np.int32)
    rows = (row0 + np.arange(image.shape[0])) % len(offsets)
    cols = (col0 + np.arange(image.shape[1])) % len(offsets)
    return np.clip(image + offsets[rows[:, None], cols[None, :]], 0, 255).astype(np.uint8)


def lattice(levels=(0, 64, 128, 192)):
    """A palette of every combination of ``levels`` per channel: spacing 64, many exact ties."""
    return np.array(list(itertools.product(levels, repeat=3)), dtype=np.uint8)


def lattice_fit():
    """A fit of the :func:`lattice` palette whose lookup table starts empty."""
    return Fit(lattice(), np.zeros(0, np.uint32), np.zeros(0, np.uint16))


def gradient(size=512):
    """Smooth ramps: red left to right, green top to bottom, blue along the diagonal."""
    ramp = np.arange(size) / (size - 1)
    x, y = np.meshgrid(ramp, ramp)
    return np.round(np.stack([x, y, 1 - (x + y) / 2], axis=-1) * 255).astype(np.uint8)


def psnr(image, rebuilt):
    mse = np.mean((np.asarray(image, np.float64) - np.asarray(rebuilt, np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


def low_pass_psnr(image, rebuilt):
    def blur(a):
        return gaussian_filter(a.astype(np.float64), sigma=(1.5, 1.5, 0))

    return psnr(blur(image), blur(rebuilt))


def low_frequency_share(values):
    """Share of the power (mean removed) below 1/8 cycle per pixel, of a square periodic map."""
    power = np.abs(np.fft.fft2(values - values.mean())) ** 2
    f = np.fft.fftfreq(len(values))
    radius = np.hypot(f[:, None], f[None, :])
    return power[radius < 1 / 8].sum() / power.sum()


def test_the_settings_offer_every_method():
    assert CHOICES["dither"] == ("none", *METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_threshold_maps_hold_every_rank_once(method):
    ranks = threshold_ranks(method)
    n = {"ordered": BAYER_SIZE, "blue-noise": BLUE_NOISE_SIZE}[method]
    assert ranks.shape == (n, n)
    assert np.array_equal(np.sort(ranks, axis=None), np.arange(n * n))


def test_bayer_matrix_is_the_recursive_dispersed_pattern():
    assert np.array_equal(
        bayer_matrix(4), [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]
    )
    ranks = bayer_matrix(8)
    # the first quarter of the thresholds is the lattice of even rows and columns, the first
    # sixteenth every fourth row and column
    assert np.array_equal(np.argwhere(ranks < 16), np.argwhere(np.ones((4, 4), bool)) * 2)
    assert np.array_equal(np.argwhere(ranks < 4), np.argwhere(np.ones((2, 2), bool)) * 4)
    with pytest.raises(ValueError, match="power of 2"):
        bayer_matrix(12)


def test_blue_noise_has_little_low_frequency_energy():
    mask = blue_noise_mask().astype(np.float64)
    white = np.random.default_rng(0).permutation(mask.size).reshape(mask.shape).astype(float)
    white_share = low_frequency_share(white)
    assert white_share > 0.03  # ~ the area of the disc: 4.9%
    assert low_frequency_share(mask) < white_share / 100
    # every threshold level is itself an even pattern of dots
    for level in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert low_frequency_share(mask < level * mask.size) < white_share / 10


def test_blue_noise_mask_is_fixed():
    # The mask decides stored labels: it must be the same on every machine and every run (an
    # integer algorithm from a fixed integer hash). Another seed gives another mask.
    mask = blue_noise_mask()
    assert not mask.flags.writeable
    digest = hashlib.sha256(mask.astype("<u2").tobytes()).hexdigest()
    assert digest == "ada50e27569a973999bd635fec10a4c3bc28fd3814b661f1b8d0d27b137a4ec1"
    assert np.array_equal(blue_noise_mask.__wrapped__(), mask)
    other = blue_noise_mask(32, seed=1)
    assert np.array_equal(np.sort(other, axis=None), np.arange(32 * 32))
    assert not np.array_equal(other, blue_noise_mask(32))


def test_palette_spacing_is_the_median_distance_to_the_nearest_entry():
    assert palette_spacing(lattice()) == 64
    three = np.array([[0, 0, 0], [3, 4, 0], [30, 40, 0]], dtype=np.uint8)
    assert palette_spacing(three) == 5
    assert palette_spacing(lattice()[:1]) == 0


@pytest.mark.parametrize(
    ("method", "k"), [("ordered", 16), ("blue-noise", 64), ("blue-noise", 300)]
)
def test_labels_are_the_same_whatever_the_chunking(china, method, k):
    fit = fitted(china, k)
    whole, error = dither_chunked(china, fit, k, method, DEFAULT_STRENGTH, china.shape[:2])
    assert whole.dtype == label_dtype(k)
    assert error == ((china.astype(np.int64) - fit.palette[whole]) ** 2).sum()
    undithered = label_block(china, fit, label_dtype(k))[0]
    assert (whole != undithered).mean() > 0.05  # dithering did change labels
    for chunks in [(64, 64), (97, 131), (300, 37), (1, 640)]:
        labels, chunked_error = dither_chunked(china, fit, k, method, DEFAULT_STRENGTH, chunks)
        assert labels.tobytes() == whole.tobytes()
        assert chunked_error == error


@pytest.mark.parametrize(
    ("method", "palette"), [("ordered", "fitted"), ("blue-noise", "fitted"), ("ordered", "lattice")]
)
def test_labels_are_the_exact_nearest_entries_of_the_moved_pixels(china, method, palette):
    # Each pixel moves by the offsets at its absolute position and gets the nearest entry of
    # its moved colour, ties to the lowest index (the lattice palette has many ties), also for
    # the pixels that the search from the undithered label leaves to the caller's exact lookup.
    fit = fitted(china, 300) if palette == "fitted" else lattice_fit()  # 300: uint16 labels
    dtype = label_dtype(len(fit.palette))
    blocks = []

    def label(block):
        blocks.append(block.shape)
        return label_block(block, fit, dtype)[0]

    crop = china[100:300, 150:450]
    row0, col0 = 1000, 333
    labels, error = dither_block(crop, row0, col0, fit.palette, method, 1.0, label)
    expected = brute_force(moved(crop, row0, col0, method, fit.palette, 1.0), fit.palette)
    assert np.array_equal(labels, expected)
    assert error == ((crop.astype(np.int64) - fit.palette[labels]) ** 2).sum()
    if palette == "fitted":
        assert blocks[0] == crop.shape
        assert blocks[1][0] > 0
        assert blocks[1][1:] == (1, 3)


@pytest.mark.parametrize("method", METHODS)
def test_oklab_labels_are_the_nearest_oklab_entries_of_the_moved_pixels(small_photo, method):
    keys, counts = histogram(small_photo)
    fit = fit_palette(small_photo.reshape(-1, 3), keys, counts, 32, random_state=0, space="oklab")
    labels, error = dither_chunked(small_photo, fit, 32, method, 1.0, (50, 64))
    shifted = moved(small_photo, 0, 0, method, fit.palette, 1.0)
    expected = nearest(shifted.reshape(-1, 3), fit.palette, space="oklab")
    assert np.array_equal(labels.ravel(), expected)
    assert error == ((small_photo.astype(np.int64) - fit.palette[labels]) ** 2).sum()
    assert not np.array_equal(labels, label_block(small_photo, fit, np.dtype(np.uint8))[0])


def test_offsets_are_centred_and_span_the_amplitude():
    offsets = dither_offsets("blue-noise", lattice(), 1.0)  # amplitude 64: -32 .. 32
    assert offsets.dtype == np.int16
    assert not offsets.flags.writeable
    assert offsets.min() == -32
    assert offsets.max() == 32
    assert abs(offsets.mean()) < 0.02
    for channel in range(3):  # every level equally often
        assert np.abs(np.bincount(offsets[..., channel].ravel() + 32)[1:-1] - 64).max() <= 1
    assert not np.array_equal(offsets[..., 0], offsets[..., 1])
    assert not dither_offsets("ordered", lattice(), 0.0).any()


@pytest.mark.parametrize("method", METHODS)
def test_strength_zero_gives_the_undithered_labels(small_photo, method):
    fit = fitted(small_photo, 32)
    labels, error = dither_block(small_photo, 5, 7, fit.palette, method, 0.0, labeller(fit, 32))
    expected, expected_error = label_block(small_photo, fit, np.dtype(np.uint8))
    assert labels.tobytes() == expected.tobytes()
    assert error == expected_error


@pytest.mark.parametrize("method", METHODS)
def test_flat_colours_keep_their_mean_over_a_tile(method):
    # On a lattice palette of spacing 64 at strength 1, each channel picks between its two
    # nearest levels in proportion to its distance to them: a flat area averages to its colour,
    # where undithered labels are off by up to half the spacing.
    fit = lattice_fit()
    label = labeller(fit, len(fit.palette))
    n = len(threshold_ranks(method))
    for colour in np.random.default_rng(0).integers(16, 176, size=(20, 3)):
        flat = np.broadcast_to(colour.astype(np.uint8), (n, n, 3))
        labels, _ = dither_block(flat, 3 * n, 5 * n, fit.palette, method, 1.0, label)
        mean = fit.palette[labels].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - colour).max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_dithering_removes_the_bands_of_a_gradient(method):
    image = gradient()
    fit = fitted(image, 16)
    rebuilt = {
        strength: fit.palette[dither_chunked(image, fit, 16, method, strength, (200, 200))[0]]
        for strength in (0.0, DEFAULT_STRENGTH)
    }
    plain = {s: psnr(image, r) for s, r in rebuilt.items()}
    low_pass = {s: low_pass_psnr(image, r) for s, r in rebuilt.items()}
    # measured: no dither 23.71 dB plain, 23.99 low-pass; ordered 21.96 / 28.46, blue-noise
    # 22.18 / 28.74 (pngquant's Floyd-Steinberg, with its own palette: 21.83 / 29.19)
    assert low_pass[DEFAULT_STRENGTH] > low_pass[0.0] + 4.0
    assert plain[DEFAULT_STRENGTH] > plain[0.0] - 2.5


@pytest.mark.parametrize(
    ("method", "strength", "message"),
    [
        ("bayer", 1.0, "dither method must be one of ordered, blue-noise"),
        ("ordered", -0.5, "strength must be 0 to 4"),
        ("blue-noise", float("nan"), "strength must be 0 to 4"),
        ("blue-noise", 4.5, "strength must be 0 to 4"),
    ],
)
def test_bad_settings_are_refused(small_photo, method, strength, message):
    fit = fitted(small_photo, 8)
    with pytest.raises(ValueError, match=message):
        dither_block(small_photo, 0, 0, fit.palette, method, strength, labeller(fit, 8))


def test_a_job_dithers_the_same_whatever_the_path(tmp_path, write_image):
    import dask

    from pipeline import compress, open_store

    y, x = np.mgrid[0:300, 0:400]
    ramp = np.stack([x * 255 // 399, y * 255 // 299, (x + y) * 255 // 698], -1).astype(np.uint8)
    path = write_image("ramp.png", ramp)
    labels = {}
    for name, chunk, batch in (("whole", 1024, 4 << 20), ("chunked", 64, 1000)):
        store = str(tmp_path / f"{name}.zarr")
        with dask.config.set({"pipeline.batch-pixels": batch}):
            (result,) = compress([path], store, colors=16, dither="blue-noise", chunk=chunk)
        assert result.status == "done", result.error
        image = open_store(store)["ramp.png"]
        labels[name] = np.asarray(image.labels[...])
        assert image.attrs["fit_settings"]["dither"] == "blue-noise"
        assert image.attrs["fit_settings"]["dither_strength"] == 0.75
    assert np.array_equal(labels["whole"], labels["chunked"])
    plain = str(tmp_path / "plain.zarr")
    compress([path], plain, colors=16)
    undithered = open_store(plain)["ramp.png"]
    assert "dither" not in undithered.attrs["fit_settings"]
    assert not np.array_equal(np.asarray(undithered.labels[...]), labels["whole"])


def test_an_image_stored_exactly_is_not_dithered(tmp_path, write_image):
    from pipeline import compress, open_store

    levels = np.repeat(np.arange(0, 256, 4, dtype=np.uint8), 3)[:150]  # 64 gray levels
    gray = np.tile(levels, (40, 1))
    path = write_image("steps.png", gray)
    store = str(tmp_path / "s.zarr")
    compress([path], store, colors=128, dither="blue-noise")
    image = open_store(store)["steps.png"]
    assert image.attrs["metrics"]["psnr_db"] is None  # lossless, as without dithering
