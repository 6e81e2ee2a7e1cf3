"""Large image path (issue 11): a 100-megapixel JPEG against its decoders, warm and end to end.

The JPEG is china.jpg mirror-tiled, quality 90 (:func:`scale.make_jpeg`), kept in ``--work``
and read once beforehand so that every timing finds it in the page cache. Every figure is the
median of ``--repeat`` runs, the runs of all rows alternating, and every ratio is taken within
this run:

* (a) decode only with imagecodecs (libjpeg-turbo, as the job decodes), in this warm process;
* (b) the job (:func:`pipeline.compress`) on warm local clusters started before timing: two
  worker processes of one thread, and two threads inside this process, with the time each of
  its steps took (from dask's task stream);
* (c) a whole process decoding the file with imageio and nothing else;
* (d) ``python -m pipeline run FILE -o STORE --overwrite`` as a whole process, started from a
  folder without the package's sources, with the cluster the command picks (``auto``) and with
  each kind forced.

Usage: python benchmarks/large.py [--work DIR] [--repeat 5] [--mp 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from scale import make_jpeg

#: Local clusters the warm job runs on: (row label, ``kind`` of pipeline.job.cluster.connect).
CLUSTERS = (
    ("2 worker processes x 1 thread", "processes"),
    ("2 threads in this process", "threads"),
)
#: ``--local-cluster`` choices of the whole-process job.
COMMAND_KINDS = ("auto", "processes", "threads")


def timed(step: Callable[[], object]) -> float:
    """Wall seconds of ``step()``."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def run_process(command: list[str], cwd: str, failures: set[str], name: str) -> float:
    """Wall seconds of a whole process (its output discarded).

    A process exiting with an error is still timed; its ``name`` is added to ``failures`` and
    the end of its error output printed.
    """
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        failures.add(name)
        print(f"{name}: exit {done.returncode}: {done.stderr[-300:]}", file=sys.stderr)
    return seconds


def steps(records: list[dict[str, Any]], started: float) -> dict[str, float]:
    """Seconds of a job's phases from its task stream (``started``: when it was submitted).

    ``until decode``: from submitting to the decode's start (planning, the probe task);
    ``decode``, ``fit``: those tasks; ``label + write``: from the first chunk's labelling to
    the last one's end; ``finish``: the palette, metrics and completion marker.
    """
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in records:
        key = record["key"] if isinstance(record["key"], str) else record["key"][0]
        for part in record["startstops"]:
            if part["action"] == "compute":
                spans[key.split("-", 1)[0]].append((part["start"], part["stop"]))
    first = {name: min(s for s, _ in found) for name, found in spans.items()}
    last = {name: max(e for _, e in found) for name, found in spans.items()}
    return {
        "until decode": first["read"] - started,
        "decode": last["read"] - first["read"],
        "fit": last["fit"] - first["fit"],
        "label + write": last["label"] - first["label"],
        "finish": last["finish"] - first["finish"],
    }


def warm(path: Path, work: Path, repeat: int) -> tuple[list[float], dict[str, dict[str, list]]]:
    """(a) and (b): decode times, and per cluster the job's times and steps, alternating."""
    import imagecodecs
    from distributed import get_task_stream

    from pipeline import compress
    from pipeline.job.cluster import connect

    decodes: list[float] = []
    jobs: dict[str, dict[str, list]] = {kind: defaultdict(list) for _, kind in CLUSTERS}
    store = str(work / "warm.zarr")
    with (
        connect(None, workers=2, dashboard_address="127.0.0.1:0", kind="processes") as processes,
        connect(None, workers=2, dashboard_address="127.0.0.1:0", kind="threads") as threads,
    ):
        clients = {"processes": processes, "threads": threads}
        for client in clients.values():  # warm: kernels compiled or loaded, tables allocated
            compress([str(path)], store, client=client, overwrite=True)
        for _ in range(repeat):
            decodes.append(timed(lambda: imagecodecs.jpeg8_decode(path.read_bytes())))
            for kind, client in clients.items():
                with get_task_stream(client) as stream:
                    started = time.time()
                    (result,) = compress([str(path)], store, client=client, overwrite=True)
                    seconds = time.time() - started
                if result.status != "done":
                    raise RuntimeError(f"job on {kind}: {result.status} {result.error}")
                jobs[kind]["seconds"].append(seconds)
                for name, value in steps(stream.data, started).items():
                    jobs[kind][name].append(value)
    return decodes, jobs


def cold(path: Path, work: Path, repeat: int) -> tuple[dict[str, list[float]], set[str]]:
    """(c) and (d): whole processes, alternating; and the rows of which a run failed."""
    outside = tempfile.mkdtemp(prefix="pipeline-large-")  # no ./pipeline to shadow the package
    imageio = [sys.executable, "-c", f"import imageio.v3 as iio; iio.imread({str(path)!r})"]
    job = [sys.executable, "-m", "pipeline", "run", str(path), "-o", str(work / "cold.zarr")]
    times: dict[str, list[float]] = defaultdict(list)
    failures: set[str] = set()
    for _ in range(repeat):
        times["imageio"].append(run_process(imageio, outside, failures, "imageio"))
        for kind in COMMAND_KINDS:
            command = [*job, "--overwrite", "--local-cluster", kind]
            times[kind].append(run_process(command, outside, failures, kind))
    os.rmdir(outside)
    return times, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="folder for the JPEG and stores (kept)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mp", type=float, default=100, help="megapixels of the JPEG")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = Path(args.work or tempfile.mkdtemp(prefix="pipeline-large-"))
    work.mkdir(parents=True, exist_ok=True)
    path = make_jpeg(work, args.mp)
    path.read_bytes()  # into the page cache
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB), median of {args.repeat} runs")
    decodes, jobs = warm(path, work, args.repeat)
    processes, failures = cold(path, work, args.repeat)
    decode = statistics.median(decodes)
    imageio = statistics.median(processes["imageio"])

    print("\n| what | seconds | vs (a) | vs (c) |\n|---|---|---|---|")
    print(f"| (a) decode only, imagecodecs, warm process | {decode:.2f} | 1.00x | |")
    for label, kind in CLUSTERS:
        seconds = statistics.median(jobs[kind]["seconds"])
        print(f"| (b) job, warm cluster of {label} | {seconds:.2f} | {seconds / decode:.2f}x | |")
    print(
        f"| (c) decode only, imageio, whole process | {imageio:.2f} | {imageio / decode:.2f}x "
        "| 1.00x |"
    )
    for kind in COMMAND_KINDS:
        seconds = statistics.median(processes[kind])
        ratios = f"{seconds / decode:.2f}x | {seconds / imageio:.2f}x"
        note = " (some runs exited with an error)" if kind in failures else ""
        what = f"(d) `python -m pipeline run`, `--local-cluster {kind}`{note}"
        print(f"| {what} | {seconds:.2f} | {ratios} |")

    names = [name for name in jobs["threads"] if name != "seconds"]
    print("\nSteps of the warm job (median seconds, from the task stream):\n")
    print("| cluster | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for label, kind in CLUSTERS:
        row = " | ".join(f"{statistics.median(jobs[kind][name]):.2f}" for name in names)
        print(f"| {label} | {row} |")


if __name__ == "__main__":
    main()
