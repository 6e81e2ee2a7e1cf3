"""A store's compression as one self-contained HTML page (``python -m pipeline report``).

The page (:func:`write_report`) has a summary table of the store's images (size, colours,
quality, bytes) and, for each image, its palette as colour swatches, most used first, and the
rebuilt image beside its original where the recorded source can still be read: a thumbnail of
the whole image and a 1:1 crop of the region where the two differ most (the centre when there
is no original to compare with). Everything is inside the one file: styles inline, pictures as
``data:`` URIs, and a Content Security Policy that lets the page load nothing else, so it opens
offline and can be archived or mailed as it is.

Pictures are computed with dask, chunk by chunk: thumbnails are block means, and only the
crop's chunks are read at full resolution. An original that is a plain image file (JPEG, PNG,
...) is decoded whole, as the job decoded it; tiled TIFF and Zarr originals are read chunk by
chunk. Rebuilt pictures are lossless PNG (indexed colour when they have 256 colours or fewer: 2
to 3 times smaller), since they are what the page is there to judge; so are the original's 1:1
pictures, the exact pixels the rebuilt ones are compared with. The original's thumbnail (block
means of a photograph) is JPEG, quality 90 without chroma subsampling: about 4 times smaller
than as PNG, with artefacts far below what the block means already smooth away.

An image that is damaged, incomplete or not in the store gets one row saying so (the readers of
:mod:`pipeline.store.read`), and the others are still shown. The file is written under a hidden
temporary name beside its own and renamed once complete; an existing file is replaced only
when asked to.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import dask
import numpy as np
from numpy.typing import NDArray

from pipeline.errors import InputError, PipelineError, UsageError, os_reason
from pipeline.job.graph import block_sums, label_counts, open_file, rebuild, thumbnail
from pipeline.job.summary import HEADER, human_bytes, image_row, is_dithered, settings_line
from pipeline.outputs.files import (
    TargetExists,
    exists_message,
    kept_reason,
    publish,
    remove_output,
    temporary_beside,
    write_palette_image,
)
from pipeline.paths import is_url
from pipeline.quantize.colours import pack, unpack
from pipeline.quantize.metrics import psnr
from pipeline.results import LARGER_THAN_SOURCE, is_number, larger_than_source
from pipeline.store.location import Location
from pipeline.store.read import (
    NO_SUCH_IMAGE,
    Damaged,
    Entry,
    Incomplete,
    entry,
    image_settings,
    listed,
    one_line,
    open_image,
)
from pipeline.store.write import StoredImage, open_root

if TYPE_CHECKING:
    import dask.array as da

#: Longest side of a thumbnail, in pixels.
THUMBNAIL_SIDE = 480
#: Side of the 1:1 crops, in pixels.
CROP_SIDE = 256
#: Most palette entries shown as swatches (the most used ones).
SWATCHES = 256
#: JPEG quality of the original's thumbnail.
JPEG_QUALITY = 90

#: Between width and height of a size on the page.
TIMES = "\N{MULTIPLICATION SIGN}"

#: Columns of the summary table: ``info``'s (:data:`pipeline.job.summary.HEADER`), with the size in
#: place of the pixel count.
SUMMARY_HEADER = [f"size (W{TIMES}H)" if column == "pixels" else column for column in HEADER]

#: The page may load nothing but its own inline styles and ``data:`` pictures.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_STYLE = """\
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#1d1d1d;background:#fff}
h1{font-size:1.5em}h2{font-size:1.2em;margin:2em 0 .4em;border-top:1px solid #ccc;padding-top:1em}
table{border-collapse:collapse;margin:.5em 0}
th,td{padding:.2em .7em;border-bottom:1px solid #e2e2e2;text-align:right;vertical-align:top}
th{background:#f3f3f3}
.summary td:nth-child(-n+2),.summary th:nth-child(-n+2),.details th{text-align:left}
.details td{text-align:left}
tr.total td{font-weight:600;border-top:2px solid #999}
.problem{color:#a40000}.note{color:#6b4e00}
.mark{font-size:11px;font-weight:600;color:#fff;background:#6a3d9a;border-radius:3px;
padding:.05em .4em;vertical-align:middle}
.swatches{display:flex;flex-wrap:wrap;gap:2px;max-width:976px;margin:.4em 0}
.swatches span{width:14px;height:14px;border:1px solid rgba(0,0,0,.15)}
.pair{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;margin:.6em 0}
figure{margin:0}figcaption{font-size:12px;color:#555;max-width:480px}
img{display:block;border:1px solid #ccc;background:repeating-conic-gradient(#ddd 0 25%,#fff 0 50%)
0 0/16px 16px}
img.crop{image-rendering:pixelated}
"""


@dataclass(frozen=True)
class Shown:
    """What became of one image of a :func:`write_report` call.

    Attributes
    ----------
    name : str
        The image's name in the store.
    problem : str or None
        Why it was left out of the page, in one line without its name; None when it is shown.
    kind : str
        ``"shown"``, or why it was left out: ``"incomplete"`` (not marked complete),
        ``"damaged"`` (metadata, an array or a chunk unreadable or missing), ``"absent"`` (no
        such image).
    note : str or None
        For an image shown without its original: why (the source gone, unreadable, changed
        since it was compressed, or an in-memory array).
    """

    name: str
    problem: str | None = None
    kind: str = "shown"
    note: str | None = None


def write_report(
    store: Location, out: str, names: list[str] | None = None, *, overwrite: bool = False
) -> Generator[Shown, None, None]:
    """Write the HTML report of ``store`` to ``out``, yielding each image's outcome in turn.

    The page is written once the last image is yielded: under a hidden temporary name beside
    ``out``, renamed to ``out`` when complete. An iterator closed early writes nothing.

    Parameters
    ----------
    store : Location
        Path or URL of a store written by :func:`pipeline.compress`.
    out : str
        Local HTML file to write (its folder is created if needed).
    names : list of str, optional
        Only these images, in this order (default: every image of the store, sorted).
    overwrite : bool
        Replace an existing ``out``; otherwise it is kept and nothing is written.

    Yields
    ------
    Shown
        Each image's outcome: shown, or left out with the reason.

    Raises
    ------
    UsageError
        When the store cannot be opened, a name cannot be an image's, or ``out`` is a URL, a
        folder or (without ``overwrite``) an existing file.
    PipelineError
        When ``out`` cannot be written.
    """
    if is_url(out):
        raise UsageError(f"{out}: the report must be a local file")
    refused = kept_reason(out, folder=False, overwrite=overwrite)
    if refused:
        raise UsageError(refused)
    root = open_root(store)  # no such store, not a pipeline store: exit 1, as for info
    listing, chosen = listed(store, list(dict.fromkeys(names)) if names else None)
    rows: list[str] = []
    totals = _Totals()
    with _sections_file(out) as sections:
        for index, name in enumerate(chosen):
            found = entry(store, name, listing)
            shown, row, section = _image(store, found, f"image-{index}")
            rows.append(row)
            if section is not None and found.attrs is not None:
                sections.write(section)
                totals.add(found.attrs)
            yield shown
        head = _head(store, root.attrs.get("format_version"), rows, totals)
        _write_page(out, head, sections, overwrite=overwrite)


def _sections_file(out: str) -> IO[str]:
    """An anonymous temporary file beside ``out`` for the image sections (they may be large).

    Raises
    ------
    PipelineError
        When ``out``'s folder cannot be created or written.
    """
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
        return tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder)
    except OSError as exc:
        raise PipelineError(f"{out}: cannot be written: {os_reason(exc)}") from None


def _image(store: Location, found: Entry, anchor: str) -> tuple[Shown, str, str | None]:
    """One image's outcome, summary row and section (None when it is left out)."""
    name = found.name
    if found.attrs is None or found.problem is not None:
        problem = str(found.problem)
        kind = "absent" if problem == NO_SUCH_IMAGE else "damaged"
        return Shown(name, problem, kind), _problem_row(name, kind, problem), None
    try:
        image = open_image(store, name, found.attrs)
        section, note = _section(image, anchor)
    except Incomplete as exc:
        problem = str(exc).removeprefix(f"{name}: ")
        return Shown(name, problem, "incomplete"), _problem_row(name, "incomplete", problem), None
    except Damaged as exc:
        return Shown(name, exc.problem, "damaged"), _problem_row(name, "damaged", exc.problem), None
    return Shown(name, note=note), _summary_row(name, found.attrs, anchor), section


# --- pictures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pictures:
    """The pictures of one image, as ``data:`` URIs, with what the page says about them."""

    thumbnail: str
    thumbnail_size: tuple[int, int]
    factors: tuple[int, int]
    crop: str | None
    crop_box: tuple[int, int, int, int]
    worst: bool  # whether the crop is where the original and the rebuilt image differ most
    counts: NDArray[np.int64]
    original_thumbnail: str | None = None
    original_crop: str | None = None
    note: str | None = None


def _factors(height: int, width: int) -> tuple[int, int]:
    """Block sizes (rows, columns) that bring the image's long side to THUMBNAIL_SIDE or less."""
    factor = max(1, math.ceil(max(height, width) / THUMBNAIL_SIDE))
    return min(factor, height), min(factor, width)


def _squared_errors(original: da.Array, rebuilt: da.Array) -> da.Array:
    """(H, W) int64 squared differences between two images, summed over the channels."""
    difference = original.astype(np.int32) - rebuilt.astype(np.int32)
    return (difference * difference).sum(axis=2, dtype=np.int64)


def _original(image: StoredImage) -> tuple[da.Array | None, str | None]:
    """The image's recorded source, opened lazily; or None and why it cannot be shown.

    Read as it was compressed: the frame or page recorded, its colour profile converted to
    sRGB or kept as the recorded settings say.
    """
    recorded = image.attrs["source"]
    path = recorded["path"]
    if path == "<array>":
        return None, "compressed from an in-memory array, not a file"
    frame = int(recorded.get("frame", 0))
    convert = image.attrs.get("fit_settings", {}).get("color_profile", "convert") != "keep"
    try:
        chunk = max(image.labels.chunks)
        source = open_file(path, image.name, chunk, frame=frame, convert=convert)
    except Exception as exc:  # whatever stops reading the original only hides the original
        return None, _problem(exc)
    height, width, channels = source.image.shape
    if (height, width) != image.labels.shape:
        return None, f"now {width}x{height} pixels, not {_size(image.attrs)}"
    if channels != image.palette.shape[1]:  # read as RGB, stored with its transparency
        return None, "an image with transparency: shown as stored only"
    return source.image, None


def _problem(exc: Exception) -> str:
    """One line for an error met while reading an original (without its path)."""
    return exc.problem if isinstance(exc, InputError) else one_line(exc)


def _compute(
    name: str, rebuilt: Sequence[da.Array], original: Sequence[da.Array]
) -> tuple[list[Any], list[Any] | None, str | None]:
    """Compute parts of the rebuilt image and of the original, together when there are both.

    Returns the rebuilt values, the original's (None when there are none, or when the original
    could not be read: the rebuilt parts are then computed again without it), and why the
    original could not be read.

    Raises
    ------
    Damaged
        When the stored image cannot be read (a chunk failing its checksum, labels beyond the
        palette).
    """
    problem = None
    if original:
        try:
            values = dask.compute(*rebuilt, *original)
        except Damaged:
            raise
        except Exception as exc:  # the original failed to decode: show the image without it
            problem = _problem(exc)
        else:
            return list(values[: len(rebuilt)]), list(values[len(rebuilt) :]), None
    try:
        return list(dask.compute(*rebuilt)), None, problem
    except Damaged:
        raise
    except Exception as exc:
        raise Damaged(name, f"labels unreadable ({one_line(exc)})") from None


def _worst_window(errors: NDArray[np.int64], rows: int, columns: int) -> tuple[int, int] | None:
    """Top-left cell of the ``rows`` x ``columns`` window of ``errors`` with the largest sum.

    None when every error is 0.
    """
    rows, columns = min(rows, errors.shape[0]), min(columns, errors.shape[1])
    integral = np.zeros((errors.shape[0] + 1, errors.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = errors.cumsum(axis=0).cumsum(axis=1)
    sums = (
        integral[rows:, columns:]
        - integral[:-rows, columns:]
        - integral[rows:, :-columns]
        + integral[:-rows, :-columns]
    )
    if not sums.any():
        return None
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def _crop_box(
    shape: tuple[int, int], factors: tuple[int, int], errors: NDArray[np.int64] | None
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the crop: where the error map is largest, else centred.

    Centred when there is no error map, or no error.
    """
    height, width = min(CROP_SIDE, shape[0]), min(CROP_SIDE, shape[1])
    worst = (
        None
        if errors is None
        else _worst_window(errors, -(-height // factors[0]), -(-width // factors[1]))
    )
    if worst is None:
        return (shape[0] - height) // 2, (shape[1] - width) // 2, height, width
    top = min(worst[0] * factors[0], shape[0] - height)
    left = min(worst[1] * factors[1], shape[1] - width)
    return top, left, height, width


def _changed(image: StoredImage, squared: int) -> bool:
    """Whether the original's error against the rebuilt image is not the one recorded.

    Only for RGB images: the error of an image with transparency is recorded over its
    composites on black and white (:mod:`pipeline.quantize.rgba`).
    """
    recorded = image.attrs["metrics"].get("mse")
    if image.palette.shape[1] != 3 or not is_number(recorded):
        return False
    measured = squared / (3 * image.labels.shape[0] * image.labels.shape[1])
    return not math.isclose(measured, recorded, rel_tol=1e-6, abs_tol=1e-9)


def _pictures(image: StoredImage) -> _Pictures:
    """Compute an image's thumbnails, crops and colour counts (two passes over its chunks)."""
    rebuilt = rebuild(image)
    shape = image.labels.shape
    factors = _factors(*shape)
    original, problem = _original(image)
    lazy_original = []
    if original is not None:
        squared = _squared_errors(original, rebuilt)
        lazy_original = [
            thumbnail(original, factors),
            block_sums(squared, factors),
            squared.sum(),
        ]
    (shown, counts), seen, failed = _compute(
        image.name, [thumbnail(rebuilt, factors), label_counts(image)], lazy_original
    )
    if seen is not None and _changed(image, int(seen[2])):
        seen, failed = None, "changed since it was compressed"
    box = _crop_box((shape[0], shape[1]), factors, None if seen is None else seen[1])
    crop = original_crop = None
    worst = seen is not None and bool(seen[1].any())
    if factors != (1, 1):  # else the thumbnail is the whole image at 1:1 already
        region = (slice(box[0], box[0] + box[2]), slice(box[1], box[1] + box[3]))
        pair = [] if seen is None or original is None else [original[region]]
        (rebuilt_crop,), originals, failed_crop = _compute(image.name, [rebuilt[region]], pair)
        crop = _png(rebuilt_crop)
        if originals is None:
            seen, failed = None, failed or failed_crop
        else:
            original_crop = _png(originals[0])
    problem = problem or failed
    path = image.attrs["source"]["path"]
    return _Pictures(
        thumbnail=_png(shown),
        thumbnail_size=(shown.shape[1], shown.shape[0]),
        factors=factors,
        crop=crop,
        crop_box=box,
        worst=worst and original_crop is not None,
        counts=np.asarray(counts, dtype=np.int64),
        original_thumbnail=None if seen is None else _thumbnail_uri(seen[0], factors),
        original_crop=original_crop,
        note=None if problem is None else f"original not shown: {path}: {problem}",
    )


def _data_uri(kind: str, data: bytes) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _png(pixels: NDArray[np.uint8]) -> str:
    """Lossless PNG ``data:`` URI of (h, w, 3) RGB or (h, w, 4) RGBA uint8 pixels.

    RGB pixels of 256 colours or fewer are written as an indexed PNG
    (:func:`pipeline.outputs.files.write_palette_image`).
    """
    from PIL import Image

    buffer = io.BytesIO()
    if pixels.shape[2] == 3:
        keys = pack(pixels)
        colours, indices = np.unique(keys, return_inverse=True)
        if len(colours) <= 256:
            labels = indices.reshape(keys.shape).astype(np.uint8)
            write_palette_image(unpack(colours), labels, buffer, ".png")
            return _data_uri("png", buffer.getvalue())
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, "PNG", optimize=True)
    return _data_uri("png", buffer.getvalue())


def _thumbnail_uri(pixels: NDArray[np.uint8], factors: tuple[int, int]) -> str:
    """An original's thumbnail: JPEG for block means of RGB pixels, else PNG.

    PNG keeps an image shown at 1:1 exact, and JPEG cannot hold transparency.
    """
    return _jpeg(pixels) if factors != (1, 1) and pixels.shape[2] == 3 else _png(pixels)


def _jpeg(pixels: NDArray[np.uint8]) -> str:
    """JPEG ``data:`` URI of (h, w, 3) uint8 pixels (quality JPEG_QUALITY, no subsampling)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True
    )
    return _data_uri("jpeg", buffer.getvalue())


# --- the page ---------------------------------------------------------------------------------


def _metric(attrs: dict[str, Any], key: str) -> float | None:
    """A number of the image's ``metrics`` attribute, None when absent (older stores)."""
    value = attrs["metrics"].get(key)
    return float(value) if is_number(value) else None


def _shown(value: float | None, text: Callable[[float], str]) -> str:
    return "" if value is None else text(value)


def _size(attrs: dict[str, Any]) -> str:
    height, width, _ = attrs["image_shape"]
    return f"{width:,}{TIMES}{height:,}"


def _cells(html_cells: Sequence[str], tag: str = "td") -> str:
    return "".join(f"<{tag}>{cell}</{tag}>" for cell in html_cells)


def _summary_row(name: str, attrs: dict[str, Any], anchor: str) -> str:
    """The summary table's row of a shown image."""
    cells = [html.escape(cell) for cell in image_row(name, attrs["status"], attrs)]
    cells[0] = f'<a href="#{anchor}">{html.escape(name)}</a>' + _dither_mark(attrs)
    if larger_than_source(attrs["metrics"]):
        cells[0] += f' <span class="mark" title="{LARGER_THAN_SOURCE}">larger</span>'
    cells[HEADER.index("pixels")] = _size(attrs)
    return f"<tr>{_cells(cells)}</tr>"


def _dither_mark(attrs: dict[str, Any]) -> str:
    """A badge saying how an image was dithered; empty for an image that was not."""
    settings = image_settings(attrs)
    if not is_dithered(settings):
        return ""
    strength = settings.get("dither_strength")
    how = f"{settings['dither']}" + (f" {strength:g}" if is_number(strength) else "")
    return f' <span class="mark" title="dithered: {html.escape(how)}">dithered</span>'


def _problem_row(name: str, kind: str, problem: str) -> str:
    """The summary table's row of an image left out: its name, why, in one line."""
    span = len(SUMMARY_HEADER) - 2
    return (
        f'<tr class="problem"><td>{html.escape(name)}</td><td>{kind}</td>'
        f'<td colspan="{span}" style="text-align:left">{html.escape(problem)}</td></tr>'
    )


@dataclass
class _Totals:
    """Sums over the images shown, for the summary table's last row."""

    images: int = 0
    raw: int = 0
    stored: int = 0
    squared: float = 0.0  # sum of mse x pixels, over images recording it
    squared_pixels: int = 0
    ciede: float = 0.0  # sum of mean x pixels, over images recording both
    ciede_pixels: int = 0
    source: int = 0  # source file bytes, and stored bytes, of images recording them
    source_stored: int = 0
    dithered: int = 0
    settings: set[str] = field(default_factory=set)  # the settings lines of the images shown

    def add(self, attrs: dict[str, Any]) -> None:
        """Count one shown image."""
        metrics = attrs["metrics"]
        stored = int(metrics["stored_bytes"])
        height, width, _ = attrs["image_shape"]
        raw, mse = _metric(attrs, "raw_bytes"), _metric(attrs, "mse")
        self.images += 1
        self.stored += stored
        settings = image_settings(attrs)
        self.dithered += is_dithered(settings)
        self.settings.add(settings_line(settings))
        if raw is not None:
            self.raw += int(raw)
        if mse is not None:
            self.squared += mse * height * width
            self.squared_pixels += height * width
        ciede, pixels = _metric(attrs, "ciede2000_mean"), _metric(attrs, "ciede2000_pixels")
        if ciede is not None and pixels is not None:
            self.ciede += ciede * pixels
            self.ciede_pixels += int(pixels)
        source = _metric(attrs, "source_bytes")
        if source is not None:
            self.source += int(source)
            self.source_stored += stored

    def row(self, listed: int) -> str:
        """The total row: what the images shown add up to."""
        quality = ""
        if self.squared_pixels:
            value = psnr(self.squared / self.squared_pixels)
            quality = "lossless" if value is None else f"{value:.2f}"
        values = {
            "image": f"total: {self.images} of {listed} {'image' if listed == 1 else 'images'}",
            "PSNR dB": quality,
            "dE00": f"{self.ciede / self.ciede_pixels:.2f}" if self.ciede_pixels else "",
            "stored": human_bytes(self.stored) if self.images else "",
            "vs raw": f"{self.raw / self.stored:.1f}x" if self.raw and self.stored else "",
            "vs source": f"{self.source / self.source_stored:.2f}x" if self.source_stored else "",
        }
        cells = [values.get(column, "") for column in HEADER]
        return f'<tr class="total">{_cells(cells)}</tr>'


def _head(store: Location, version: Any, rows: list[str], totals: _Totals) -> str:
    """The page up to the image sections: title, store, summary table."""
    from pipeline import __version__

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    count = f"{len(rows)} {'image' if len(rows) == 1 else 'images'}"
    left = len(rows) - totals.images
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Compression report: {html.escape(store.url)}</title>\n"
        f"<style>\n{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>Compression report: {html.escape(store.url)}</h1>\n"
        f"<p>Store format version {html.escape(str(version))}, {count}"
        + (f', <span class="problem">{left} left out</span>' if left else "")
        + (f', <span class="mark">{totals.dithered} dithered</span>' if totals.dithered else "")
        + f". Written {when} by pipeline {html.escape(__version__)}.</p>\n"
        + _shared_settings(totals.settings)
        + f'<table class="summary">\n<tr>{_cells(SUMMARY_HEADER, "th")}</tr>\n'
        + "\n".join(rows)
        + f"\n{totals.row(len(rows))}\n</table>\n"
        "<p>PSNR over every RGB value; dE00: mean CIEDE2000 colour difference; ratios: bytes of "
        "raw pixels (3 per pixel, 4 with transparency), or of the source file, over the bytes "
        "stored (palette and labels, compressed). Totals are over the images shown; their PSNR "
        "is that of their mean squared error, weighted by pixels.</p>\n"
    )


def _shared_settings(lines: set[str]) -> str:
    """The overview's paragraph on the settings of the images shown."""
    if not lines:
        return ""
    if len(lines) > 1:
        return "<p>Settings differ between the images: each image's section says its own.</p>\n"
    return f"<p>Settings of the images shown: {html.escape(next(iter(lines)))}.</p>\n"


def _figure(uri: str, size: tuple[int, int], caption: str, crop: bool = False) -> str:
    alt = html.escape(caption, quote=True)
    kind = ' class="crop"' if crop else ""
    return (
        f'<figure><img{kind} src="{uri}" width="{size[0]}" height="{size[1]}" alt="{alt}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _swatches(palette: NDArray[np.uint8], counts: NDArray[np.int64]) -> str:
    """The palette as colour swatches, most used first (at most SWATCHES of them)."""
    order = np.argsort(-counts, kind="stable")
    total = max(int(counts.sum()), 1)
    spans = []
    for index in order[:SWATCHES]:
        colour = "#" + "".join(f"{int(c):02x}" for c in palette[index])  # #rrggbb or #rrggbbaa
        share = 100 * int(counts[index]) / total
        spans.append(
            f'<span style="background:{colour}" title="{colour}: {share:.2f}% of pixels"></span>'
        )
    more = len(order) - SWATCHES
    rest = ""
    if more > 0:
        share = 100 * int(counts[order[SWATCHES:]].sum()) / total
        rest = f"<p>... and {more:,} more colours ({share:.1f}% of pixels), not shown.</p>"
    shown = min(len(order), SWATCHES)
    return (
        f"<p>Palette: {len(order):,} colours"
        + (f", the {shown} most used shown" if more > 0 else "")
        + ", most used first (hover for the share of pixels).</p>"
        f'<div class="swatches">{"".join(spans)}</div>{rest}'
    )


def _details(image: StoredImage) -> str:
    """The image's metrics and sizes as a two-column table."""
    attrs = image.attrs
    metrics = attrs["metrics"]
    source = attrs["source"]
    quality = _metric(attrs, "psnr_db")
    ciede = _metric(attrs, "ciede2000_mean")
    pixels = _metric(attrs, "ciede2000_pixels")
    raw, source_bytes = _metric(attrs, "raw_bytes"), _metric(attrs, "source_bytes")
    rows = [
        ("size", f"{_size(attrs)} pixels"),
        ("colours", f"{attrs['colors']:,} stored, {attrs['colors_requested']:,} asked for"),
        ("settings", settings_line(image_settings(attrs))),
        ("labels", f"{image.labels.dtype}, chunks of {TIMES.join(map(str, image.labels.chunks))}"),
        ("PSNR", "lossless" if quality is None else f"{quality:.2f} dB"),
        ("MSE", _shown(_metric(attrs, "mse"), "{:.3f}".format)),
        (
            "mean CIEDE2000",
            _shown(ciede, "{:.2f}".format)
            + ("" if pixels is None or ciede is None else f" over {int(pixels):,} pixels"),
        ),
        ("stored", f"{human_bytes(metrics['stored_bytes'])} ({metrics['stored_bytes']:,} bytes)"),
        ("raw pixels", _shown(raw, lambda n: f"{human_bytes(n)} ({metrics['ratio']:.1f}x)")),
        (
            "source file",
            _shown(
                source_bytes,
                lambda n: (
                    human_bytes(n) + _shown(_metric(attrs, "ratio_source"), " ({:.1f}x)".format)
                ),
            ),
        ),
        ("source", source["path"]),
        ("conversion", str(source.get("conversion", ""))),
        ("completed", str(attrs.get("completed", ""))),
    ]
    body = "".join(
        f"<tr><th>{label}</th><td>{html.escape(value)}</td></tr>" for label, value in rows
    )
    return f'<table class="details">{body}</table>'


def _section(image: StoredImage, anchor: str) -> tuple[str, str | None]:
    """One image's section of the page, and why its original is not shown (None if it is).

    Raises
    ------
    Damaged
        When a chunk of the image cannot be read.
    """
    pictures = _pictures(image)
    attrs = image.attrs
    fy, fx = pictures.factors
    scale = (
        "1:1, the whole image" if (fy, fx) == (1, 1) else f"block means of {fy}{TIMES}{fx} pixels"
    )
    thumbnails = [_figure(pictures.thumbnail, pictures.thumbnail_size, f"rebuilt, {scale}")]
    if pictures.original_thumbnail is not None:
        caption = f"original, {scale}"
        thumbnails.insert(0, _figure(pictures.original_thumbnail, pictures.thumbnail_size, caption))
    parts = [
        f'<section id="{anchor}">\n<h2>{html.escape(image.name)}{_dither_mark(attrs)}</h2>\n',
        _details(image),
        _swatches(image.palette, pictures.counts),
    ]
    if pictures.note is not None:
        parts.append(f'<p class="note">{html.escape(pictures.note)}</p>')
    parts.append(f'<div class="pair">{"".join(thumbnails)}</div>')
    if pictures.crop is not None:
        top, left, height, width = pictures.crop_box
        region = f"x {left:,}-{left + width:,}, y {top:,}-{top + height:,}"
        where = "where they differ most" if pictures.worst else "the centre"
        plural = "s" if pictures.original_crop is not None else ""
        parts.append(f"<p>1:1 crop{plural} of {region}, {where}:</p>")
        crops = [_figure(pictures.crop, (width, height), "rebuilt, 1:1", crop=True)]
        if pictures.original_crop is not None:
            crops.insert(0, _figure(pictures.original_crop, (width, height), "original, 1:1", True))
        parts.append(f'<div class="pair">{"".join(crops)}</div>')
    parts.append("\n</section>\n")
    return "".join(parts), pictures.note


def _write_page(out: str, head: str, sections: IO[str], *, overwrite: bool) -> None:
    """Write ``head``, the sections and the page's end to a temporary, then rename it ``out``."""
    try:
        temp = temporary_beside(out, "tmp", make=True, folder=False)
        try:
            with open(temp, "w", encoding="utf-8") as file:
                file.write(head)
                sections.seek(0)
                shutil.copyfileobj(sections, file)
                file.write("</body>\n</html>\n")
                file.flush()
                os.fsync(file.fileno())
            publish(temp, out, folder=False, overwrite=overwrite)
        except BaseException:
            remove_output(temp)
            raise
    except TargetExists:
        raise UsageError(exists_message(out)) from None
    except OSError as exc:
        raise PipelineError(f"{out}: cannot be written: {os_reason(exc)}") from None


def drop_remote_icons(path: str) -> None:
    """Remove ``<link>`` tags of icons on the web from the saved HTML page ``path``.

    Dask's performance report, saved with its JavaScript inline, still links a favicon on
    docs.dask.org; without it the page asks nothing of the network.
    """
    with open(path, encoding="utf-8") as file:
        text = file.read()

    def keep(tag: re.Match[str]) -> str:
        remote = re.search(r"""href=["']?(https?:)?//""", tag[0])
        return "" if remote and "icon" in tag[0] else tag[0]

    cleaned = re.sub(r"<link\b[^>]*>", keep, text)
    if cleaned != text:
        with open(path, "w", encoding="utf-8") as file:
            file.write(cleaned)
