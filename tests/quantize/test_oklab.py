import numpy as np
import pytest
from skimage.color import rgb2xyz

from pipeline.quantize import oklab
from pipeline.quantize.colours import (
    FEW_CENTRES,
    GUIDED_FROM,
    coordinates,
    nearest,
    nearest_centre,
    to_uint8,
)
from pipeline.quantize.oklab import M2, RGB_FACTOR, RGB_SHARE, WEIGHTS
from tests.oracles import oklab_brute_force


def plain_oklab(colours):
    return oklab.coordinates(np.asarray(colours, dtype=np.uint8))[..., 3:] / WEIGHTS


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        # CSS Color 4 / Ottosson's values for the sRGB primaries, white and black
        ((255, 0, 0), (0.627955, 0.224863, 0.125846)),
        ((0, 255, 0), (0.866440, -0.233888, 0.179498)),
        ((0, 0, 255), (0.452014, -0.032457, -0.311528)),
        ((255, 255, 255), (1.0, 0.0, 0.0)),
        ((0, 0, 0), (0.0, 0.0, 0.0)),
    ],
)
def test_known_oklab_values(rgb, expected):
    np.testing.assert_allclose(plain_oklab([rgb])[0], expected, atol=2e-6)


def test_oklab_agrees_with_an_independent_path_through_xyz(china):
    """scikit-image's sRGB to XYZ, then Ottosson's XYZ to LMS matrix: the same space."""
    pixels = china.reshape(-1, 3)[::37]
    xyz = rgb2xyz(pixels[None].astype(np.float64) / 255)[0]
    xyz_to_lms = np.array(
        [
            [0.8189330101, 0.3618667424, -0.1288597137],
            [0.0329845436, 0.9293118715, 0.0361456387],
            [0.0482003018, 0.2643662691, 0.6338517070],
        ]
    )
    expected = np.cbrt(xyz @ xyz_to_lms.T) @ M2.T
    np.testing.assert_allclose(plain_oklab(pixels), expected, atol=2e-4)


def test_linearisation_table_is_the_srgb_transfer_function():
    v = np.arange(256) / 255
    exact = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    assert np.array_equal(oklab.SRGB_TO_LINEAR, exact)
    assert np.all(np.diff(oklab.SRGB_TO_LINEAR) > 0)


def test_back_to_uint8_recovers_every_colour():
    rng = np.random.default_rng(0)
    colours = np.concatenate(
        [
            rng.integers(0, 256, (50_000, 3), dtype=np.uint8),
            np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1),  # grays
            np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], np.uint8) * 255,
        ]
    )
    assert np.array_equal(to_uint8(coordinates(colours, "oklab"), "oklab"), colours)
    assert np.array_equal(to_uint8(coordinates(colours, "rgb"), "rgb"), colours)


def test_coordinates_blend_rgb_and_weighted_oklab():
    """Six coordinates: RGB times one factor, then OKLab weighted; the squared distance is
    RGB_SHARE of the squared RGB distance and the rest of the weighted OKLab one."""
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 256, (2, 1000, 3), dtype=np.uint8)
    ca, cb = coordinates(a, "oklab"), coordinates(b, "oklab")
    assert ca.shape == (1000, 6)
    assert np.array_equal(ca[:, :3], a * RGB_FACTOR)
    rgb = ((a.astype(float) - b) ** 2).sum(axis=1) / 255**2
    lab = (((plain_oklab(a) - plain_oklab(b)) * oklab.LAB_WEIGHTS) ** 2).sum(axis=1)
    expected = oklab.SCALE**2 * (RGB_SHARE * rgb + (1 - RGB_SHARE) * lab)
    np.testing.assert_allclose(((ca - cb) ** 2).sum(axis=1), expected, rtol=1e-9)


def candidates(point):
    """The colours to_uint8 chooses among: two roundings and their neighbours (own oracle)."""
    guesses = [point[:3] / RGB_FACTOR, oklab.to_srgb(point[3:])]
    steps = np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3)
    bases = [np.rint(np.clip(g, 0, 255)).astype(int) for g in guesses]
    return np.concatenate([np.clip(base + steps, 0, 255) for base in bases]).astype(np.uint8)


def test_to_uint8_is_the_nearest_candidate():
    """Means of colours (palette centres) go to the nearest of the candidate colours in the
    six-dimensional distance, the first on ties; the answer is never farther than rounding the
    RGB part alone."""
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, (300, 40, 3), dtype=np.uint8)
    spread = colours // rng.integers(1, 8, (300, 1, 1)).astype(np.uint8)  # some clusters tight
    means = coordinates(spread, "oklab").mean(axis=1)
    chosen = to_uint8(means, "oklab")
    for point, colour in zip(means, chosen, strict=True):
        options = candidates(point)
        d = ((coordinates(options, "oklab") - point) ** 2).sum(axis=1)
        assert colour.tolist() == options[d.argmin()].tolist()
        rounded = np.rint(point[:3] / RGB_FACTOR).astype(np.uint8)
        assert d.min() <= ((coordinates(rounded, "oklab") - point) ** 2).sum()
    assert np.array_equal(to_uint8(means.reshape(20, 15, 6), "oklab").reshape(-1, 3), chosen)


def test_out_of_gamut_points_are_clipped():
    points = np.array(
        [
            [80.0, 80.0, 0.0, 50.0, 60.0, 0.0],
            [-10.0, -5.0, 0.0, -10.0, 0.0, 0.0],
            [0.0, 90.0, 90.0, 40.0, -80.0, -80.0],
        ]
    )
    colours = to_uint8(points, "oklab")
    assert colours.dtype == np.uint8
    assert colours[1].tolist() == [0, 0, 0]


def test_coordinates_are_the_same_in_any_batch(china):
    pixels = china.reshape(-1, 3)[:5000]
    whole = coordinates(pixels, "oklab")
    one_by_one = np.concatenate([coordinates(p[None], "oklab") for p in pixels[:200]])
    assert np.array_equal(whole[:200], one_by_one)
    assert np.array_equal(coordinates(pixels.reshape(50, 100, 3), "oklab").reshape(-1, 6), whole)


def test_unknown_space_is_refused():
    with pytest.raises(ValueError, match="unknown colour space 'lab'"):
        coordinates(np.zeros((1, 3), np.uint8), "lab")


def near_tie_palette(rng, k):
    """Entries in clusters of colours one or two steps apart, with duplicates: near ties."""
    centres = rng.integers(0, 256, (max(1, k // 4), 3))
    steps = rng.integers(-2, 3, (k, 3))
    palette = np.clip(centres[rng.integers(0, len(centres), k)] + steps, 0, 255).astype(np.uint8)
    palette[rng.random(k) < 0.1] = palette[0]
    return palette


@pytest.mark.parametrize("seed", range(12))
def test_oklab_nearest_equals_brute_force_with_near_ties(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([2, FEW_CENTRES, FEW_CENTRES + 1, 40, 128, 300]))
    palette = near_tie_palette(rng, k) if seed % 2 else rng.integers(0, 256, (k, 3), np.uint8)
    n = GUIDED_FROM * k + int(rng.integers(0, 2000))  # guided search from k > FEW_CENTRES
    around = palette[rng.integers(0, k, n)].astype(np.int64) + rng.integers(-3, 4, (n, 3))
    pixels = np.concatenate(
        [
            np.clip(around, 0, 255).astype(np.uint8),  # pixels among close entries
            rng.integers(0, 256, (n, 3), dtype=np.uint8),  # anywhere
            palette,  # exactly on entries (duplicates: the first one)
        ]
    )
    expected = oklab_brute_force(pixels, palette)
    assert np.array_equal(nearest(pixels, palette, space="oklab"), expected)


@pytest.mark.parametrize("dims", [3, 6])
@pytest.mark.parametrize("scale", [2.0**-40, 2.0**-10, 1.0, 2.0**20, 2.0**60])
def test_guided_search_keeps_exact_ties_at_any_scale(scale, dims):
    """Exact ties (points midway between entries, scaled by powers of two) go to the lowest
    index however large or small the coordinates, in three or six dimensions: the search's
    margin is relative."""
    rng = np.random.default_rng(1)
    side = np.arange(0, 12, 2) if dims == 3 else np.arange(0, 6, 2)
    grid = np.stack(np.meshgrid(*[side] * dims, indexing="ij"), -1).reshape(-1, dims)
    centres = grid[rng.permutation(len(grid))].astype(np.float64)  # spacing 2
    points = rng.integers(0, side[-1] - 1, (GUIDED_FROM * len(centres), dims)).astype(np.float64)
    labels, dist = nearest_centre(points * scale, centres * scale)
    d = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert np.array_equal(labels, d.argmin(axis=1))
    assert np.array_equal(dist, d.min(axis=1) * scale * scale)
