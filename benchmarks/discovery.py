"""Discovery at scale: group names and folder listing for 10^4 .. 10^6 inputs.

* names: :func:`pipeline.inputs.names.unique_names` on N synthetic paths laid out like a bucket,
  ``/bucket/batch{i // 1000}/img{i}.jpg``, where 1% of the file names repeat one in another
  batch (so those get their folder prefixed).
* discover: :func:`pipeline.inputs.discover.discover` on a tree of N empty files (1000 per folder,
  created with ``os.open``, removed afterwards), given as the pattern ``root/**/*.jpg`` (a walk
  of every folder and one stat per file), and each of the folders as a folder item.

* list_store: :func:`pipeline.store.write.list_store` (what a rerun lists to learn what is complete
  and whose chunks are missing) on a store of N complete one-chunk images, laid out as the job
  writes them (group and labels documents as the job writes them, 2.7 KB and 0.6 KB; a palette
  document, one labels and one palette chunk of 1 byte; a completion marker naming one chunk),
  one image in 1,000 missing its labels chunk; with the peak of Python memory it allocates
  (tracemalloc).
* check_complete: :func:`pipeline.store.read.check_complete`, what a rerun then reads: the group
  and labels documents of every image the markers vouch for, checked; with its peak memory.

Best of ``--repeat`` runs. All are linear: the microseconds per path stay flat as N grows.

Usage: python benchmarks/discovery.py [--work DIR] [--max 1000000] [--max-files 1000000]
       [--max-store 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from pipeline.inputs.discover import discover
from pipeline.inputs.names import unique_names
from pipeline.store.location import Location
from pipeline.store.read import check_complete
from pipeline.store.write import COMPLETE, list_store

PER_FOLDER = 1000


def synthetic_paths(n: int) -> list[str]:
    """Bucket-like paths, 1% of them with the file name of a path in another batch."""
    return [f"/bucket/batch{i // PER_FOLDER}/img{image_number(i, n)}.jpg" for i in range(n)]


def image_number(i: int, n: int) -> int:
    return (i + 5 * PER_FOLDER + 1) % n if i % 100 == 0 else i


def make_tree(root: Path, n: int) -> list[str]:
    """N empty files, ``PER_FOLDER`` per folder; the folders."""
    folders = []
    for start in range(0, n, PER_FOLDER):
        folder = root / f"batch{start // PER_FOLDER}"
        folder.mkdir(parents=True)
        folders.append(str(folder))
        for i in range(start, min(n, start + PER_FOLDER)):
            os.close(os.open(folder / f"img{i}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return folders


#: An image group's document as the job writes one of 16 colours (2.7 KB).
GROUP_DOCUMENT = json.dumps(
    {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "status": "complete",
            "image_shape": [60, 80, 3],
            "source": {"path": "/data/photos/batch0/img0.jpg", "shape": [60, 80, 3]},
            "colors_requested": 16,
            "colors": 16,
            "metrics": {"psnr_db": 30.0, "stored_bytes": 2600, "ratio": 5.4},
            "padding": "x" * 1900,  # the fit, settings and OME-NGFF colour table
        },
    }
).encode()
#: Its labels' document (0.6 KB).
LABELS_DOCUMENT = json.dumps(
    {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [60, 80],
        "data_type": "uint8",
        "padding": "x" * 500,
    }
).encode()


def make_store(root: Path, n: int) -> None:
    """A store of N complete one-chunk images as the job lays them out; every 1000th lacks its
    labels chunk."""
    (root / COMPLETE).mkdir(parents=True)
    (root / "zarr.json").write_bytes(b"{}")
    for i in range(n):
        group = root / f"img{i}.jpg"
        for folder in ("labels/c/0", "palette/c/0"):
            (group / folder).mkdir(parents=True)
        files = {
            "zarr.json": GROUP_DOCUMENT,
            "labels/zarr.json": LABELS_DOCUMENT,
            "palette/zarr.json": b"x",
            "palette/c/0/0": b"x",
        }
        if i % 1000 != 999:
            files["labels/c/0/0"] = b"x"
        for name, data in files.items():
            fd = os.open(group / name, os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, data)
            os.close(fd)
        (root / COMPLETE / f"{i:016x}.1-img{i}.jpg").mkdir()


def listing(root: Path, repeat: int, n: int) -> tuple[float, float, float, float]:
    """Best seconds of ``list_store`` over ``root`` and its peak traced memory (MiB); the same
    of ``check_complete`` of every image after it."""
    store = Location.at(str(root))
    seconds = best(repeat, lambda: len(list_store(store).groups), n)
    tracemalloc.start()
    listed = list_store(store)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert len(listed.damaged) == n // 1000, len(listed.damaged)
    names = sorted(listed.groups)
    checking = best(repeat, lambda: len(check_complete(store, listed, names).damaged), n // 1000)
    tracemalloc.start()
    check_complete(store, listed, names)
    checked_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, checking, checked_peak


def best(repeat: int, run: Callable[[], int], expected: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        count = run()
        times.append(time.perf_counter() - start)
        assert count == expected, (count, expected)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the files on disk")
    parser.add_argument("--max", type=int, default=1_000_000, help="largest N")
    parser.add_argument("--max-files", type=int, default=1_000_000, help="largest N on disk")
    parser.add_argument("--max-store", type=int, default=100_000, help="largest store listed")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(dir=args.work, prefix="discovery-"))
    sizes = [n for n in (10_000, 100_000, 1_000_000) if n <= args.max]
    print(
        "| N | unique_names s | µs / path | discover `**/*.jpg` s | µs / file "
        "| discover folders s | µs / file |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for n in sizes:
            paths = synthetic_paths(n)
            names = best(args.repeat, lambda p=paths: len(set(unique_names(p))), n)
            row = f"| {n:,} | {names:.2f} | {names / n * 1e6:.1f} |"
            if n <= args.max_files:
                root = work / str(n)
                folders = make_tree(root, n)
                pattern = str(root / "**" / "*.jpg")
                globbed = best(args.repeat, lambda p=pattern: len(discover([p])[0]), n)
                listed = best(args.repeat, lambda f=folders: len(discover(f)[0]), n)
                shutil.rmtree(root)
                row += f" {globbed:.2f} | {globbed / n * 1e6:.1f} | {listed:.2f} |"
                row += f" {listed / n * 1e6:.1f} |"
            else:
                row += " (skipped: --max-files) | | | |"
            print(row, flush=True)
        print(
            "\n| images in the store | list_store s | µs / image | peak MiB "
            "| check_complete s | µs / image | peak MiB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n in (1_000, 10_000, 100_000):
            if n > args.max_store:
                continue
            root = work / f"store{n}"
            make_store(root, n)
            seconds, peak, checking, checked_peak = listing(root, args.repeat, n)
            shutil.rmtree(root)
            print(
                f"| {n:,} | {seconds:.2f} | {seconds / n * 1e6:.1f} | {peak:.1f} "
                f"| {checking:.2f} | {checking / n * 1e6:.1f} | {checked_peak:.1f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
