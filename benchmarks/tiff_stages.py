"""Stages of a tiled TIFF job alone (issue 26): what each costs per megapixel on one thread.

The 250-megapixel TIFF of ``scale.py`` (flower.jpg mirror-tiled, zlib, 512-pixel tiles; made
once in ``--work``) is read once beforehand so that it is in the page cache. Each stage runs
alone, on one thread, over the whole image in the job's 1024-pixel chunks, and is reported in
seconds and megapixels per second:

* decode: tifffile's whole-page read, and the job's chunk reader (``pipeline.inputs.tiled``);
* count: the colour histogram of the fit's grid (``grid_histogram``);
* fit: the palette from the sample and the counts (``fit_sampled``, 128 colours);
* label: the exact labels of every chunk (``label_block``);
* encode: every labels chunk as the store holds it (zstd level 5 and its CRC-32C);
* measure: the CIEDE2000 error of each chunk (``colour_error``).

The job runs the fit's pass (decode, count, sample) and then the labels' pass (decode, label,
encode, measure, pyramid), each on every core: their sum over the cores bounds its speed.

A second table is the floor of a whole job on ``--cores`` cores, as if every part after the
start kept every core busy and the runtime (scheduler, zarr's Python, the kernel's page
faults) cost nothing:

* start: from a process's spawn until the job's threaded cluster is up and the decoders are
  imported (``pipeline.job.cluster.connect``), in a process of its own: nothing is read before;
* warm-up: dask-ml's import and the kernels' loading (the job's ``pipeline-warm-up`` thread,
  alone), which runs beside the first reads;
* stages: the rows above as the job runs them: the decode again for the blocks it does not
  hold between its two passes (``graph.held_blocks`` at the configured ``hold_bytes``), and the
  encoding of every pyramid level besides level 0;
* floor: start + (warm-up + stages) / cores, and the megapixels per second it allows.

Usage: python benchmarks/tiff_stages.py [--work DIR] [--gp 0.25] [--cores 2]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from scale import make_tiff

CHUNK = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scale")
    parser.add_argument("--gp", type=float, default=0.25, help="gigapixels of the TIFF")
    parser.add_argument("--cores", type=int, default=2, help="cores of the floor's job")
    args = parser.parse_args()
    import tifffile

    from pipeline.inputs.tiled import TiffTiles
    from pipeline.job.tasks import fit_sampled
    from pipeline.quantize.assign import label_block, label_dtype
    from pipeline.quantize.colours import merge_histograms
    from pipeline.quantize.count import grid_histogram, grid_stride
    from pipeline.quantize.metrics import colour_error
    from pipeline.quantize.sample import sample_positions
    from pipeline.settings import Settings
    from pipeline.store.write import encode_chunk

    args.work.mkdir(parents=True, exist_ok=True)
    path = make_tiff(args.work, args.gp)
    path.read_bytes()
    settings = Settings.from_config()
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shape, dtype = tuple(page.shape), page.dtype
    height, width = shape[:2]
    megapixels = height * width / 1e6
    regions = [
        (slice(y, min(y + CHUNK, height)), slice(x, min(x + CHUNK, width)))
        for y in range(0, height, CHUNK)
        for x in range(0, width, CHUNK)
    ]
    rows: list[tuple[str, float]] = []

    def timed(stage: str, step: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = step()
        rows.append((stage, time.perf_counter() - started))
        return result

    image = timed("decode: tifffile, whole page", lambda: tifffile.imread(path, maxworkers=1))
    tiles = TiffTiles(str(path), shape, dtype)
    timed("decode: the job's chunk reader", lambda: [tiles[(*r, slice(None))] for r in regions])
    stride = grid_stride((height, width), settings.count_pixels)
    parts = timed(
        "count: grid histogram",
        lambda: [grid_histogram(image[r], r[0].start, r[1].start, stride) for r in regions],
    )
    counts = merge_histograms(*parts)
    sample = image[sample_positions((height, width), settings.sample, settings.seed)]
    fit_sampled(sample, counts, settings)  # compiled and warm
    fit = timed(
        "fit: palette from sample and counts", lambda: fit_sampled(sample, counts, settings)
    )
    kind = label_dtype(settings.colors)
    labels = timed(
        "label: exact labels", lambda: [label_block(image[r], fit, kind)[0] for r in regions]
    )
    timed("encode: zstd 5 + CRC-32C", lambda: [encode_chunk(part, "portable") for part in labels])
    timed(
        "measure: CIEDE2000",
        lambda: [
            colour_error(image[r], part, fit.palette, (r[0].start, r[1].start), (height, width))
            for r, part in zip(regions, labels, strict=True)
        ],
    )
    print(f"{path.name}: {height} x {width}, {megapixels:.1f} MP, {len(regions)} chunks")
    print("| stage | seconds | MP/s, one thread |\n|---|---|---|")
    for stage, seconds in rows:
        print(f"| {stage} | {seconds:.2f} | {megapixels / seconds:.0f} |")
    print_floor(str(path), dict(rows), megapixels, args.cores)


#: A process that starts the job's threaded cluster as the job does, then waits for the warm-up
#: thread: prints the time the cluster was up and how long the warm-up took alone.
START = """
import threading, time
from pipeline.job.cluster import connect
from pipeline.settings import Settings
settings = Settings.from_config()
with connect(kind="threads", dashboard_address="127.0.0.1:0", settings=settings):
    up = time.time()
    for thread in threading.enumerate():
        if thread.name == "pipeline-warm-up":
            thread.join()
    print(up, time.time() - up)
"""


def start_and_warm_up() -> tuple[float, float]:
    """Seconds from a process's spawn until the job's threaded cluster is up, and its warm-up."""
    spawned = time.time()
    done = subprocess.run([sys.executable, "-c", START], capture_output=True, text=True, check=True)
    up, warm_up = (float(word) for word in done.stdout.split())
    return up - spawned, warm_up


def print_floor(path: str, stages: dict[str, float], megapixels: float, cores: int) -> None:
    """The floor of a whole job on ``cores`` cores, from the stages' seconds on one thread."""
    from pipeline.inputs.sources import probe
    from pipeline.job.graph import fewest_blocks, held_blocks, source_from_probe
    from pipeline.settings import Running, Settings
    from pipeline.store import ngff

    settings = Settings.from_config()
    found = probe(path, 1 << 40)
    image = source_from_probe(found, "floor", settings.chunk, "floor", fewest_blocks(cores)).image
    again = 1 - held_blocks(image, Running.from_config().hold_bytes) / image.npartitions
    shape = (int(image.shape[0]), int(image.shape[1]))
    chunks = (settings.chunk, settings.chunk)
    levels = ngff.level_count(shape, chunks)
    pyramid = sum(math.prod(ngff.level_shape(shape, n)) for n in range(levels)) / math.prod(shape)
    work = (
        stages["decode: the job's chunk reader"] * (1 + again)
        + stages["count: grid histogram"]
        + stages["fit: palette from sample and counts"]
        + stages["label: exact labels"]
        + stages["encode: zstd 5 + CRC-32C"] * pyramid
        + stages["measure: CIEDE2000"]
    )
    start, warm_up = start_and_warm_up()
    floor = start + (warm_up + work) / cores
    print(f"\n## The floor of a whole job on {cores} cores (nothing idle, no runtime cost)")
    print("| part | seconds | |\n|---|---|---|")
    print(f"| start: spawn to a threaded cluster up | {start:.2f} | before any read |")
    print(f"| warm-up: dask-ml and the kernels, alone | {warm_up:.2f} | beside the reads |")
    print(
        f"| stages: decode x {1 + again:.2f} (blocks read again), encode x {pyramid:.2f} "
        f"(pyramid), the others once | {work:.2f} | on every core |"
    )
    print(
        f"| floor: start + (warm-up + stages) / {cores} | {floor:.2f} | "
        f"{megapixels / floor:.1f} MP/s |"
    )


if __name__ == "__main__":
    main()
