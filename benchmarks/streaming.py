"""Streaming: many small images through one job, on a real ``dask scheduler`` + 2 workers.

Inputs are 64x64 PNG crops of the bundled photos, generated once into ``--work`` (nothing is
downloaded). For each N the job runs through :func:`pipeline.api.stream` (as the CLI does)
from this process, against a scheduler and two single-threaded workers started as
subprocesses on 127.0.0.1 (preloaded, warmed by a first small job), so that the client's and
the scheduler's memory can be told apart. Reported per N:

* seconds from the call until the first task started on a worker (from the task stream);
* images/s over the whole job, and its ratio to the smallest N (flat: within 15%);
* steady images/s: between the results of the 10% and the 90% marks of the job, without its
  ramp-up (cluster warming to the job, first batches in flight) and its last batches (the
  fixed costs of a job, which weigh most on the smallest N);
* peak resident memory of the client (this process) and of the scheduler (psutil, every 0.1 s);
* tasks run per image (from the task stream).

The per-image work is kept small so that what grows with N, if anything, shows. By default
(``--mode lossless``) the crops are posterized to 8 levels per channel and compressed with
``--colors 256``: every crop has fewer colours than that, so it is stored losslessly without a
k-means fit (decode, count, label, write, mark complete: the job's whole I/O path). With
``--mode fit`` the crops keep their colours and each gets a Dask-ML fit (``--colors 16
--sample 256 --max-iter 1 --effort 0``), which costs about 20 ms of dask overhead per image.

With ``--repeat R`` every size but the largest runs R times, in alternating rounds (the
largest, which lasts longest, runs once); the table shows medians of the rates and the highest
memory.

Usage: python benchmarks/streaming.py [--sizes 1000 10000 100000] [--mode lossless|fit]
       [--repeat 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SETTINGS = {
    "lossless": {"colors": 256},
    "fit": {"colors": 16, "sample": 256, "max_iter": 1, "effort": 0},
}
SIDE = 64


def photos() -> list[np.ndarray]:
    from pipeline.inputs.discover import sample_images
    from pipeline.inputs.sources import read_file

    found = [read_file(p) for p in sample_images()]
    try:
        import skimage

        data = Path(skimage.__file__).parent / "data"
        found += [read_file(str(data / n)) for n in ("astronaut.png", "coffee.png", "chelsea.png")]
    except ImportError:
        pass
    return found


def write_pngs(target: Path, count: int, crop: Callable[[np.ndarray, int], np.ndarray]) -> Path:
    """``count`` PNGs ``crop(photo, i)`` of the bundled photos in ``target`` (kept between runs)."""
    import imagecodecs

    if target.exists() and len(os.listdir(target)) == count:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    sources = photos()
    for i in range(count):
        pixels = np.ascontiguousarray(crop(sources[i % len(sources)], i))
        (target / f"img{i:07d}.png").write_bytes(imagecodecs.png_encode(pixels))
    return target


def make_inputs(folder: Path, count: int, mode: str) -> Path:
    """``count`` 64x64 PNG crops in ``folder/{mode}{count}``, posterized for ``lossless``."""

    def crop(image: np.ndarray, i: int) -> np.ndarray:
        y = (i * 37) % (image.shape[0] - SIDE)
        x = (i * 53) % (image.shape[1] - SIDE)
        part = image[y : y + SIDE, x : x + SIDE]
        return part // 32 * 32 + 16 if mode == "lossless" else part

    return write_pngs(folder / f"{mode}{count}", count, crop)


class Cluster:
    """``dask scheduler`` and two ``dask worker`` subprocesses on 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / "scheduler.json"
        self.file.unlink(missing_ok=True)
        dask = [sys.executable, "-m", "dask"]
        common = ["--scheduler-file", str(self.file)]
        self.scheduler = subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--dashboard-address", ":0", *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not self.file.exists():
            time.sleep(0.1)
        preload = ["--preload", "pipeline.job.preload"]
        self.workers = [
            subprocess.Popen(
                [*dask, "worker", "--nthreads", "1", "--host", "127.0.0.1", *preload, *common],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            process.terminate()
        for process in [*self.workers, self.scheduler]:
            process.wait(timeout=60)


class Peak:
    """Peak resident memory of some processes, sampled every 0.1 s in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.processes = {label: psutil.Process(pid) for label, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            for label, process in self.processes.items():
                self.peak[label] = max(self.peak[label], process.memory_info().rss)
            if self._stop.wait(0.1):
                return


def run(
    client, inputs: Path, store: Path, scheduler_pid: int, settings: dict[str, int]
) -> dict[str, float]:
    from distributed import get_task_stream

    from pipeline.api import stream

    shutil.rmtree(store, ignore_errors=True)
    with (
        Peak({"client": os.getpid(), "scheduler": scheduler_pid}) as peak,
        get_task_stream(client) as tasks,
    ):
        started = time.time()
        statuses, stamps = [], []
        for result in stream([str(inputs)], str(store), client=client, **settings):
            statuses.append(result.status)
            stamps.append(time.time())
        seconds = time.time() - started
    assert statuses.count("done") == len(statuses), {s: statuses.count(s) for s in set(statuses)}
    first = min(
        part["start"]
        for task in tasks.data
        for part in task["startstops"]
        if part["action"] == "compute"
    )
    n = len(statuses)
    early, late = n // 10, (9 * n) // 10
    return {
        "first": first - started,
        "rate": n / seconds,
        "steady": (late - early) / (stamps[late] - stamps[early]),
        "client": peak.peak["client"] / 2**20,
        "scheduler": peak.peak["scheduler"] / 2**20,
        "tasks": len(tasks.data) / len(statuses),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--mode", choices=sorted(SETTINGS), default="lossless")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size but the largest")
    parser.add_argument("--work", default=None, help="folder for generated inputs (kept)")
    args = parser.parse_args()
    settings = SETTINGS[args.mode]
    folder = Path(args.work or tempfile.mkdtemp(prefix="pipeline-streaming-"))
    folder.mkdir(parents=True, exist_ok=True)
    inputs = {n: make_inputs(folder, n, args.mode) for n in args.sizes}
    cluster = Cluster(folder)
    try:
        from distributed import Client

        with Client(scheduler_file=str(cluster.file)) as client:
            client.wait_for_workers(2)
            pid = cluster.scheduler.pid
            run(client, make_inputs(folder, 100, args.mode), folder / "warm.zarr", pid, settings)
            largest = max(args.sizes)
            runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.sizes}
            for round in range(args.repeat):
                for n in args.sizes:
                    if n != largest or round == 0:
                        runs[n].append(run(client, inputs[n], folder / "out.zarr", pid, settings))
    finally:
        cluster.close()
    rows = {n: summary(got) for n, got in runs.items()}
    base = rows[args.sizes[0]]["rate"]
    steady = rows[args.sizes[0]]["steady"]
    print(
        f"\n## {SIDE}x{SIDE} PNGs, {args.mode}: {settings}; dask scheduler + 2 workers x 1 thread"
    )
    print(
        "| images | runs | first task started (s) | images/s | vs smallest | steady images/s "
        "| vs smallest | client peak MiB | scheduler peak MiB | tasks / image | total s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, row in rows.items():
        print(
            f"| {n:,} | {len(runs[n])} | {row['first']:.2f} | {row['rate']:.1f} "
            f"| {row['rate'] / base:.2f}x | {row['steady']:.1f} | {row['steady'] / steady:.2f}x "
            f"| {row['client']:.0f} | {row['scheduler']:.0f} | {row['tasks']:.3f} "
            f"| {row['seconds']:.0f} |"
        )


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """Medians of the times and rates of some runs of one size, the highest of their memory."""
    return {
        key: max(r[key] for r in runs)
        if key in ("client", "scheduler")
        else float(np.median([r[key] for r in runs]))
        for key in runs[0]
    }


if __name__ == "__main__":
    main()
