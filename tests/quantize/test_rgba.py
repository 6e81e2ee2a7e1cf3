"""Transparency: RGBA palettes fitted and assigned on premultiplied colours, exactly."""

import numpy as np
import pytest

from pipeline.quantize import rgba


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
    p = rgba.seen(colours)[:, None, :] - rgba.seen(palette)[None, :, :]
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


def test_distances_are_errors_over_black_and_white():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (200, 4), dtype=np.uint8)
    b = rng.integers(0, 256, (200, 4), dtype=np.uint8)
    diff = rgba.seen(a) - rgba.seen(b)
    distance = (diff * diff).sum(axis=1)

    def over(x, background):
        alpha = x[:, 3:].astype(np.float64) / 255
        return x[:, :3] * alpha + background * (1 - alpha)

    expected = sum(((over(a, v) - over(b, v)) ** 2).sum(axis=1) for v in (0.0, 255.0))
    assert np.allclose(distance / rgba.FULL, expected)
    # opaque colours: twice the RGB distance, so the same nearest entry as in RGB
    a[:, 3] = b[:, 3] = 255
    diff = rgba.seen(a) - rgba.seen(b)
    rgb = a[:, :3].astype(np.int64) - b[:, :3]
    assert np.array_equal((diff * diff).sum(axis=1), 2 * rgba.FULL * (rgb * rgb).sum(axis=1))


def test_straight_inverts_seen():
    colours = np.random.default_rng(3).integers(0, 256, (500, 4), dtype=np.uint8)
    colours[:, 3] = np.maximum(colours[:, 3], 200)  # where 8-bit alpha keeps the colour exact
    back = rgba.straight(rgba.seen(colours).astype(np.float64))
    assert np.array_equal(back, colours)
    nearly_clear = rgba.seen(np.array([[5, 9, 3, 0]], dtype=np.uint8)).astype(float) + 40
    assert not rgba.straight(nearly_clear).any()  # alpha rounds to 0


def test_opaque_regions_stay_opaque():
    # clusters that mixed opaque and soft-edge pixels made whole regions see-through
    image = icon(160)
    keys, counts = rgba.histogram(image)
    flat = image.reshape(-1, 4)
    sample = flat[np.random.default_rng(0).choice(len(flat), 3000, replace=False)]
    palette, _, _ = rgba.fit_rgba(sample, keys, counts, 32, random_state=0)
    labels, _ = rgba.label_rgba(image, palette, np.dtype(np.uint8))
    inside = image[..., 3] == 255
    assert (palette[labels][inside][:, 3] >= 250).mean() > 0.99


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
    assert error / rgba.FULL / (6 * image.shape[0] * image.shape[1]) == pytest.approx(info["mse"])


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


def test_a_job_keeps_transparency_and_leaves_opaque_images_unchanged(tmp_path, write_image):
    from pipeline import compress, open_store, reconstruct, verify_store

    image = icon(120, seed=6)
    opaque_rgba = image.copy()
    opaque_rgba[..., 3] = 255
    paths = [
        write_image("clear.png", image),
        write_image("opaque.png", opaque_rgba),
        write_image("rgb.png", np.ascontiguousarray(opaque_rgba[..., :3])),
    ]
    store = str(tmp_path / "s.zarr")
    results = compress(paths, store, colors=24, sample=2000)
    assert [r.status for r in results] == ["done"] * 3
    images = open_store(store)
    clear = images["clear.png"]
    assert clear.palette.shape == (24, 4)
    assert clear.attrs["image_shape"] == [120, 120, 4]
    assert clear.attrs["source"]["conversion"] == "alpha kept unless fully opaque"
    assert clear.attrs["metrics"]["raw_bytes"] == 4 * 120 * 120
    rebuilt = np.asarray(reconstruct(store, "clear.png"))
    assert rebuilt.shape == (120, 120, 4)
    assert (rebuilt[image[..., 3] == 0] == 0).all()  # transparent stays transparent
    assert abs(rebuilt[..., 3].astype(int) - image[..., 3]).mean() < 8
    # an RGBA file whose every pixel is opaque is stored exactly as the same RGB image
    opaque, rgb = images["opaque.png"], images["rgb.png"]
    assert opaque.palette.shape == (24, 3)
    assert np.array_equal(opaque.palette, rgb.palette)
    assert np.array_equal(opaque.labels[...], rgb.labels[...])
    assert opaque.attrs["digests"] == rgb.attrs["digests"]
    findings = list(verify_store(store))
    assert [f.problems for f in findings] == [[], [], []]
    assert all(f.checked for f in findings)
