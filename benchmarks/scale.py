"""Scale: a 100-megapixel JPEG, gigapixel tiled TIFFs, and a batch of 1000 small photos.

Inputs are generated from the bundled photos by mirror-tiling (nothing is downloaded) into a
work folder. Every comparison is made in the same run:

* jpeg: decode only (imageio, and imagecodecs as the job decodes; best of 3) vs the whole job
  (local cluster, 2 workers, started and preloaded before timing; best of 2) vs the original
  recipe (decode, scikit-learn KMeans on 1000 pixels, n_init=10, then ``predict`` of every
  pixel; once), on the same file, read once beforehand so that it is in the page cache.
* tiff: ``python -m pipeline run`` on tiled TIFFs of the given sizes, on the cluster ``auto``
  picks and on 2 worker processes; wall time, megapixels per second (of the file's own
  pixels) and peak resident memory summed over the job's processes (psutil, every 0.1 s).
* batch: N small photos (the bundled ones under different names): images/s of the job, at the
  default effort and at ``--effort 0``, vs the recipe reading the same files one after another,
  with mean PSNR.

Usage: python benchmarks/scale.py [--only jpeg tiff batch] [--jpeg-mp 100] [--tiff-gp 0.25 1]
       [--batch 1000] [--work DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).parent))
from photo8 import PHOTOS, load, psnr, recipe


def mirror(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` mirror-tiled to (height, width)."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, max(0, height - h)), (0, max(0, width - w)), (0, 0)), "symmetric")[
        :height, :width
    ]


def make_jpeg(folder: Path, megapixels: float) -> Path:
    import imageio.v3 as iio

    side = int((megapixels * 1e6) ** 0.5)
    path = folder / f"china_{megapixels:g}mp.jpg"
    if not path.exists():
        iio.imwrite(path, mirror(load(*PHOTOS["china"]), side, side), quality=90)
    return path


def make_tiff(folder: Path, gigapixels: float, tile: int = 512) -> Path:
    """A tiled TIFF of flower.jpg mirror-tiled, written one row of tiles at a time."""
    import dask.array as da

    from pipeline.outputs.files import write_tiled_tiff

    side = int((gigapixels * 1e9) ** 0.5) // tile * tile
    path = folder / f"flower_{gigapixels:g}gp.tif"
    if path.exists():
        return path
    flower = load(*PHOTOS["flower"])
    top = np.concatenate([flower, flower[:, ::-1]], axis=1)
    mirrored = np.concatenate([top, top[::-1]], axis=0)
    block = da.from_array(mirrored)
    row = da.concatenate([block] * -(-side // mirrored.shape[1]), axis=1)
    image = da.concatenate([row] * -(-side // mirrored.shape[0]), axis=0)[:side, :side]
    write_tiled_tiff(image, str(path), tile=tile)
    return path


def peak_memory(command: list[str]) -> tuple[float, float, int]:
    """Run ``command``; return wall seconds, peak RSS summed over its process tree (GiB), rc."""
    import psutil

    start = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                total = sum(p.memory_info().rss for p in tree if p.is_running())
            except psutil.Error:
                continue
            peak = max(peak, total)
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = process.communicate()
    done.set()
    watcher.join()
    if process.returncode:
        print(err.decode()[-2000:], file=sys.stderr)
    return time.perf_counter() - start, peak / 2**30, process.returncode


def bench_jpeg(folder: Path, megapixels: float, client) -> None:
    import imagecodecs
    import imageio.v3 as iio

    from pipeline import compress

    path = make_jpeg(folder, megapixels)
    path.read_bytes()  # every timing starts with the file in the page cache

    def best(step, repeat: int = 3) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return min(times)

    decode = best(lambda: iio.imread(path))
    turbo = best(lambda: imagecodecs.jpeg8_decode(path.read_bytes()))
    results = []
    job = best(
        lambda: results.append(
            compress([str(path)], str(folder / "jpeg.zarr"), client=client, overwrite=True)[0]
        ),
        repeat=2,
    )
    result = results[-1]
    start = time.perf_counter()
    image = iio.imread(path)  # the recipe starts from the file too
    rebuilt = recipe(image, 128)
    classic = time.perf_counter() - start
    print(f"\n## {megapixels:g}-megapixel JPEG, k = 128, local cluster 2 workers x 1 thread")
    print("| step | seconds | vs decode (imageio) | PSNR dB |\n|---|---|---|---|")
    print(f"| decode only, imageio | {decode:.2f} | 1.00x | |")
    print(f"| decode only, imagecodecs (as the job) | {turbo:.2f} | {turbo / decode:.2f}x | |")
    print(f"| pipeline job | {job:.2f} | {job / decode:.2f}x | {result.metrics['psnr_db']:.2f} |")
    quality = psnr(image, rebuilt)
    row = f"{classic:.2f} | {classic / decode:.2f}x | {quality:.2f}"
    print(f"| original recipe, decode included | {row} |")
    print(f"pipeline vs recipe: {classic / job:.1f}x faster; vs decoder: {job / turbo:.2f}x")


def bench_tiff(folder: Path, sizes: list[float]) -> None:
    print("\n## tiled TIFF, k = 128, python -m pipeline run: auto cluster, and --workers 2")
    print("| gigapixels | cluster | seconds | MP/s | peak RSS, all processes (GiB) |")
    print("|---|---|---|---|---|")
    for size in sizes:
        path = make_tiff(folder, size)
        with tifffile.TiffFile(path) as tif:
            height, width = tif.pages[0].shape[:2]
        for cluster, options in (("auto", []), ("--workers 2", ["--workers", "2"])):
            command = [sys.executable, "-m", "pipeline", "run", str(path), *options]
            command += ["-o", str(folder / f"tiff{size:g}.zarr"), "--overwrite"]
            seconds, peak, rc = peak_memory(command)
            rate = height * width / 1e6 / seconds
            row = f"| {size:g} | {cluster} | {seconds:.1f} | {rate:.1f} | {peak:.2f} |"
            print(row + ("" if rc == 0 else f" (exit {rc})"))


def bench_batch(folder: Path, count: int, client) -> None:
    import shutil

    from pipeline import compress

    batch = folder / f"batch{count}"
    batch.mkdir(exist_ok=True)
    import imageio.v3 as iio

    # the six small photos (retina and hubble_deep_field are 2 and 0.9 megapixels)
    small = [n for n in PHOTOS if n not in ("retina", "hubble_deep_field")]
    originals = {n: load(*PHOTOS[n]) for n in small}
    keys = list(originals)
    for i in range(count):
        target = batch / f"{i:04d}_{keys[i % len(keys)]}.png"
        if not target.exists():
            iio.imwrite(target, originals[keys[i % len(keys)]])
    paths = sorted(batch.glob("*.png"))[:count]
    jobs = []
    for label, settings in (("", {}), (", --effort 0", {"effort": 0})):
        start = time.perf_counter()
        results = compress(
            [str(p) for p in paths],
            str(folder / "batch.zarr"),
            client=client,
            overwrite=True,
            **settings,
        )
        seconds = time.perf_counter() - start
        quality = np.mean([r.metrics["psnr_db"] for r in results if r.status == "done"])
        jobs.append((label, seconds, quality))
    start = time.perf_counter()
    classic = []
    for path in paths:  # the recipe reads the same files
        image = iio.imread(path)
        classic.append(psnr(image, recipe(image, 128)))
    sequential = time.perf_counter() - start
    shutil.rmtree(folder / "batch.zarr", ignore_errors=True)
    print(f"\n## {count} small photos, k = 128")
    print("| method | images/s | vs recipe | mean PSNR dB |\n|---|---|---|---|")
    for label, seconds, quality in jobs:
        row = f"{count / seconds:.2f} | {sequential / seconds:.2f}x | {quality:.2f}"
        print(f"| pipeline job, 2 workers{label} | {row} |")
    row = f"{count / sequential:.2f} | 1.00x | {np.mean(classic):.2f}"
    print(f"| original recipe, sequential | {row} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["jpeg", "tiff", "batch"])
    parser.add_argument("--jpeg-mp", type=float, default=100)
    parser.add_argument("--tiff-gp", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--work", default=None, help="folder for generated inputs (kept)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    folder = Path(args.work or tempfile.mkdtemp(prefix="pipeline-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"inputs in {folder}")
    if "tiff" in args.only:
        bench_tiff(folder, args.tiff_gp)
    if {"jpeg", "batch"} & set(args.only):
        from pipeline.job.cluster import connect

        with connect(None, workers=2, dashboard_address="127.0.0.1:0") as client:
            if "jpeg" in args.only:
                bench_jpeg(folder, args.jpeg_mp, client)
            if "batch" in args.only:
                bench_batch(folder, args.batch, client)


if __name__ == "__main__":
    main()
