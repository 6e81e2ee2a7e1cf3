"""Thumbnails (issue 26): many 32 x 32 PNGs at 16 colours, whole processes, against pngquant.

Inputs are 32 x 32 crops of the bundled photos and of scikit-image's (nothing is downloaded),
made once per count into ``WORK/thumbs-N``. Each round runs, one after the other:

* ``python -m pipeline run WORK/thumbs-N -o STORE --colors 16 --overwrite``: the command a user
  types, its default local cluster, from a folder without the package's sources;
* pngquant ``16 --nofs --speed 4`` over the same files in 2 processes (``xargs -P 2``), each
  writing beside its input (``--ext``, ``--force``).

Reported per count and command: wall seconds, CPU seconds of the whole process tree (its
children's resource usage, as ``/usr/bin/time`` counts it), images per second and CPU
milliseconds per image, the PSNR of the images' mean squared error (ours from the store's
metrics, pngquant's from its files against the inputs; some crops have 16 colours or fewer and
no error), and our rate against pngquant's in the same round. With
``--repeat R`` the rounds alternate and the table shows medians.

Usage: python benchmarks/thumbnails.py --work DIR [--sizes 1000 10000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIDE = 32
COLORS = 16


def photos() -> list[np.ndarray]:
    """The bundled sample photos and three of scikit-image's, RGB."""
    import skimage.data

    from pipeline.inputs.discover import sample_images
    from pipeline.inputs.sources import read_file

    found = [read_file(path) for path in sample_images()]
    found += [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    return [np.ascontiguousarray(image[..., :3]) for image in found]


def make_inputs(work: Path, count: int) -> Path:
    """``count`` 32 x 32 PNG crops at random places of the photos (seeded), made once."""
    import imageio.v3 as iio

    folder = work / f"thumbs-{count}"
    if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    images = photos()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = images[i % len(images)]
        y = int(rng.integers(0, image.shape[0] - SIDE))
        x = int(rng.integers(0, image.shape[1] - SIDE))
        iio.imwrite(folder / f"t{i:06d}.png", image[y : y + SIDE, x : x + SIDE])
    return folder


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of every process it waited for) of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def ours(folder: Path, store: Path, cwd: Path) -> tuple[float, float, float]:
    """Wall s, CPU s and mean PSNR of the pipeline's job on ``folder``."""
    import pipeline

    shutil.rmtree(store, ignore_errors=True)  # its images alone: none of an earlier run's
    command = [sys.executable, "-m", "pipeline", "run", str(folder), "-o", str(store)]
    wall, cpu = timed([*command, "--colors", str(COLORS), "--overwrite"], cwd)
    images = pipeline.open_store(str(store))
    mse = statistics.fmean(image.attrs["metrics"]["mse"] for image in images.values())
    return wall, cpu, psnr(mse)


def pngquant(folder: Path, cwd: Path) -> tuple[float, float, float]:
    """Wall s, CPU s and mean PSNR of pngquant on every file of ``folder``, 2 processes."""
    import imageio.v3 as iio

    inputs = sorted(str(path) for path in folder.glob("t??????.png"))
    listing = cwd / "inputs.txt"
    listing.write_text("\n".join(inputs) + "\n")
    script = (
        f"xargs -P 2 -n 100 pngquant {COLORS} --nofs --speed 4 --force --ext -pq.png < {listing}"
    )
    wall, cpu = timed(["sh", "-c", script], cwd)
    errors = []
    for path in inputs:
        source = iio.imread(path).astype(np.float64)
        output = Path(path[: -len(".png")] + "-pq.png")
        quantized = iio.imread(output, mode="RGB").astype(np.float64)
        output.unlink()  # the next round's inputs are the thumbnails alone
        errors.append(float(((source - quantized) ** 2).mean()))
    return wall, cpu, psnr(statistics.fmean(errors))


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error of uint8 values."""
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for inputs and stores")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("pngquant") is None:
        sys.exit("pngquant is not installed (apt-get install pngquant)")
    import pipeline

    args.work.mkdir(parents=True, exist_ok=True)
    cwd = args.work / "cwd"  # no package sources here: the installed package runs
    cwd.mkdir(exist_ok=True)
    print(f"pipeline {pipeline.__version__}; {os.cpu_count()} CPUs\n")
    rows: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    folders = {n: make_inputs(args.work, n) for n in args.sizes}
    for _ in range(args.repeat):
        for n, folder in folders.items():
            rows.setdefault((n, "pipeline"), []).append(ours(folder, args.work / "out.zarr", cwd))
            rows.setdefault((n, "pngquant"), []).append(pngquant(folder, cwd))
    print("| images | command | wall s | CPU s | images/s | CPU ms/image | PSNR dB | x pngquant |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        medians = {
            name: [statistics.median(run[i] for run in rows[n, name]) for i in range(3)]
            for name in ("pipeline", "pngquant")
        }
        for name, (wall, cpu, psnr) in medians.items():
            ratio = medians["pngquant"][0] / wall if name == "pipeline" else ""
            print(
                f"| {n:,} | {name} | {wall:.2f} | {cpu:.2f} | {n / wall:.1f} | "
                f"{1000 * cpu / n:.2f} | {psnr:.2f} | {ratio and f'{ratio:.3f}'} |"
            )


if __name__ == "__main__":
    main()
