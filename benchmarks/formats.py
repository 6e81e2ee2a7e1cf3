"""Files to hand out: bytes, encode and decode time per format of ``reconstruct``, on photo8.

The eight photos of ``photo8.py`` are written as PNG files in ``WORK/sources`` and compressed by
``pipeline.compress`` at each k into ``WORK/kK.zarr`` (dask's local scheduler). From each
image's stored palette and labels (in memory) every format is encoded into memory and decoded
back; a row whose file does not decode to exactly ``palette[labels]`` stops the script.

Rows:

* ``png``: ``write_palette_image`` (palette in modified-Zeng order, one row filter,
  libdeflate 12);
* ``png, Pillow optimize``: Pillow's indexed PNG of the stored palette order, ``optimize=True``
  (what the anchors call "as PNG-8");
* ``oxipng -o 2`` of that Pillow PNG, when ``pyoxipng`` can be imported (not a dependency:
  ``pip install --target DIR pyoxipng`` and put DIR on ``PYTHONPATH``);
* ``webp mM``: ``write_palette_image`` with ``effort=M`` (libwebp's method, lossless, exact);
* ``jxl eE``: ``write_palette_image`` with ``effort=E`` (libjxl, lossless, RGB input);
* ``pngquant --speed 1 --nofs``: pngquant's own PNG of the source file at the same k, when
  ``pngquant`` is on PATH: bytes and the process's wall time (quantization included), no decode
  time. Ratios are against its bytes (or against ``png`` without it).

Encode and decode times are the median of ``--repeat`` runs per image, summed over the photos,
one process (libjxl and libwebp may use threads of their own).

Usage: python benchmarks/formats.py --work DIR [--k 128] [--repeat 1]
    [--webp 4 6] [--jxl 7 9] [--only png jxl ...]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from photo8 import PHOTOS, load


def timed(work: Callable[[], object], repeat: int) -> tuple[object, float]:
    """``work()``'s result and the median of ``repeat`` wall times, seconds."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def ours(extension: str, effort: int | None) -> Callable[[np.ndarray, np.ndarray], bytes]:
    from pipeline.outputs.files import write_palette_image

    def encode(palette: np.ndarray, labels: np.ndarray) -> bytes:
        file = io.BytesIO()
        write_palette_image(palette, labels, file, extension, effort=effort)
        return file.getvalue()

    return encode


def pillow_png(palette: np.ndarray, labels: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(labels.astype(np.uint8), "P")
    image.putpalette(palette[:, :3].tobytes())
    file = io.BytesIO()
    image.save(file, format="PNG", optimize=True)
    return file.getvalue()


def oxipng_of_pillow(palette: np.ndarray, labels: np.ndarray) -> bytes:
    import oxipng

    return bytes(oxipng.optimize_from_memory(pillow_png(palette, labels), level=2))


def decode(data: bytes) -> np.ndarray:
    if data[:2] == b"\xff\x0a":
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data))
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def encoders(args: argparse.Namespace) -> dict[str, Callable[[np.ndarray, np.ndarray], bytes]]:
    rows: dict[str, Callable[[np.ndarray, np.ndarray], bytes]] = {
        "png": ours(".png", None),
        "png, Pillow optimize": pillow_png,
    }
    try:
        import oxipng  # noqa: F401

        rows["oxipng -o 2 (of Pillow's)"] = oxipng_of_pillow
    except ImportError:
        print("note: no pyoxipng here; its row is left out")
    rows |= {f"webp m{m}": ours(".webp", m) for m in args.webp}
    rows |= {f"jxl e{e}": ours(".jxl", e) for e in args.jxl}
    if args.only:
        rows = {name: f for name, f in rows.items() if name.split()[0] in args.only}
    return rows


def sources(work: Path) -> list[Path]:
    import imageio.v3 as iio

    folder = work / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, (package, file) in PHOTOS.items():
        path = folder / f"{name}.png"
        if not path.exists():
            iio.imwrite(path, load(package, file))
        files.append(path)
    return files


def pngquant(files: list[Path], k: int, out: Path) -> tuple[int, float] | None:
    """Bytes and wall time of ``pngquant --speed 1 --nofs k`` over the files, if on PATH."""
    program = shutil.which("pngquant")
    if program is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    total, seconds = 0, 0.0
    for path in files:
        target = out / path.name
        command = [program, "--speed", "1", "--nofs", "--force", "--output", str(target)]
        start = time.perf_counter()
        subprocess.run([*command, str(k), str(path)], check=True)
        seconds += time.perf_counter() - start
        total += target.stat().st_size
    return total, seconds


def measure(work: Path, k: int, args: argparse.Namespace) -> None:
    import pipeline

    files = sources(work)
    store = work / f"k{k}.zarr"
    results = pipeline.compress([str(f) for f in files], str(store), overwrite=True, colors=k)
    failed = [f"{r.name}: {r.error}" for r in results if r.status != "done"]
    if failed:
        raise RuntimeError("; ".join(failed))
    stored = pipeline.open_store(str(store))
    images = [(image.palette, image.labels[...]) for image in stored.values()]
    pixels = sum(labels.size for _, labels in images)
    table = {}
    for name, encode in encoders(args).items():
        size, encoding, decoding = 0, 0.0, 0.0
        for palette, labels in images:
            data, seconds = timed(lambda: encode(palette, labels), args.repeat)  # noqa: B023
            assert isinstance(data, bytes)
            rebuilt, back = timed(lambda: decode(data), args.repeat)  # noqa: B023
            if not np.array_equal(rebuilt, palette[labels]):
                raise AssertionError(f"{name}: a file does not decode to the stored pixels")
            size, encoding, decoding = size + len(data), encoding + seconds, decoding + back
        table[name] = (size, encoding, decoding)
    reference = pngquant(files, k, work / f"pngquant{k}")
    base = reference[0] if reference else table["png"][0]
    against = "pngquant" if reference else "png"
    print(f"\nk = {k}, photo8 ({pixels / 1e6:.2f} MP), ratio against {against}'s bytes")
    print(f"| format | bytes | x {against} | encode s | decode s |")
    print("|---|---|---|---|---|")
    for name, (size, encoding, decoding) in table.items():
        print(f"| {name} | {size:,} | {size / base:.3f} | {encoding:.2f} | {decoding:.2f} |")
    if reference:
        print(f"| pngquant --speed 1 --nofs | {reference[0]:,} | 1.000 | {reference[1]:.2f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for sources and stores")
    parser.add_argument("--k", type=int, nargs="+", default=[128])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--webp", type=int, nargs="*", default=[4, 6], metavar="METHOD")
    parser.add_argument("--jxl", type=int, nargs="*", default=[7, 9], metavar="EFFORT")
    parser.add_argument("--only", nargs="*", help="first words of the rows to run (png, jxl...)")
    args = parser.parse_args()
    for k in args.k:
        measure(args.work, k, args)


if __name__ == "__main__":
    main()
