import numpy as np
import pytest
from sklearn.cluster import KMeans

from pipeline.quantize.colours import histogram, nearest, pack
from pipeline.quantize.fit import fit_palette, lloyd_sample, polish, seed
from pipeline.quantize.sample import sample_positions
from tests.oracles import brute_force, oklab_brute_force, photo_psnr


def draw(image, n, random_state=0):
    rows, cols = sample_positions(image.shape[:2], n, random_state)
    return image[rows, cols]


def rounded(centres):
    return np.clip(np.rint(np.asarray(centres, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def rebuilt_psnr(image, palette):
    return photo_psnr(image, palette[brute_force(image, palette)])


@pytest.mark.parametrize("k", [16, 128])
def test_dask_ml_fit_matches_scikit_learn_on_the_same_sample_and_seeds(photo, k):
    x = draw(photo, 5000).astype(np.float32) / 255
    init = seed(x, k, random_state=0)
    ours, _ = lloyd_sample(x, init, max_iter=100, tol=1e-7, random_state=0)
    ref = KMeans(n_clusters=k, init=init, n_init=1, max_iter=100, tol=1e-7, random_state=0).fit(x)
    ours_db = rebuilt_psnr(photo, rounded(ours))
    ref_db = rebuilt_psnr(photo, rounded(ref.cluster_centers_))
    assert abs(ours_db - ref_db) < 0.05


def test_empty_clusters_are_reseeded_not_black():
    # 3 distinct colours in the sample, 6 clusters asked: dask-ml leaves some empty
    x = np.repeat(np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]], np.float32), 50, 0)
    init = np.array([[0.9, 0.1, 0.1]] * 4 + [[0.1, 0.9, 0.1], [0.1, 0.1, 0.9]], np.float32)
    centres, _ = lloyd_sample(x, init, max_iter=5, tol=0, random_state=0)
    assert not np.any(np.all(centres == 0, axis=1))
    assert set(map(tuple, np.round(centres, 3))) <= set(map(tuple, np.round(x, 3)))


def test_fewer_colours_than_asked_gives_the_exact_colours():
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    image = colours[rng.integers(0, 5, (40, 30))]
    keys, counts = histogram(image)
    fit = fit_palette(draw(image, 1000), keys, counts, 16, random_state=0)
    assert len(fit.palette) == 5
    assert sorted(map(tuple, fit.palette)) == sorted(map(tuple, colours))
    assert fit.info["mse"] == 0
    assert np.array_equal(fit.palette[brute_force(image, fit.palette)], image)


def test_no_black_entry_when_the_image_has_no_black(small_photo):
    bright = (small_photo // 2 + 100).astype(np.uint8)
    keys, counts = histogram(bright)
    fit = fit_palette(draw(bright, 2000), keys, counts, 64, random_state=0)
    assert fit.palette.min() >= 100


def test_labels_of_the_fit_are_exact_for_its_palette(small_photo):
    keys, counts = histogram(small_photo)
    fit = fit_palette(draw(small_photo, 3000), keys, counts, 32, random_state=1)
    from pipeline.quantize.colours import unpack

    assert np.array_equal(fit.labels, brute_force(unpack(fit.keys), fit.palette))
    assert len(np.unique(fit.labels)) == len(fit.palette)  # every entry used


def test_polish_never_increases_the_error(small_photo):
    keys, counts = histogram(small_photo)
    from pipeline.quantize.colours import unpack

    colours = unpack(keys)
    start = colours[:: len(colours) // 24][:24]

    def sse(palette):
        return float(
            ((colours.astype(float) - palette[nearest(colours, palette)]) ** 2).sum(1) @ counts
        )

    polished, labels, _ = polish(colours, counts, start, max_iter=10)
    assert sse(polished) <= sse(start)
    assert np.array_equal(labels, brute_force(colours, polished))


def test_refinement_beats_the_original_recipe(photo):
    """The classic recipe: scikit-learn KMeans, 1000-pixel sample, n_init=10."""
    recipe = KMeans(n_clusters=64, n_init=10, random_state=0).fit(
        draw(photo, 1000).astype(np.float32) / 255
    )
    recipe_db = rebuilt_psnr(photo, rounded(recipe.cluster_centers_))
    keys, counts = histogram(photo)
    fit = fit_palette(draw(photo, 10_000), keys, counts, 64, random_state=0)
    ours_db = rebuilt_psnr(photo, fit.palette)
    assert ours_db == pytest.approx(10 * np.log10(255**2 / fit.info["mse"]), abs=1e-9)
    assert ours_db > recipe_db + 0.3


def test_fit_is_deterministic(small_photo):
    keys, counts = histogram(small_photo)
    a = fit_palette(draw(small_photo, 3000), keys, counts, 32, random_state=5)
    b = fit_palette(draw(small_photo, 3000), keys, counts, 32, random_state=5)
    assert np.array_equal(a.palette, b.palette)
    assert np.array_equal(a.labels, b.labels)


def test_more_effort_never_fits_worse(small_photo):
    keys, counts = histogram(small_photo)
    sample = draw(small_photo, 3000)
    mse = [
        fit_palette(sample, keys, counts, 48, random_state=0, effort=e).info["mse"]
        for e in range(4)
    ]
    assert mse[1] < mse[0]
    assert mse[3] <= mse[2] * 1.001


def oklab_error(colours, counts, palette, labels):
    from pipeline.quantize.colours import coordinates

    diff = coordinates(colours, "oklab") - coordinates(palette, "oklab")[labels]
    return float(((diff * diff).sum(axis=1) * counts).sum())


def mean_de00(image, palette, labels):
    from skimage.color import deltaE_ciede2000, rgb2lab

    pixels = image.reshape(-1, 3)
    rebuilt = palette[labels.reshape(-1)]
    return float(deltaE_ciede2000(rgb2lab(pixels[None] / 255), rgb2lab(rebuilt[None] / 255)).mean())


@pytest.mark.parametrize(("k", "effort"), [(8, 1), (48, 0), (48, 3), (300, 1)])
def test_oklab_fit_labels_are_exact_in_oklab(small_photo, k, effort):
    from pipeline.quantize.colours import unpack

    keys, counts = histogram(small_photo)
    fit = fit_palette(
        draw(small_photo, 3000), keys, counts, k, random_state=0, effort=effort, space="oklab"
    )
    assert fit.space == "oklab"
    assert fit.palette.dtype == np.uint8
    assert np.array_equal(fit.labels, oklab_brute_force(unpack(fit.keys), fit.palette))
    assert len(np.unique(fit.labels)) == len(fit.palette) == k  # every entry used, none short
    rgb_mse = ((unpack(keys).astype(float) - fit.palette[fit.labels]) ** 2).sum(1) @ counts
    assert fit.info["mse"] == pytest.approx(rgb_mse / (3 * counts.sum()), rel=1e-12)


def test_oklab_fit_lowers_the_perceptual_error(china):
    """Fitting and labelling in OKLab lowers the mean CIEDE2000 error against the RGB fit."""
    keys, counts = histogram(china)
    sample = draw(china, 5000)
    fits = {
        space: fit_palette(sample, keys, counts, 32, random_state=0, space=space)
        for space in ("rgb", "oklab")
    }
    index = np.searchsorted(keys, pack(china))
    de00 = {s: mean_de00(china, f.palette, f.labels[index]) for s, f in fits.items()}
    assert de00["oklab"] < de00["rgb"] - 0.15
    assert fits["rgb"].space == "rgb"


def test_oklab_fit_is_deterministic(small_photo):
    keys, counts = histogram(small_photo)
    a, b = (
        fit_palette(draw(small_photo, 3000), keys, counts, 24, random_state=3, space="oklab")
        for _ in range(2)
    )
    assert np.array_equal(a.palette, b.palette)
    assert np.array_equal(a.labels, b.labels)


def test_oklab_few_colours_and_gray_images_are_labelled_in_oklab(small_photo):
    from pipeline.quantize.colours import unpack

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    few = colours[rng.integers(0, 5, (40, 30))]
    gray = np.repeat(small_photo[..., 1:2], 3, axis=2)
    for image, k in ((few, 16), (gray, 12)):
        keys, counts = histogram(image)
        fit = fit_palette(draw(image, 1000), keys, counts, k, random_state=0, space="oklab")
        assert np.array_equal(fit.labels, oklab_brute_force(unpack(fit.keys), fit.palette))
    assert fit.info["mse"] > 0  # the gray image needed fitting


def test_oklab_polish_keeps_its_best_palette(china):
    """Rounded OKLab means can raise the error (here the palette ends up oscillating between
    two): more iterations never return a worse palette."""
    from pipeline.quantize.colours import unpack

    keys, counts = histogram(china[:60, :80])
    colours = unpack(keys)
    start = colours[:: len(colours) // 32][:32]
    errors = []
    for max_iter in range(1, 13):
        polished, labels, _ = polish(colours, counts, start, max_iter=max_iter, space="oklab")
        assert np.array_equal(labels, oklab_brute_force(colours, polished))
        errors.append(oklab_error(colours, counts, polished, labels))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < oklab_error(colours, counts, start, oklab_brute_force(colours, start))


def test_unknown_space_is_refused(small_photo):
    keys, counts = histogram(small_photo)
    with pytest.raises(ValueError, match="unknown colour space"):
        fit_palette(draw(small_photo, 100), keys, counts, 8, random_state=0, space="lab")
