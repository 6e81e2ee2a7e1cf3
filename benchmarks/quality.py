"""Quality against pngquant: the pipeline's settings and pngquant 2.17 side by side, in one run.

Two sets of images, nothing downloaded:

* ``photo8``: the eight photos of ``photo8.py`` (china.jpg and flower.jpg of scikit-learn;
  astronaut, coffee, chelsea, motorcycle_left, retina and hubble_deep_field of scikit-image);
* ``gray``, "gray and graphics": scikit-image's camera, moon, coins, page, text (8-bit gray),
  logo (RGBA, fully opaque), horse (RGBA with partly transparent pixels, kept) and a generated
  512 x 512 smooth gradient (R ramps along x, G along y, B along the diagonal: the banding case).

Each image is one file in ``WORK/sources`` (the package's own file, copied; the gradient written
as PNG). Our methods run ``pipeline.compress`` over each set's files (no cluster: dask's local
scheduler), one store per set, method and k, recomputed on every run (``overwrite=True``); the
indexed PNG is written by ``pipeline.outputs.files.write_palette_image`` from the stored palette and
labels. pngquant gets the same PNG files (a JPEG's decoded pixels written as PNG first) and its
output file is measured. A method whose setting the installed code rejects is skipped with a
note, and so is one whose stores come out identical to the defaults' (a setting accepted but not
in effect yet).

Figures, against the pixels the pipeline decodes from the source file:

* PSNR over every value (RGB 0..255). An image with transparency (horse) is compared as its
  RGBA composited over black and over white, both composites pooled into one PSNR; so are
  dE00 and low-pass PSNR (the mean over both composites' pixels).
* dE00: mean CIEDE2000 over every pixel (``pipeline.quantize.metrics.lab`` and ``ciede2000``).
* low-pass PSNR: PSNR after a Gaussian blur of sigma 1.5 pixels of both original and result,
  per channel (``scipy.ndimage.gaussian_filter``, borders reflected): dithering that keeps the
  local mean scores higher here than banding.
* bytes of the indexed PNG; the Zarr store's bytes (``metrics.stored_bytes``); the source's.
* time, one line at the end: our images' own time (``ImageResult.seconds``: decode, fit,
  labels, store) or pngquant's process per image (wall time), summed over every set and k,
  against the defaults' in the same run (after one warm-up of each method on two 96 x 96
  images); a guide only, this is a quality benchmark.

Means per set and k: a lossless result has no PSNR, so PSNR and low-pass PSNR are averaged over
the images that no method in the table rebuilds exactly (how many is shown); dE00 and bytes over
every image.

Usage: python benchmarks/quality.py --work DIR [--k 16 64 128 256] [--methods ...]
    [--sets photo8 gray] [--dither-strength S (default: the pipeline's own)]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from photo8 import PHOTOS

PNGQUANT = "/usr/bin/pngquant"
SETS = {
    "photo8": ("photo8", dict(PHOTOS)),
    "gray": (
        "gray and graphics",
        {
            "camera": ("skimage", "camera.png"),
            "moon": ("skimage", "moon.png"),
            "coins": ("skimage", "coins.png"),
            "page": ("skimage", "page.png"),
            "text": ("skimage", "text.png"),
            "logo": ("skimage", "logo.png"),
            "horse": ("skimage", "horse.png"),
            "gradient": ("generated", "gradient.png"),
        },
    ),
}
#: name -> (label, pipeline settings, or pngquant options)
METHODS: dict[str, tuple[str, dict[str, Any] | None, list[str] | None]] = {
    "default": ("pipeline (defaults)", {}, None),
    "oklab": ("pipeline --space oklab", {"space": "oklab"}, None),
    "ordered": ("pipeline --dither ordered", {"dither": "ordered"}, None),
    "blue-noise": ("pipeline --dither blue-noise", {"dither": "blue-noise"}, None),
    "pngquant-nofs": ("pngquant --nofs --speed 1", None, ["--nofs", "--speed", "1"]),
    "pngquant": ("pngquant --speed 1 (Floyd-Steinberg)", None, ["--speed", "1"]),
}
BASE = "pngquant-nofs"
SIGMA = 1.5


def gradient() -> np.ndarray:
    """512 x 512 RGB: R ramps 0..255 along x, G along y, B along the diagonal."""
    ramp = np.linspace(0, 255, 512)
    x, y = np.meshgrid(ramp, ramp)
    return np.rint(np.stack([x, y, (x + y) / 2], axis=-1)).astype(np.uint8)


def source_file(sources: Path, package: str, file: str) -> Path:
    """The image's file in ``sources``: the package's own file copied, or the gradient written."""
    import imageio.v3 as iio
    import skimage
    import sklearn.datasets

    path = sources / file
    if not path.exists():
        if package == "generated":
            iio.imwrite(path, gradient())
        else:
            folder = (
                Path(sklearn.datasets.__file__).parent / "images"
                if package == "sklearn"
                else Path(skimage.__file__).parent / "data"
            )
            shutil.copyfile(folder / file, path)
    return path


def pngquant_input(path: Path, pixels: np.ndarray, folder: Path) -> Path:
    """A PNG pngquant can read: the file itself, or a JPEG's decoded pixels written as PNG."""
    import imageio.v3 as iio

    if path.suffix.lower() == ".png":
        return path
    out = folder / f"{path.stem}.png"
    if not out.exists():
        iio.imwrite(out, pixels)
    return out


def seen(pixels: np.ndarray, rgba: bool) -> list[np.ndarray]:
    """How the pixels look: RGB as they are, or RGBA composited over black and over white.

    Composites are rounded to uint8 (as :mod:`pipeline.quantize.metrics` does).
    """
    if not rgba:
        return [pixels[..., :3]]
    if pixels.shape[-1] == 3:
        pixels = np.concatenate([pixels, np.full((*pixels.shape[:-1], 1), 255, np.uint8)], -1)
    alpha = pixels[..., 3:].astype(np.uint32)
    black = pixels[..., :3] * alpha
    return [((v + 127) // 255).astype(np.uint8) for v in (black, black + 255 * (255 - alpha))]


def psnr(mse: float) -> float:
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


class Reference:
    """The original image's views, Lab values and blurred views, computed once."""

    def __init__(self, pixels: np.ndarray):
        from scipy.ndimage import gaussian_filter

        from pipeline.quantize.metrics import lab

        self.pixels = pixels
        self.rgba = pixels.shape[-1] == 4
        self.views = seen(pixels, self.rgba)
        self.labs = [lab(v) for v in self.views]
        self.blurred = [
            gaussian_filter(v.astype(np.float64), (SIGMA, SIGMA, 0)) for v in self.views
        ]

    def measure(self, result: np.ndarray) -> dict[str, float]:
        from scipy.ndimage import gaussian_filter

        from pipeline.quantize.metrics import ciede2000, lab

        if result.shape[:2] != self.pixels.shape[:2]:
            raise ValueError(f"result {result.shape} against original {self.pixels.shape}")
        rgba = self.rgba or (result.shape[-1] == 4 and not (result[..., 3] == 255).all())
        if rgba and not self.rgba:
            raise ValueError("the result has transparency the original has not")
        views = seen(result, rgba)
        pairs = list(zip(self.views, views, strict=True))
        mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in pairs])
        blurred = [gaussian_filter(v.astype(np.float64), (SIGMA, SIGMA, 0)) for v in views]
        low = np.mean([np.mean((a - b) ** 2) for a, b in zip(self.blurred, blurred, strict=True)])
        de = np.mean([ciede2000(a, lab(v)).mean() for a, v in zip(self.labs, views, strict=True)])
        return {"psnr": psnr(mse), "de00": float(de), "lowpass": psnr(low)}


def warm_up(work: Path, methods: dict[str, tuple[str, Any, Any]]) -> None:
    """Compile the kernels each of our methods uses (RGB and RGBA) before anything is timed."""
    import imageio.v3 as iio

    import pipeline

    folder = work / "warm-up"
    folder.mkdir(exist_ok=True)
    rgb = gradient()[:96, :96]
    iio.imwrite(folder / "rgb.png", rgb)
    alpha = np.linspace(0, 255, 96 * 96).astype(np.uint8).reshape(96, 96, 1)
    iio.imwrite(folder / "rgba.png", np.concatenate([rgb, alpha], axis=-1))
    for method, (_, settings, _) in methods.items():
        if settings is not None:
            store = str(work / "stores" / f"warm-up-{method}.zarr")
            pipeline.compress([str(folder)], store, overwrite=True, colors=16, **settings)


def colours(pixels: np.ndarray) -> int:
    flat = np.ascontiguousarray(pixels).reshape(-1, pixels.shape[-1])
    return len(np.unique(flat.view(np.dtype((np.void, flat.shape[1])))))


def run_ours(
    files: dict[str, Path],
    refs: dict[str, Reference],
    k: int,
    settings: dict[str, Any],
    store: Path,
    pngs: Path,
) -> dict[str, dict[str, Any]]:
    """Compress the files with these settings; figures and PNG bytes per image."""
    from PIL import Image

    import pipeline
    from pipeline.outputs.files import write_palette_image

    results = pipeline.compress(
        [str(f) for f in files.values()], str(store), overwrite=True, colors=k, **settings
    )
    failed = [f"{r.name}: {r.error}" for r in results if r.status != "done"]
    if failed:
        raise RuntimeError("; ".join(failed))
    seconds = {r.name: r.seconds for r in results}
    stored = pipeline.open_store(str(store))
    pngs.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, path in files.items():
        image = stored[path.name]
        labels = image.labels[...]
        rebuilt = image.palette[labels]
        png = pngs / f"{name}.png"
        with open(png, "wb") as file:
            write_palette_image(image.palette, image.labels, file, ".png")
        with Image.open(png) as file:
            decoded = np.asarray(file.convert("RGBA" if rebuilt.shape[-1] == 4 else "RGB"))
        if not np.array_equal(decoded, rebuilt):
            raise AssertionError(f"{png} does not decode to the stored pixels")
        row = refs[name].measure(rebuilt)
        metrics = image.attrs["metrics"]
        recorded = metrics.get("psnr_db")
        if not refs[name].rgba and recorded is not None and abs(recorded - row["psnr"]) > 0.01:
            print(f"note: {name}: PSNR {row['psnr']:.3f} here, {recorded:.3f} in the store")
        row.update(
            png_bytes=png.stat().st_size,
            zarr_bytes=int(metrics["stored_bytes"]),
            colours=len(np.unique(labels)),
            seconds=seconds[path.name],
            digest=image.attrs["digests"]["palette"] + image.attrs["digests"]["labels"],
        )
        rows[name] = row
    return rows


def run_pngquant(
    inputs: dict[str, Path], refs: dict[str, Reference], k: int, options: list[str], out: Path
) -> dict[str, dict[str, Any]]:
    """pngquant on each input PNG; figures and output bytes per image."""
    from PIL import Image

    from pipeline.inputs.sources import to_rgb8

    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, path in inputs.items():
        png = out / f"{name}.png"
        command = [PNGQUANT, *options, "--force", "--output", str(png), str(k), str(path)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr}")
        with Image.open(png) as image:
            result = to_rgb8(np.asarray(image.convert("RGBA")), keep_alpha=True)
        row = refs[name].measure(result)
        row.update(
            png_bytes=png.stat().st_size,
            zarr_bytes=None,
            colours=colours(result),
            seconds=seconds,
        )
        rows[name] = row
    return rows


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summary(per_image: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Means per method: PSNR and low-pass PSNR over the images no method rebuilds exactly."""
    names = list(next(iter(per_image.values())))
    lossy = [n for n in names if all(r[n]["psnr"] != float("inf") for r in per_image.values())]
    out = {}
    for method, rows in per_image.items():
        out[method] = {
            "psnr": mean([rows[n]["psnr"] for n in lossy]),
            "lowpass": mean([rows[n]["lowpass"] for n in lossy]),
            "averaged": len(lossy),
            "lossless": sum(rows[n]["psnr"] == float("inf") for n in names),
            "de00": mean([rows[n]["de00"] for n in names]),
            "png_bytes": sum(rows[n]["png_bytes"] for n in names),
            "seconds": sum(rows[n]["seconds"] for n in names),
            "zarr_bytes": (
                None
                if rows[names[0]]["zarr_bytes"] is None
                else sum(rows[n]["zarr_bytes"] for n in names)
            ),
        }
    return out


def db(value: float) -> str:
    return "lossless" if value == float("inf") else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--dither-strength", type=float)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from pipeline import Settings
    from pipeline.inputs.sources import read_file

    work = args.work
    sources = work / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    (work / "pngquant-input").mkdir(exist_ok=True)
    methods = {}
    for method in args.methods:
        label, settings, options = METHODS[method]
        if settings is not None and "dither" in settings and args.dither_strength is not None:
            settings = {**settings, "dither_strength": args.dither_strength}
            label += f" (strength {args.dither_strength:g})"
        if settings is not None:
            try:
                Settings.from_config(colors=args.k[0], **settings)
            except Exception as exc:  # an option the installed code does not know yet
                print(f"note: {label}: skipped, the installed pipeline rejects it: {exc}")
                continue
        methods[method] = (label, settings, options)
    version = subprocess.run([PNGQUANT, "--version"], capture_output=True, text=True)
    print(f"pngquant {version.stdout.split()[0]}; methods: {', '.join(methods)}")

    warm_up(work, methods)
    results: dict[str, dict[int, dict[str, dict[str, dict[str, Any]]]]] = {}
    source_bytes: dict[str, dict[str, int]] = {}
    not_in_effect: set[str] = set()
    identical: dict[str, dict[str, bool]] = {}
    for set_name in args.sets:
        title, images = SETS[set_name]
        files = {name: source_file(sources, *where) for name, where in images.items()}
        pixels = {name: read_file(str(path)) for name, path in files.items()}
        refs = {name: Reference(p) for name, p in pixels.items()}
        inputs = {
            name: pngquant_input(path, pixels[name], work / "pngquant-input")
            for name, path in files.items()
        }
        source_bytes[set_name] = {name: path.stat().st_size for name, path in files.items()}
        shown = ", ".join(f"{n} {p.shape[1]}x{p.shape[0]}x{p.shape[2]}" for n, p in pixels.items())
        print(f"{title}: {shown}")
        results[set_name] = {}
        for k in args.k:
            results[set_name][k] = per_method = {}
            for method, (_, settings, options) in methods.items():
                where = f"{set_name}-{method}-k{k}"
                if settings is not None:
                    store = work / "stores" / f"{where}.zarr"
                    per_method[method] = run_ours(
                        files, refs, k, settings, store, work / "png" / where
                    )
                else:
                    per_method[method] = run_pngquant(
                        inputs, refs, k, options, work / "png" / where
                    )
                seconds = sum(r["seconds"] for r in per_method[method].values())
                print(f"  {set_name} k={k} {method}: {seconds:.1f} s", file=sys.stderr)
            base = per_method.get("default")
            for method in ("oklab", "ordered", "blue-noise"):
                if base is not None and method in per_method:
                    rows = per_method[method]
                    same = all(r["digest"] == base[n]["digest"] for n, r in rows.items())
                    identical.setdefault(method, {})[f"{set_name} k={k}"] = same
    for method, where in identical.items():
        if all(where.values()):
            not_in_effect.add(method)
            print(
                f"note: {methods[method][0]}: accepted by the installed code but its stores are "
                "identical to the defaults' (not in effect yet): left out of the tables"
            )
            del methods[method]
        elif any(where.values()):
            same = ", ".join(w for w, s in where.items() if s)
            print(f"note: {methods[method][0]}: identical to the defaults' stores at {same}")
    for per_k in results.values():
        for per_method in per_k.values():
            for method in not_in_effect:
                per_method.pop(method, None)

    means: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for set_name, per_k in results.items():
        title, images = SETS[set_name]
        total = sum(source_bytes[set_name].values())
        print(f"\n### {title}: means over {len(images)} images (sources {total / 1024:,.0f} KiB)\n")
        print(
            "| k | method | PSNR dB | dE00 | low-pass PSNR dB | PNG KiB | PNG vs pngquant --nofs "
            "| Zarr KiB | lossless |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        means[set_name] = {}
        for k, per_method in per_k.items():
            means[set_name][k] = table = summary(per_method)
            for method, row in table.items():
                versus = (
                    f"{row['png_bytes'] / table[BASE]['png_bytes']:.3f}x" if BASE in table else "-"
                )
                zarr_kib = "-" if row["zarr_bytes"] is None else f"{row['zarr_bytes'] / 1024:,.1f}"
                lossless = f"{row['lossless']} ({row['averaged']} averaged)"
                print(
                    f"| {k} | {methods[method][0]} | {row['psnr']:.2f} | {row['de00']:.2f} "
                    f"| {row['lowpass']:.2f} | {row['png_bytes'] / 1024:,.1f} | {versus} "
                    f"| {zarr_kib} | {lossless} |"
                )

    if "gray" in results and 128 in results["gray"]:
        per_method = results["gray"][128]
        shown = list(per_method)
        print(
            "\n### gray and graphics, k = 128, per image: PSNR dB / dE00 / low-pass dB / PNG KiB\n"
        )
        print("| image | source KiB | " + " | ".join(methods[m][0] for m in shown) + " |")
        print("|---|---|" + "---|" * len(shown))
        for name in SETS["gray"][1]:
            cells = [
                f"{db(r['psnr'])} / {r['de00']:.2f} / {db(r['lowpass'])} / "
                f"{r['png_bytes'] / 1024:.1f}"
                for r in (per_method[m][name] for m in shown)
            ]
            kib = source_bytes["gray"][name] / 1024
            print(f"| {name} | {kib:.1f} | " + " | ".join(cells) + " |")
        colour_counts = {m: [per_method[m][n]["colours"] for n in SETS["gray"][1]] for m in shown}
        print(
            "\ncolours used, in that order: "
            + "; ".join(f"{m} {', '.join(map(str, c))}" for m, c in colour_counts.items())
        )

    if "default" in methods:
        spent = {
            m: sum(
                r["seconds"]
                for per_k in results.values()
                for per_method in per_k.values()
                for r in per_method[m].values()
            )
            for m in methods
        }
        shown = ", ".join(f"{m} {t / spent['default']:.2f}x" for m, t in spent.items())
        print(f"\ntime over every set and k, against the defaults': {shown}")

    print("\n### targets\n")
    targets(results, means, args.k)
    (work / "results.json").write_text(
        json.dumps({"results": results, "means": means, "sources": source_bytes}, indent=1)
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def targets(results: dict, means: dict, ks: list[int]) -> None:
    """Print met / missed for each target (not measured: what is missing)."""
    gray = means.get("gray", {})
    for k in ks:
        table = gray.get(k, {})
        if "default" in table and BASE in table:
            ours, theirs = table["default"]["psnr"], table[BASE]["psnr"]
            losses = [
                f"{n} {db(r['psnr'])} < {db(results['gray'][k][BASE][n]['psnr'])}"
                for n, r in results["gray"][k]["default"].items()
                if r["psnr"] < results["gray"][k][BASE][n]["psnr"]
            ]
            detail = f"; images below: {', '.join(losses)}" if losses else "; no image below"
            print(
                f"- gray and graphics, k = {k}: mean PSNR {ours:.2f} >= pngquant --nofs "
                f"{theirs:.2f} dB: {verdict(ours >= theirs)}{detail}"
            )
        else:
            print(f"- gray and graphics, k = {k}: PSNR against pngquant --nofs: not measured")
    for set_name, per_k in means.items():
        for k in ks:
            table = per_k.get(k, {})
            if "default" in table and BASE in table:
                ours, theirs = table["default"]["png_bytes"], table[BASE]["png_bytes"]
                print(
                    f"- {SETS[set_name][0]}, k = {k}: PNG {ours:,} <= pngquant --nofs "
                    f"{theirs:,} bytes: {verdict(ours <= theirs)}"
                )
    photo = means.get("photo8", {})
    table = photo.get(128, {})
    if "oklab" in table:
        de, q = table["oklab"]["de00"], table["oklab"]["psnr"]
        print(
            f"- photo8, k = 128, OKLab: dE00 {de:.2f} <= 1.90 and PSNR {q:.2f} >= 37.23: "
            f"{verdict(de <= 1.90 and q >= 37.23)}"
        )
    else:
        print("- photo8, k = 128, OKLab: dE00 <= 1.90 and PSNR >= 37.23: not measured")
    for k in (16, 64, 256):
        table = photo.get(k, {})
        if "oklab" in table and BASE in table:
            de, theirs = table["oklab"]["de00"], table[BASE]["de00"]
            fs = (
                f" (pngquant with dithering {table['pngquant']['de00']:.2f})"
                if ("pngquant" in table)
                else ""
            )
            print(
                f"- photo8, k = {k}, OKLab: dE00 {de:.2f} < pngquant --nofs {theirs:.2f}{fs}: "
                f"{verdict(de < theirs)}"
            )
        else:
            print(f"- photo8, k = {k}, OKLab: dE00 below pngquant's: not measured")


if __name__ == "__main__":
    main()
