"""Integrity: what checksums cost on write, and how fast ``verify`` reads a store.

On the 100-megapixel JPEG of ``scale.py`` (china.jpg mirror-tiled, made in the work folder):

* write: the whole job on that JPEG in this process (dask's threaded scheduler, 2 threads, so
  that the store's codecs can be switched here), with checksums (zstd + crc32c codecs and the
  per-chunk SHA-256 digests) and without them (zstd only, no digests), alternating, median of
  ``--repeat`` runs each, after one untimed run;
* codecs: the same labels chunks encoded by zstd alone and by zstd + crc32c, and hashed with
  SHA-256, in MB/s of labels;
* verify: :func:`pipeline.verify_store` over the store (every chunk read, CRC checked,
  hashed, labels compared with the palette), against a plain read of the labels array
  (decode only), median of ``--repeat``, in MB/s of labels (decoded bytes);
* verify, many images: a store of ``--small`` 64x64 crops of china.jpg (k = 32), verified with
  1 and 2 chunk-reading threads, in images/s (best of ``--repeat``).

Usage: python benchmarks/integrity.py [--jpeg-mp 100] [--small 1000] [--repeat 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from scale import make_jpeg

SETTINGS = {"colors": 128}


@contextmanager
def checksums(enabled: bool):
    """The store's codecs and digests as they are, or zstd only and no digests."""
    import pipeline.store.write as store

    saved = (store.COMPRESSORS, store.chunk_digest)
    if not enabled:
        store.COMPRESSORS = store.COMPRESSORS[:1]
        store.chunk_digest = lambda values: b""
    try:
        yield
    finally:
        store.COMPRESSORS, store.chunk_digest = saved


def job(jpeg: Path, out: Path, enabled: bool) -> float:
    import dask

    from pipeline import compress

    shutil.rmtree(out, ignore_errors=True)
    with checksums(enabled), dask.config.set(scheduler="threads", num_workers=2):
        start = time.perf_counter()
        (result,) = compress([str(jpeg)], str(out), **SETTINGS)
        seconds = time.perf_counter() - start
    assert result.status == "done", result.error
    return seconds


def timed(function: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def small_store(work: Path, count: int) -> Path:
    """A store of ``count`` 64x64 crops of china.jpg, compressed in this process."""
    import imageio.v3 as iio
    from photo8 import PHOTOS, load

    from pipeline import compress

    china = load(*PHOTOS["china"])
    inputs = work / f"small{count}"
    store = work / f"small{count}.zarr"
    if not store.exists():
        inputs.mkdir(exist_ok=True)
        for i in range(count):
            y, x = (i * 37) % 360, (i * 53) % 570
            iio.imwrite(inputs / f"s{i:06d}.png", china[y : y + 64, x : x + 64])
        results = compress([str(inputs)], str(store), colors=32, sample=500)
        assert {r.status for r in results} == {"done"}
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jpeg-mp", type=float, default=100)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="integrity-"))
    work.mkdir(parents=True, exist_ok=True)
    jpeg = make_jpeg(work, args.jpeg_mp)
    jpeg.read_bytes()  # into the page cache

    job(jpeg, work / "warm-up.zarr", True)  # compile the kernels and warm the caches first
    runs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeat):
        for enabled in (False, True):
            runs[enabled].append(job(jpeg, work / f"store-{enabled}.zarr", enabled))
    store = work / "store-True.zarr"

    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    from pipeline import verify_store
    from pipeline.store.write import ZSTD_LEVEL

    labels = zarr.open_array(str(store / jpeg.name / "labels"), mode="r")
    values = labels[...]
    mb = values.nbytes / 1e6
    stored_mb = labels.nbytes_stored() / 1e6
    rows, cols = labels.chunks
    blocks = [
        np.ascontiguousarray(values[y : y + rows, x : x + cols])
        for y in range(0, values.shape[0], rows)
        for x in range(0, values.shape[1], cols)
    ]
    zstd_only = zarr.create_array(
        {},
        shape=values.shape,
        chunks=labels.chunks,
        dtype=values.dtype,
        compressors=ZstdCodec(level=ZSTD_LEVEL),
    )
    with_crc = zarr.create_array(
        {},
        shape=values.shape,
        chunks=labels.chunks,
        dtype=values.dtype,
        compressors=(ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()),
    )

    def write(array: Any) -> Callable[[], None]:
        def run() -> None:
            array[...] = values

        return run

    codec = {
        "zstd": timed(write(zstd_only), args.repeat),
        "zstd + crc32c": timed(write(with_crc), args.repeat),
        "sha256 of every chunk": timed(
            lambda: [hashlib.sha256(b.data).digest() for b in blocks], args.repeat
        ),
    }
    read = timed(lambda: labels[...], args.repeat)
    verify = timed(lambda: list(verify_store(str(store), threads=2)), args.repeat)
    (finding,) = verify_store(str(store), threads=2)
    assert finding.whole, finding.problems
    assert finding.checked

    small = small_store(work, args.small)
    per_second = {}
    for threads in (1, 2):
        seconds = min(
            timed(lambda t=threads: list(verify_store(str(small), threads=t)), 1)
            for _ in range(args.repeat)
        )
        per_second[threads] = args.small / seconds

    with_s, without_s = statistics.median(runs[True]), statistics.median(runs[False])
    print(
        f"\n{jpeg.name}: {values.shape[0]} x {values.shape[1]} labels, {mb:.1f} MB, "
        f"{stored_mb:.1f} MB stored, chunks {rows} x {cols}\n"
    )
    print("| write (whole job, in process, 2 threads) | s (median) | runs | vs without |")
    print("|---|---|---|---|")
    for label, seconds, all_runs in (
        ("without checksums (zstd only, no digests)", without_s, runs[False]),
        ("with checksums (zstd + crc32c, SHA-256 digests)", with_s, runs[True]),
    ):
        shown = ", ".join(f"{r:.2f}" for r in all_runs)
        print(f"| {label} | {seconds:.2f} | {shown} | {seconds / without_s:.3f}x |")
    print("\n| writing the labels array (zarr, in memory) | s | MB/s of labels |")
    print("|---|---|---|")
    for label, seconds in codec.items():
        print(f"| {label} | {seconds:.3f} | {mb / seconds:,.0f} |")
    print("\n| reading the store (2 threads) | s | MB/s of labels | MB/s stored | vs plain read |")
    print("|---|---|---|---|---|")
    for label, seconds in (("plain zarr read of the labels", read), ("verify", verify)):
        print(
            f"| {label} | {seconds:.2f} | {mb / seconds:,.0f} | {stored_mb / seconds:,.1f} "
            f"| {seconds / read:.2f}x |"
        )

    print(f"\n| verify, {args.small:,} 64x64 images | images/s |")
    print("|---|---|")
    for threads, rate in per_second.items():
        print(f"| {threads} chunk thread{'s' if threads > 1 else ''} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
