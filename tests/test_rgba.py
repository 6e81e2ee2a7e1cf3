"""Transparency: RGBA palettes fitted and assigned on premultiplied colours, exactly."""

import numpy as np
import pytest

from pipeline import rgba


def icon(size=96, seed=0):
    """A colourful image on a transparent background, with soft edges and a faded strip."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    colour = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1)
    colour = np.clip(colour + rng.integers(-6, 7, colour.shape), 0, 255)
    radius = np.hypot(y - size / 2, x - size / 2)
    alpha = np.clip((size * 0.4 - radius) * 40, 0, 255)
    alpha[:, : size // 8] = x[:, : size // 8] * 255 // (size // 8)
    image = np.concatenate([colour, alpha[..., None]], axis=-1).astype(np.uint8)
    # hidden colours of transparent pixels vary, as in real files
    hidden = image[..., 3] == 0
    image[hidden, :3] = rng.integers(0, 256, (int(hidden.sum()), 3))
    return image


def brute(colours, palette):
    p = rgba.premultiplied(colours)[:, None, :] - rgba.premultiplied(palette)[None, :, :]
    dist = (p * p).sum(axis=2)
    return dist.argmin(axis=1), dist.min(axis=1)


def test_pack_round_trip_and_canonical_transparency():
    colours = np.random.default_rng(0).integers(0, 256, (1000, 4), dtype=np.uint8)
    assert np.array_equal(rgba.unpack(rgba.pack(colours)), colours)
    colours[:, 3] = np.maximum(colours[:, 3], 1)
    colours[:10, 3] = 0
    canon = rgba.canonical(colours)
    assert not canon[:10].any()
    assert np.array_equal(canon[10:], colours[10:])


def test_nearest_is_exact_with_ties_to_the_lowest_index():
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (3000, 4), dtype=np.uint8)
    colours[:500, 3] = 255
    colours[500:700, 3] = 0
    palette = rng.integers(0, 256, (40, 4), dtype=np.uint8)
    palette[7] = palette[3]  # an exact tie everywhere: 3 wins
    labels, dist = rgba.nearest(colours, palette)
    expected_labels, expected_dist = brute(colours, palette)
    assert np.array_equal(labels, expected_labels)
    assert np.array_equal(dist, expected_dist)
    assert not (labels == 7).any()


def test_opaque_distances_are_rgb_distances_scaled():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (200, 4), dtype=np.uint8)
    b = rng.integers(0, 256, (200, 4), dtype=np.uint8)
    a[:, 3] = b[:, 3] = 255
    premult = rgba.premultiplied(a) - rgba.premultiplied(b)
    rgb = a[:, :3].astype(np.int64) - b[:, :3]
    assert np.array_equal((premult * premult).sum(axis=1), rgba.FULL * (rgb * rgb).sum(axis=1))


def test_straight_inverts_premultiplied():
    colours = np.random.default_rng(3).integers(0, 256, (500, 4), dtype=np.uint8)
    colours[:, 3] = np.maximum(colours[:, 3], 200)  # where 8-bit alpha keeps the colour exact
    back = rgba.straight(rgba.premultiplied(colours).astype(np.float64))
    assert np.array_equal(back, colours)
    assert not rgba.straight(np.array([[5.0, 9.0, 3.0, 100.0]])).any()  # alpha rounds to 0


@pytest.mark.parametrize("k", [4, 32, 200])
def test_fit_keeps_every_entry_and_its_labels_are_exact(k):
    image = icon()
    keys, counts = rgba.histogram(image)
    flat = image.reshape(-1, 4)
    sample = flat[np.random.default_rng(0).choice(len(flat), 2000, replace=False)]
    palette, labels, info = rgba.fit_rgba(sample, keys, counts, k, random_state=0)
    assert len(palette) == min(k, len(keys))
    assert np.array_equal(labels, brute(rgba.unpack(keys), palette)[0])
    assert np.array_equal(np.unique(labels), np.arange(len(palette)))
    transparent = palette[palette[:, 3] == 0]
    assert not transparent.any()  # a transparent entry is (0, 0, 0, 0)
    # every fully transparent pixel, whatever colour it hides, gets one entry
    block_labels, error = rgba.label_rgba(image, palette, np.dtype(np.uint8))
    assert len(np.unique(block_labels[image[..., 3] == 0])) == 1
    assert error / rgba.FULL / (4 * image.shape[0] * image.shape[1]) == pytest.approx(info["mse"])


def test_block_labels_do_not_depend_on_the_chunking():
    image = icon(120, seed=4)
    keys, counts = rgba.histogram(image)
    palette, _, _ = rgba.fit_rgba(image.reshape(-1, 4)[:3000], keys, counts, 24, random_state=1)
    whole, error = rgba.label_rgba(image, palette, np.dtype(np.uint8))
    for size in (17, 50):
        total = 0
        for top in range(0, 120, size):
            for left in range(0, 120, size):
                part = (slice(top, top + size), slice(left, left + size))
                labels, e = rgba.label_rgba(image[part], palette, np.dtype(np.uint8))
                assert np.array_equal(labels, whole[part])
                total += e
        assert total == error


def test_few_colours_are_kept_exactly():
    image = np.zeros((10, 10, 4), dtype=np.uint8)
    image[:5] = (255, 0, 0, 128)
    image[5:, :5] = (0, 0, 255, 255)
    keys, counts = rgba.histogram(image)
    palette, _labels, info = rgba.fit_rgba(image.reshape(-1, 4), keys, counts, 8, random_state=0)
    assert len(palette) == 3
    assert info["mse"] == 0
    assert rgba.opaque(image[5:, :5])
    assert not rgba.opaque(image)
