"""Discovery at scale: group names and folder listing for 10^4 .. 10^6 inputs.

* names: :func:`pipeline.names.unique_names` on N synthetic paths laid out like a bucket,
  ``/bucket/batch{i // 1000}/img{i}.jpg``, where 1% of the file names repeat one in another
  batch (so those get their folder prefixed).
* discover: :func:`pipeline.discover.discover` on a tree of N empty files (1000 per folder,
  created with ``os.open``, removed afterwards), given as the pattern ``root/**/*.jpg`` (a walk
  of every folder and one stat per file), and each of the folders as a folder item.

Best of ``--repeat`` runs. Both are linear: the microseconds per path stay flat as N grows.

Usage: python benchmarks/discovery.py [--work DIR] [--max 1000000] [--max-files 1000000]
       [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.discover import discover
from pipeline.names import unique_names

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
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
