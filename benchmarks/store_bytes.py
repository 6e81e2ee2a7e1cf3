"""Store bytes against indexed PNG and pngquant: where a default store's bytes go, per k.

For each set (``photo8``, ``gray``: the images of ``quality.py``, one file each in
``WORK/sources``) and each k, the pipeline compresses the set's files into one store
(``pipeline.compress``, ``overwrite=True``, dask's local scheduler) and the store's files are
summed by what they hold:

* labels: the chunks of ``labels``;
* pyramid: the chunks of ``labels_<n>``;
* palette: the chunks of ``palette``;
* documents: every ``zarr.json`` (root, image groups, arrays, completion markers).

Beside it: the indexed PNGs written from the store (``write_palette_image``, as ``reconstruct
--format png`` does), pngquant's ``--speed 1 --nofs`` PNGs of the same pixels (when pngquant is
on PATH), the ratios store / PNG and store / pngquant, and the wall time of ``compress`` (after
one warm-up run on one photo).

Usage: python benchmarks/store_bytes.py --work DIR [--k 16 64 128 256] [--set photo8 gray]
    [--compression portable archival] [--chunk 1024] [--zstd-levels 1 3 5 9 12 19]

With ``--zstd-levels``, each store's labels are also encoded at those zstd levels alone (bytes
against the PNGs, encode time in one thread): the measurements behind the default level.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from quality import SETS, pngquant_input, source_file

PARTS = ("labels", "pyramid", "palette", "documents")


def store_parts(store: Path) -> dict[str, int]:
    """Bytes of the store's files by :data:`PARTS` (``other``: anything else)."""
    parts = dict.fromkeys((*PARTS, "other"), 0)
    for folder, _, names in os.walk(store):
        relative = Path(folder).relative_to(store).parts
        for name in names:
            size = os.path.getsize(os.path.join(folder, name))
            if name == "zarr.json":
                part = "documents"
            elif len(relative) >= 3 and relative[2] == "c":
                array = relative[1]
                part = "pyramid" if array.startswith("labels_") else array
            else:
                part = "other"
            parts[part if part in parts else "other"] += size
    return parts


def png_bytes(store: Path, folder: Path) -> int:
    """Bytes of the indexed PNGs written from every image of ``store``."""
    import pipeline
    from pipeline.outputs.files import write_palette_image

    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, image in pipeline.open_store(str(store)).items():
        path = folder / f"{name}.png"
        with open(path, "wb") as file:
            write_palette_image(image.palette, image.labels, file, ".png")
        total += path.stat().st_size
    return total


def pngquant_bytes(pngquant: str, inputs: list[Path], k: int, folder: Path) -> int:
    """Bytes of pngquant's ``--speed 1 --nofs`` PNGs of ``inputs`` at ``k`` colours."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in inputs:
        out = folder / path.name
        command = [pngquant, "--speed", "1", "--nofs", "--force", "-o", str(out), str(k), str(path)]
        subprocess.run(command, check=True, capture_output=True)
        total += out.stat().st_size
    return total


def zstd_levels(store: Path, levels: list[int], png: int, repeat: int = 3) -> None:
    """Bytes and encode speed of the labels of ``store`` at each zstd level, against ``png``.

    Each image's labels are cut into the chunks the store holds and encoded alone with
    ``numcodecs.Zstd`` (what zarr's ``zstd`` codec runs), in this one thread; the time is the
    median of ``repeat`` encodings of all of them.
    """
    import numcodecs
    import numpy as np

    import pipeline

    chunks = []
    for image in pipeline.open_store(str(store)).values():
        labels, (rows, cols) = image.labels[...], image.labels.chunks
        chunks += [
            np.ascontiguousarray(labels[y : y + rows, x : x + cols])
            for y in range(0, labels.shape[0], rows)
            for x in range(0, labels.shape[1], cols)
        ]
    pixels = sum(c.size for c in chunks)
    print(f"\nlabels of {store.name}: {pixels / 1e6:.2f} MP in {len(chunks)} chunks, one thread")
    print("| zstd level | labels B | labels / PNG | encode ms | MP/s |")
    print("|---|---|---|---|---|")
    for level in levels:
        codec = numcodecs.Zstd(level=level)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            size = sum(len(codec.encode(c)) for c in chunks)
            times.append(time.perf_counter() - start)
        seconds = sorted(times)[len(times) // 2]
        print(
            f"| {level} | {size:,} | {size / png:.3f} | {seconds * 1e3:.0f} "
            f"| {pixels / 1e6 / seconds:.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--set", nargs="+", choices=list(SETS), default=list(SETS), dest="sets")
    parser.add_argument("--compression", nargs="+", default=[None])
    parser.add_argument("--chunk", type=int)
    parser.add_argument(
        "--zstd-levels", type=int, nargs="*", default=[], help="also encode each store's labels"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    import imageio.v3 as iio

    import pipeline

    work: Path = args.work
    sources = work / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    pngquant = shutil.which("pngquant")
    print(f"pipeline {pipeline.__version__}; pngquant: {pngquant or 'not on PATH'}")
    warm = source_file(sources, *SETS["photo8"][1]["chelsea"])
    pipeline.compress([str(warm)], str(work / "warm-up.zarr"), overwrite=True)  # imports, caches
    print(
        "\n| set | k | compression | store B | labels | pyramid | palette | documents "
        "| PNG B | pngquant B | store/PNG | store/pngquant | write s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for set_name in args.sets:
        _, images = SETS[set_name]
        files = [source_file(sources, *where) for where in images.values()]
        quant_in = work / "pngquant-input"
        quant_in.mkdir(exist_ok=True)
        inputs = [pngquant_input(f, iio.imread(f), quant_in) for f in files]
        for k in args.k:
            quant = pngquant_bytes(pngquant, inputs, k, work / f"pngquant-{k}") if pngquant else 0
            for compression in args.compression:
                settings: dict[str, Any] = {"colors": k}
                if compression is not None:
                    settings["compression"] = compression
                if args.chunk:
                    settings["chunk"] = args.chunk
                store = work / f"{set_name}-{k}-{compression or 'default'}.zarr"
                start = time.perf_counter()
                results = pipeline.compress(
                    [str(f) for f in files], str(store), **settings, overwrite=True
                )
                seconds = time.perf_counter() - start
                failed = [f"{r.name}: {r.error}" for r in results if r.status != "done"]
                if failed:
                    raise RuntimeError("; ".join(failed))
                parts = store_parts(store)
                total = sum(parts.values())
                png = png_bytes(store, work / f"png-{set_name}-{k}")
                vs_quant = f"{total / quant:.3f}" if quant else "-"
                print(
                    f"| {set_name} | {k} | {compression or 'default'} | {total:,} | "
                    + " | ".join(f"{parts[p]:,}" for p in PARTS)
                    + f" | {png:,} | {quant:,} | {total / png:.3f} | {vs_quant} | {seconds:.2f} |",
                    flush=True,
                )
                if args.zstd_levels:
                    zstd_levels(store, args.zstd_levels, png)


if __name__ == "__main__":
    main()
