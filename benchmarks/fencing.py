"""Fencing: does a paused job ever write after losing its lease, and what do the checks cost?

* pauses: the split-brain scenario of tests/fencing.py at ``--points`` pause points (seeded
  random moments 0-1.0 s after job A's first image group appears, alternating a paused client,
  whose workers go on, and paused workers whose client is then killed): job A (16 JPEGs of
  400x600, ``--chunk 128``, so every image has labels chunks and pyramid levels; a 3 s lease)
  is paused, job B takes the store over with other settings, A is resumed once B reported two
  images. Each row: A's and B's exit status, how many images B reported done, and the
  invariants broken (expected: none).
* cost: ``--count`` thumbnails (64x64 PNG) compressed in this process by the batch task
  (:func:`pipeline.job.tasks.compress_batch`, 50 per batch), into a store reached through a
  plain location and through a fenced one (every write checked, chunks created only where none
  exists), alternately, ``--repeat`` times each; best seconds per image of each and their
  ratio, on the local disk. On a moto S3 server behind a counting proxy
  (benchmarks/s3_requests.py), the requests per image of both, by kind.

Usage: python benchmarks/fencing.py [--points 20] [--count 1000] [--repeat 3] [--seed 0]
       [--skip-pauses] [--skip-cost]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import imageio.v3 as iio
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from s3_requests import CREDENTIALS, CountingProxy

from pipeline.job.tasks import Done, Job, Spec, compress_batch
from pipeline.settings import Settings
from pipeline.store import lease
from pipeline.store.location import Location
from pipeline.store.write import list_store, prepare
from tests.conftest import start_moto
from tests.fencing import check_invariants, make_photos, namespaces_work, split_brain

BATCH = 50


def pauses(work: Path, points: int, seed: int) -> None:
    inputs = work / "photos"
    make_photos(inputs)
    chooser = random.Random(seed)
    kinds = ["client", "workers"] if namespaces_work() else ["workers"]
    print(f"{'#':>3}  {'pause':7}  {'after s':>7}  {'A exit':>6}  {'B exit':>6}  "
          f"{'B done':>6}  broken")  # fmt: skip
    broken = untested = 0
    for point in range(points):
        pause = kinds[point % len(kinds)]
        after = round(chooser.uniform(0.0, 1.0), 2)
        store = str(work / f"pause{point}.zarr")
        outcome = split_brain(inputs, store, pause=pause, after=after)
        problems = check_invariants(store, inputs, outcome)
        broken += bool(problems)
        if outcome.a_code == 0:  # its lease released before the pause
            untested += 1
            problems.append("untested: A had finished before its pause")
        said = "; ".join(problems)[:200] or "none"
        print(f"{point:>3}  {pause:7}  {after:>7.2f}  {outcome.a_code!s:>6}  {outcome.b_code:>6}  "
              f"{len(outcome.b_done):>6}  {said}", flush=True)  # fmt: skip
        shutil.rmtree(store, ignore_errors=True)
    print(f"\n{points} pause points: {broken} with a broken invariant, {untested} untested")


def thumbnails(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        picture = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
        path = folder / f"t{i:05d}.png"
        iio.imwrite(path, picture)
        paths.append(path)
    return paths


@contextmanager
def target(url: str, fenced: bool) -> Iterator[Job]:
    """A job's view of a fresh store at ``url``: plain, or fenced by the lease it holds."""
    store = Location.at(url)
    with lease.hold(store) as held:
        prepare(store, list_store(store))
        where = store.fenced(held.fence()) if fenced else store
        yield Job(where, Settings.from_config(colors=16, sample=1000), held.run, 4_194_304)


def compress_all(job: Job, paths: list[Path]) -> float:
    """Seconds to compress ``paths`` into the job's store by the batch task, ``BATCH`` a task."""
    specs = [Spec(p.name, str(p), token=p.name, key="0" * 16, fresh=True) for p in paths]
    began = time.perf_counter()
    for start in range(0, len(specs), BATCH):
        outcomes = compress_batch(specs[start : start + BATCH], job)
        assert all(isinstance(o, Done) for o in outcomes), outcomes
    return time.perf_counter() - began


def cost(work: Path, count: int, repeat: int) -> None:
    paths = thumbnails(work / "thumbs", count)
    with target(str(work / "warm.zarr"), True) as job:
        compress_all(job, paths[:BATCH])  # numba, imports
    best = {False: float("inf"), True: float("inf")}
    for round_ in range(repeat):
        for fenced in (False, True):
            url = str(work / f"cost{round_}-{fenced}.zarr")
            with target(url, fenced) as job:
                best[fenced] = min(best[fenced], compress_all(job, paths))
            shutil.rmtree(url)
    print(f"\nlocal disk, {count} thumbnails of 64x64, best of {repeat}")
    print(f"{'store':8}  {'ms/image':>8}")
    for fenced, seconds in best.items():
        print(f"{'fenced' if fenced else 'plain':8}  {1000 * seconds / count:>8.3f}")
    print(f"fenced / plain: {best[True] / best[False]:.3f}")

    with open(work / "moto.log", "wb") as log:
        moto, endpoint = start_moto(log)
    try:
        proxy = CountingProxy(int(endpoint.rsplit(":", 1)[1]))
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=proxy.url)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("bench")
        few = paths[: min(count, 200)]
        print(f"\nS3 (moto), {len(few)} thumbnails: requests per image")
        print(f"{'store':8}  {'all':>6}  by kind")
        for fenced in (False, True):
            proxy.take()
            name = "fenced" if fenced else "plain"
            with target(f"s3://bench/{name}.zarr", fenced) as job:
                compress_all(job, few)
            kinds = proxy.take()["kinds"]
            assert isinstance(kinds, dict)
            per = ", ".join(f"{k} {v / len(few):.2f}" for k, v in sorted(kinds.items()))
            print(f"{name:8}  {sum(kinds.values()) / len(few):>6.2f}  {per}")
        proxy.shutdown()
    finally:
        moto.terminate()
        moto.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-pauses", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fencing-") as folder:
        work = Path(folder)
        if not args.skip_pauses:
            pauses(work, args.points, args.seed)
        if not args.skip_cost:
            cost(work, args.count, args.repeat)


if __name__ == "__main__":
    main()
