"""Batches of small images (issue 26): thumbnails and photos, whole processes, against pngquant.

Two kinds of input, made once per count into ``WORK/KIND-N`` from the bundled photos and
scikit-image's (nothing is downloaded):

* ``thumbs``: N crops of 32 x 32 pixels, at ``--colors 16``, against pngquant ``16``;
* ``photos``: N crops of 0.15 to 0.27 megapixels (random sizes and places; scikit-image's cat,
  0.135 megapixels, whole), at the defaults (128 colours), against pngquant ``128``.

Each round runs, one after the other:

* ``python -m pipeline run WORK/KIND-N -o STORE --colors K --overwrite``: the command a user
  types, its default local cluster, from a folder without the package's sources;
* pngquant ``K --nofs --speed 4`` over the same files in 2 processes (``xargs -P 2 -n 100``),
  each writing beside its input (``--ext``, ``--force``).

No timed run follows a deletion. Every run writes files of its own (``WORK/runs/R-NAME.zarr``,
pngquant's ``-pqR.png``), kept for a look until the next invocation, which deletes them first
and then waits a minute before its first run. On ext4 without a journal (this project's test
machines), a new file skips every inode freed in the last 60 s (the kernel's
``recently_deleted``): 2,000 thumbnails took 10.95 s (2.5 s of system time) a minute after any
deletion, 11.97 s (4.3 s) right after one earlier store was deleted, and 16-17 s (12 s) after
a few.

Reported per kind, count and command: wall seconds, CPU seconds of the whole process tree (its
children's resource usage, as ``/usr/bin/time`` counts it), images per second and CPU
milliseconds per image, the PSNR of the images' mean squared error (ours from the store's
metrics, pngquant's from its files against the inputs), and our rate against pngquant's in the
same round. With ``--repeat R`` the rounds alternate and the table shows medians. With
``--baseline SRC`` (a checkout of another version, such as a ``git worktree``), each round also
runs that version's job (``PYTHONPATH=SRC``), shown as ``baseline``.

Usage: python benchmarks/batches.py --work DIR [--thumbs 1000 10000] [--photos 240] [--repeat 1]
       [--baseline SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: Colours asked for, per kind of input.
COLORS = {"thumbs": 16, "photos": 128}

#: Smallest and largest megapixels of a photo crop.
PHOTO_MP = (0.15, 0.27)

#: Seconds a freed inode is skipped by ext4 without a journal once its table is written out.
RECENTLY_DELETED = 60


def photos() -> list[np.ndarray]:
    """The bundled sample photos and three of scikit-image's, RGB."""
    import skimage.data

    from pipeline.inputs.discover import sample_images
    from pipeline.inputs.sources import read_file

    found = [read_file(path) for path in sample_images()]
    found += [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    return [np.ascontiguousarray(image[..., :3]) for image in found]


def crop_shape(kind: str, image: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Height and width of a crop of ``image`` for ``kind``: 32 x 32, or a photo's share."""
    if kind == "thumbs":
        return 32, 32
    height, width = image.shape[:2]
    pixels = min(rng.uniform(*PHOTO_MP) * 1e6, height * width)
    aspect = rng.uniform(0.6, 1.6)
    h = int(min(height, max(64, np.sqrt(pixels / aspect))))
    return h, int(min(width, pixels // h))


def make_inputs(work: Path, kind: str, count: int) -> Path:
    """``count`` PNG crops for ``kind`` at random places of the photos (seeded), made once."""
    import imageio.v3 as iio

    folder = work / f"{kind}-{count}"
    if folder.is_dir() and len(list(folder.glob("t??????.png"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    images = photos()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = images[i % len(images)]
        h, w = crop_shape(kind, image, rng)
        y = int(rng.integers(0, max(image.shape[0] - h, 1)))
        x = int(rng.integers(0, max(image.shape[1] - w, 1)))
        iio.imwrite(folder / f"t{i:06d}.png", image[y : y + h, x : x + w])
    return folder


def timed(command: list[str], cwd: Path, source: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of every process it waited for) of ``command``.

    ``source``: a checkout whose package runs instead of the installed one.
    """
    env = {**os.environ, "PYTHONPATH": str(source)} if source else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def outputs(work: Path, folders: list[Path]) -> Iterator[Path]:
    """Files and folders the runs of this script write (stores, pngquant's PNGs)."""
    yield from (work / "runs").glob("*")
    for folder in folders:
        yield from folder.glob("t??????-pq*.png")


def delete(paths: list[Path]) -> None:
    """Delete ``paths``, then (if there were any) let a minute pass before any timed run.

    The deletion's writes (and a disk's discards) are paid now: on ext4 mounted with discard
    they took 13 to 60 s of a 10,000-thumbnail run's system time. Then the freed inodes stop
    being skipped (see the module's docstring).
    """
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    os.sync()
    if paths:
        print(f"deleted {len(paths):,} earlier outputs; waiting {RECENTLY_DELETED + 1} s\n")
        time.sleep(RECENTLY_DELETED + 1)


def ours(
    folder: Path, colors: int, store: Path, cwd: Path, source: Path | None = None
) -> tuple[float, float, float]:
    """Wall s, CPU s and mean PSNR of the pipeline's job on ``folder`` (``source``'s, if given).

    ``store``: a path no run wrote before (its images alone, and nothing deleted for it).
    """
    command = [sys.executable, "-m", "pipeline", "run", str(folder), "-o", str(store)]
    wall, cpu = timed([*command, "--colors", str(colors), "--overwrite"], cwd, source)
    # each image's group document alone (opening 100,000 images with zarr takes minutes)
    documents = (p / "zarr.json" for p in store.iterdir() if p.is_dir() and p.name[0] != ".")
    mse = statistics.fmean(
        json.loads(d.read_bytes())["attributes"]["metrics"]["mse"] for d in documents
    )
    return wall, cpu, psnr(mse)


def pngquant(folder: Path, colors: int, cwd: Path, run: int) -> tuple[float, float, float]:
    """Wall s, CPU s and mean PSNR of pngquant on every file of ``folder``, 2 processes.

    Round ``run``'s outputs end in ``-pqRUN.png``: no file is overwritten.
    """
    import imageio.v3 as iio

    inputs = sorted(str(path) for path in folder.glob("t??????.png"))
    listing = cwd / "inputs.txt"
    listing.write_text("\n".join(inputs) + "\n")
    script = (
        f"xargs -P 2 -n 100 pngquant {colors} --nofs --speed 4 --force --ext -pq{run}.png "
        f"< {listing}"
    )
    wall, cpu = timed(["sh", "-c", script], cwd)
    errors = []
    for path in inputs:
        source = iio.imread(path).astype(np.float64)
        output = Path(path[: -len(".png")] + f"-pq{run}.png")
        quantized = iio.imread(output, mode="RGB").astype(np.float64)
        errors.append(float(((source - quantized) ** 2).mean()))
    return wall, cpu, psnr(statistics.fmean(errors))


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error of uint8 values."""
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for inputs and stores")
    parser.add_argument("--thumbs", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--photos", type=int, nargs="*", default=[240])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="a checkout of the version to compare with")
    args = parser.parse_args()
    if shutil.which("pngquant") is None:
        sys.exit("pngquant is not installed (apt-get install pngquant)")
    import pipeline

    args.work.mkdir(parents=True, exist_ok=True)
    cwd = args.work / "cwd"  # no package sources here: the installed package runs
    cwd.mkdir(exist_ok=True)
    print(f"pipeline {pipeline.__version__}; {os.cpu_count()} CPUs\n")
    sets = [("thumbs", n) for n in args.thumbs] + [("photos", n) for n in args.photos]
    folders = {(kind, n): make_inputs(args.work, kind, n) for kind, n in sets}
    delete(list(outputs(args.work, list(folders.values()))))
    runs = args.work / "runs"
    runs.mkdir(exist_ok=True)
    rows: dict[tuple[str, int, str], list[tuple[float, float, float]]] = {}
    for run in range(args.repeat):
        for (kind, n), folder in folders.items():
            colors = COLORS[kind]
            found = ours(folder, colors, runs / f"{run}-{kind}-{n}.zarr", cwd)
            rows.setdefault((kind, n, "pipeline"), []).append(found)
            if args.baseline:
                store = runs / f"{run}-{kind}-{n}-baseline.zarr"
                found = ours(folder, colors, store, cwd, args.baseline.resolve())
                rows.setdefault((kind, n, "baseline"), []).append(found)
            found = pngquant(folder, colors, cwd, run)
            rows.setdefault((kind, n, "pngquant"), []).append(found)
    print("| images | k | command | wall s | CPU s | img/s | CPU ms/img | PSNR dB | x pngquant |")
    print("|---|---|---|---|---|---|---|---|---|")
    names = ("pipeline", "baseline", "pngquant") if args.baseline else ("pipeline", "pngquant")
    for kind, n in sets:
        medians = {
            name: [statistics.median(run[i] for run in rows[kind, n, name]) for i in range(3)]
            for name in names
        }
        for name, (wall, cpu, db) in medians.items():
            ratio = medians["pngquant"][0] / wall if name != "pngquant" else ""
            print(
                f"| {n:,} {kind} | {COLORS[kind]} | {name} | {wall:.2f} | {cpu:.2f} | "
                f"{n / wall:.1f} | {1000 * cpu / n:.2f} | {db:.2f} | {ratio and f'{ratio:.3f}'} |"
            )


if __name__ == "__main__":
    main()
