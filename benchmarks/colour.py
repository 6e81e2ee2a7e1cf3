"""The cost of showing a photo as a viewer does: ICC conversion to sRGB and EXIF orientation.

Three JPEGs of ``--mp`` megapixels (china.jpg mirror-tiled to a 10:7 landscape, quality 90, as
benchmarks/scale.py makes them) are written to a temporary folder, deleted afterwards: plain
(no profile, no orientation), with a Display P3 profile (built by
:func:`pipeline.inputs.profiles.matrix_profile`), and plain with EXIF orientation 6. Each is
read once before timing (page cache). Every figure is the median of ``--repeat`` runs in this
warm process, the rows' runs alternating; every ratio is against the plain decode of the same run:

* bare ``imagecodecs.jpeg8_decode`` of the file's bytes (libjpeg-turbo);
* :func:`pipeline.inputs.sources.read_file` of the plain file (decode, header read);
* ``read_file`` of the P3 file: decode + conversion to sRGB (perceptual);
* ``read_file`` of the orientation-6 file: decode + turn (a copy into a contiguous array);
* :func:`pipeline.inputs.profiles.to_srgb` alone on the decoded pixels, as the job calls it,
  and, for comparison, its strips on one thread, and one littleCMS call over the whole image
  (``threads=0``: what ``to_srgb`` did before it converted large images in strips on threads).

Usage: python benchmarks/colour.py [--mp 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale import PHOTOS, load, mirror


def make(folder: Path, megapixels: float) -> dict[str, Path]:
    """The three JPEGs: plain, Display P3, EXIF orientation 6."""
    from PIL import Image

    from pipeline.inputs.profiles import D65, P3_PRIMARIES, SRGB_CURVE, matrix_profile

    height = int((megapixels * 1e6 / (10 / 7)) ** 0.5)
    width = int(height * 10 / 7)
    image = Image.fromarray(mirror(load(*PHOTOS["china"]), height, width))
    p3 = matrix_profile(P3_PRIMARIES, D65, SRGB_CURVE, "Display P3")
    exif = Image.Exif()
    exif[0x0112] = 6
    paths = {"plain": folder / "plain.jpg", "p3": folder / "p3.jpg", "o6": folder / "o6.jpg"}
    image.save(paths["plain"], quality=90)
    image.save(paths["p3"], quality=90, icc_profile=p3)
    image.save(paths["o6"], quality=90, exif=exif.tobytes())
    return paths


def median_times(rows: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each row, the rows' runs alternating."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeat):
        for name, run in rows.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mp", type=float, default=100, help="megapixels (default: 100)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row (default: 5)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning on opening headers

    import imagecodecs

    from pipeline.inputs import profiles
    from pipeline.inputs.looks import read_looks
    from pipeline.inputs.sources import read_file

    with tempfile.TemporaryDirectory(prefix="colour-") as folder:
        paths = make(Path(folder), args.mp)
        data = {name: path.read_bytes() for name, path in paths.items()}
        pixels = imagecodecs.jpeg8_decode(data["p3"])
        height, width = pixels.shape[:2]
        megapixels = height * width / 1e6
        profile = read_looks(str(paths["p3"])).profile
        assert profile is not None
        print(
            f"colour: {width} x {height} = {megapixels:.1f} MP; JPEG "
            f"{len(data['plain']) / 1e6:.1f} MB; {os.cpu_count()} CPUs; "
            f"strips of {profiles.STRIP_ROWS} rows on {profiles.STRIP_THREADS} threads "
            f"above {profiles.STRIP_PIXELS / 1e6:g} MP"
        )
        rows: dict[str, Callable[[], object]] = {
            "imagecodecs.jpeg8_decode (bare libjpeg-turbo)": lambda: imagecodecs.jpeg8_decode(
                data["plain"]
            ),
            "read_file, plain": lambda: read_file(str(paths["plain"])),
            "read_file, Display P3 (decode + conversion)": lambda: read_file(str(paths["p3"])),
            "read_file, orientation 6 (decode + turn)": lambda: read_file(str(paths["o6"])),
            "to_srgb alone (as the job converts)": lambda: profiles.to_srgb(pixels, profile),
            "to_srgb alone, strips on 1 thread": lambda: profiles.to_srgb(
                pixels, profile, threads=1
            ),
            "to_srgb alone, one littleCMS call (threads=0)": lambda: profiles.to_srgb(
                pixels, profile, threads=0
            ),
        }
        for run in rows.values():  # warm: imports, the transform's cache
            run()
        seconds = median_times(rows, args.repeat)

    base = seconds["read_file, plain"]
    print(f"\n| step ({megapixels:.0f} MP, median of {args.repeat}) | s | MP/s | x plain read |")
    print("|---|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} | {megapixels / value:.0f} | {value / base:.2f} |")


if __name__ == "__main__":
    main()
