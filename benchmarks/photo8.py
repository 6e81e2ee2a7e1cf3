"""Quality and speed on eight real photos: the pipeline against the original recipe, in one run.

The original recipe is scikit-learn's colour-quantization example: KMeans(n_init=10) on a random
1000-pixel sample, then ``predict`` for every pixel. The pipeline row is its fit (sample, colour
counts, dask-ml KMeans, refinement) and its exact assignment, on the synchronous scheduler, from
the uint8 image in memory: the same work the recipe does. PSNR is over every RGB value with the
palette rounded to uint8; dE00 is the mean CIEDE2000 over up to 200,000 pixels. Times are the
median of ``--repeat`` runs per image.

Usage: python benchmarks/photo8.py [--k 16 64 128 256] [--repeat 3] [--effort 0 1 2 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from functools import partial
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from threadpoolctl import threadpool_info

PHOTOS = {
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
    "astronaut": ("skimage", "astronaut.png"),
    "coffee": ("skimage", "coffee.png"),
    "chelsea": ("skimage", "chelsea.png"),
    "motorcycle_left": ("skimage", "motorcycle_left.png"),
    "retina": ("skimage", "retina.jpg"),
    "hubble_deep_field": ("skimage", "hubble_deep_field.jpg"),
}


def load(package: str, name: str) -> np.ndarray:
    import imageio.v3 as iio
    import skimage
    import sklearn.datasets

    folder = (
        Path(sklearn.datasets.__file__).parent / "images"
        if package == "sklearn"
        else Path(skimage.__file__).parent / "data"
    )
    return np.asarray(iio.imread(folder / name))


def psnr(image: np.ndarray, rebuilt: np.ndarray) -> float:
    mse = np.mean((image.astype(np.float64) - rebuilt) ** 2)
    return float(10 * np.log10(255**2 / mse))


def de00(image: np.ndarray, rebuilt: np.ndarray) -> float:
    from skimage.color import deltaE_ciede2000, rgb2lab

    pixels = image.reshape(-1, 3)
    take = np.random.default_rng(0).permutation(len(pixels))[:200_000]
    a = rgb2lab(pixels[take][None].astype(np.float64) / 255)
    b = rgb2lab(rebuilt.reshape(-1, 3)[take][None].astype(np.float64) / 255)
    return float(deltaE_ciede2000(a, b).mean())


def recipe(image: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.utils import shuffle

    pixels = image.reshape(-1, 3).astype(np.float64) / 255
    model = KMeans(n_clusters=k, n_init=10, random_state=0).fit(
        shuffle(pixels, random_state=0, n_samples=1000)
    )
    palette = np.clip(np.rint(model.cluster_centers_ * 255), 0, 255).astype(np.uint8)
    return palette[model.predict(pixels)].reshape(image.shape)


def ours(image: np.ndarray, k: int, effort: int) -> np.ndarray:
    from pipeline.job.graph import assign, sample_and_counts
    from pipeline.job.tasks import fit_sampled
    from pipeline.settings import Settings

    settings = Settings.from_config(colors=k, effort=effort)
    arr = da.from_array(image, chunks=(settings.chunk, settings.chunk, 3))
    with dask.config.set(scheduler="synchronous"):
        sample, counts = dask.compute(
            *sample_and_counts(arr, settings.sample, 0, settings.count_pixels)
        )
        fit = fit_sampled(sample, counts, settings)
        labels = assign(arr, fit, k).compute()
    return fit.palette[labels]


RECIPE = "original recipe (sklearn, 1000 px, n_init=10)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--effort", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args()
    methods = {RECIPE: recipe}
    for effort in args.effort:
        methods[f"pipeline --effort {effort}"] = partial(ours, effort=effort)
    warnings.simplefilter("ignore")
    images = {name: load(*where) for name, where in PHOTOS.items()}
    blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info())
    pixels = sum(i.shape[0] * i.shape[1] for i in images.values())
    print(f"photo8: {len(images)} photos, {pixels:,} px; {blas}")
    ours(images["chelsea"], 16, 1)  # warm imports and caches before timing

    rows = []
    per_image: dict[str, dict[str, float]] = {}
    for k in args.k:
        for method, run in methods.items():
            quality, colour, seconds = [], [], []
            for name, image in images.items():
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    rebuilt = run(image, k)
                    times.append(time.perf_counter() - start)
                seconds.append(statistics.median(times))
                quality.append(psnr(image, rebuilt))
                colour.append(de00(image, rebuilt))
                if k == 128:
                    per_image.setdefault(name, {})[method] = quality[-1]
            rows.append((k, method, np.mean(quality), np.mean(colour), np.mean(seconds)))

    print("\n| k | method | PSNR dB | dE00 | s / image |")
    print("|---|---|---|---|---|")
    for k, method, q, c, s in rows:
        print(f"| {k} | {method} | {q:.2f} | {c:.2f} | {s:.3f} |")
    if per_image:
        names = list(methods)
        print("\nPer image at k = 128, PSNR dB:", " -> ".join(names))
        for name, values in per_image.items():
            print(f"  {name}: " + " -> ".join(f"{values[m]:.2f}" for m in names))


if __name__ == "__main__":
    main()
