"""Start-up (issue 11): small jobs as whole processes, against pngquant on the same photos.

Every row is a whole process started from an empty folder (so the installed package is what
runs), timed wall-clock; each figure is the median of ``--repeat`` runs, the rows alternating
within every round, and every ratio is taken within this run:

* pngquant 128 (default speed, dithered) on PNG copies of the bundled photos (pngquant reads
  PNG only; the job reads the JPEGs themselves);
* ``python -m pipeline run`` on the same photos: the default job (both photos), one photo,
  each with the local cluster ``auto`` picks (threads in the process for such a job) and with
  ``--local-cluster processes``;
* a rerun that only skips, a missing input (the one-line error), and ``--help``;
* the imports alone that a job on threads cannot do without (dask.array, distributed with its
  dashboard, zarr, scikit-learn and dask-ml), the floor of the default job.

Usage: python benchmarks/startup.py [--work DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio

from pipeline.inputs.discover import sample_images

#: The imports of a job on threads: what no small job can avoid.
FLOOR_IMPORTS = (
    "import pipeline.api, pipeline.job.graph, distributed, distributed.dashboard.scheduler,"
    " bokeh.plotting, dask_ml.cluster"
)


def commands(work: Path) -> dict[str, list[str]]:
    """Each timed row's command line (run in ``work``)."""
    job = [sys.executable, "-m", "pipeline", "run"]
    china = sample_images()[0]
    pngs = [str(work / "china.png"), str(work / "flower.png")]
    pngquant = ["pngquant", "128", "--force", "--ext", "-pq.png"]
    return {
        "pngquant 128, both photos": [*pngquant, *pngs],
        "default job (both photos), auto: threads": [*job, "-o", "both.zarr", "--overwrite"],
        "default job, --local-cluster processes": [
            *job,
            "-o",
            "both-p.zarr",
            "--overwrite",
            "--local-cluster",
            "processes",
        ],
        "pngquant 128, china": [*pngquant, pngs[0]],
        "one photo (china), auto: threads": [*job, china, "-o", "one.zarr", "--overwrite"],
        "one photo, --local-cluster processes": [
            *job,
            china,
            "-o",
            "one-p.zarr",
            "--overwrite",
            "--local-cluster",
            "processes",
        ],
        "rerun of the default job (skips only)": [*job, "-o", "both.zarr"],
        "missing input (usage error)": [*job, "missing.png"],
        "--help": [sys.executable, "-m", "pipeline", "--help"],
        "imports of a job on threads, alone": [sys.executable, "-c", FLOOR_IMPORTS],
        # as the job imports them since pipeline.job.garbage: without garbage collection
        "the same imports, garbage collection off": [
            sys.executable,
            "-c",
            f"import gc; gc.disable(); {FLOOR_IMPORTS}",
        ],
    }


def timed(command: list[str], cwd: Path) -> float:
    """Wall seconds of one process; its output is discarded (exit 2 expected of a usage error)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 2):
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    """Time every row, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", default=None, help="folder for PNG copies and stores")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("pngquant") is None:
        sys.exit("pngquant is not installed (apt-get install pngquant)")
    work = Path(args.work or tempfile.mkdtemp(prefix="startup-"))
    work.mkdir(parents=True, exist_ok=True)
    for path in sample_images():
        iio.imwrite(work / (Path(path).stem + ".png"), iio.imread(path))
    rows = commands(work)
    for command in rows.values():  # once untimed: stores exist, caches are warm
        timed(command, work)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeat):
        for name, command in rows.items():
            times[name].append(timed(command, work))
    median = {name: statistics.median(values) for name, values in times.items()}
    baselines = {
        "both": median["pngquant 128, both photos"],
        "one": median["pngquant 128, china"],
    }
    print(f"median of {args.repeat} alternating runs, whole processes, wall seconds\n")
    print("| run | seconds | vs pngquant on the same photos | spread |")
    print("|---|---|---|---|")
    for name, seconds in median.items():
        base = baselines["one" if "china" in name or "one photo" in name else "both"]
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        print(f"| {name} | {seconds:.2f} | {seconds / base:.1f}x | {spread} |")


if __name__ == "__main__":
    main()
