"""Write rebuilt images as files, never destroying what is there.

Each complete image of a store becomes a file (or a Zarr array) in an output folder, written
under a hidden temporary name and renamed into place once complete. Existing outputs are kept
unless ``overwrite``; an image whose output would land in its source's folder is left out unless
``into_sources``; an incomplete or damaged image is left out with its reason, and the others
are still written. PNG, GIF, WebP and JPEG XL files are made from the palette and labels
themselves, and decode to exactly ``palette[labels]``: indexed files of the palette's colours
where the format allows (PNG and GIF of at most 256 colours), lossless WebP and JPEG XL.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import PipelineError, UsageError, os_reason, unwritable
from pipeline.job.graph import rebuild
from pipeline.outputs.png import write_indexed_png
from pipeline.paths import create_unique, is_url
from pipeline.quantize.order import adjacent_pairs, cooccurrence_order, new_labels
from pipeline.store.location import Location
from pipeline.store.read import (
    NO_SUCH_IMAGE,
    CheckedLabels,
    Damaged,
    Incomplete,
    check_name,
    one_line,
    open_image,
    read_attrs,
    scan,
)
from pipeline.store.write import StoredImage, open_root

if TYPE_CHECKING:
    import dask.array as da
    import PIL.Image


def output_names(names: list[str], extension: str) -> dict[str, str]:
    """File names for rebuilt images: the name's stem plus ``extension``, unless stems clash.

    Images whose stems clash (ignoring case, as case-insensitive file systems do) get their
    whole name plus ``extension``; names that would still clash get ``~`` and 8 hex digits of
    the SHA-1 of the image name before ``extension``. Every image gets its own file name.
    """
    stems = {n: Path(n).stem for n in names}
    counts = Counter(stem.casefold() for stem in stems.values())
    chosen = {n: (s if counts[s.casefold()] == 1 else n) + extension for n, s in stems.items()}
    taken = Counter(file_name.casefold() for file_name in chosen.values())
    for name, file_name in chosen.items():
        if taken[file_name.casefold()] > 1:
            chosen[name] = f"{name}~{hashlib.sha1(name.encode()).hexdigest()[:8]}{extension}"
    return chosen


#: Extensions written chunk by chunk, for images too large to rebuild in one piece.
STREAMED_EXTENSIONS = (".tif", ".tiff", ".zarr")


def write_tiled_tiff(pixels: da.Array, target: str | BinaryIO, tile: int = 256) -> None:
    """Write a lazy (H, W, 3) uint8 image as a tiled TIFF, one row of chunks at a time.

    ``target`` is a path or a binary file open for writing. Only one row of chunks (image
    width x chunk height) is in memory at once. An (H, W, 4) image is RGBA (unassociated alpha).
    """
    import tifffile

    tile = max(16, tile // 16 * 16)  # TIFF tiles are multiples of 16
    height, width, channels = pixels.shape
    rows = pixels.rechunk({0: tile, 1: -1, 2: -1})

    def tiles() -> Iterator[NDArray[np.uint8]]:
        for block in rows.to_delayed().ravel():
            strip = block.compute()
            for x in range(0, width, tile):
                part = np.zeros((tile, tile, channels), dtype=np.uint8)
                piece = strip[:, x : x + tile]
                part[: piece.shape[0], : piece.shape[1]] = piece
                yield part

    tifffile.imwrite(
        target,
        tiles(),
        shape=(height, width, channels),
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        extrasamples=(2,) if channels == 4 else None,
        compression="zlib",
        bigtiff=height * width * channels > 2**31,
    )


def write_zarr(pixels: da.Array, target: str) -> None:
    """Write a lazy (H, W, 3) or RGBA uint8 image as a Zarr array at ``target``, chunked like it.

    Chunks are computed and written by a few threads, a bounded number at a time. When one
    fails, the others in flight finish before the error is raised, so nothing writes into
    ``target`` after this returns or raises (a caller may then remove it).
    """
    import concurrent.futures

    import zarr

    rows, columns = pixels.chunks[0], pixels.chunks[1]
    array = zarr.create_array(
        target, shape=pixels.shape, chunks=(rows[0], columns[0], pixels.shape[2]), dtype=np.uint8
    )
    blocks = pixels.to_delayed()
    tops, lefts = np.cumsum((0, *rows)), np.cumsum((0, *columns))

    def put(i: int, j: int) -> None:
        region = (slice(tops[i], tops[i + 1]), slice(lefts[j], lefts[j + 1]))
        array[region] = blocks[i, j, 0].compute(scheduler="sync")

    threads = min(8, os.cpu_count() or 1)
    pool = concurrent.futures.ThreadPoolExecutor(threads)
    pending: set[concurrent.futures.Future[None]] = set()
    try:
        for i in range(len(rows)):
            for j in range(len(columns)):
                if len(pending) >= 2 * threads:
                    done, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in done:
                        future.result()
                pending.add(pool.submit(put, i, j))
        for future in concurrent.futures.as_completed(pending):
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


#: Formats written from the palette and labels themselves, losslessly, and their names.
PALETTE_FORMATS = {".png": "PNG", ".gif": "GIF", ".webp": "WebP", ".jxl": "JPEG XL"}

#: Formats whose encoder takes an effort: lowest, highest, default. JPEG XL: libjxl's effort;
#: WebP: libwebp's method. Measured on photo8 at k = 16-256 (benchmarks/formats.py): JPEG XL
#: effort 9 makes files 4-8% smaller than effort 7 for 3 times the time, and 10 another 3-4%
#: for 3 times again; WebP method 6 saves 3% over method 4 for 20 times the time and twice
#: the memory.
EFFORTS = {".jxl": (1, 10, 9), ".webp": (0, 6, 4)}

#: Most colours of an indexed (palette) PNG or GIF.
INDEXED_COLOURS = 256

#: Largest width and height a format holds (PNG's 2**31 - 1 is Pillow's to enforce, as ever).
MAX_SIDE = {".gif": 65_535, ".webp": 16_383}


class Labels(Protocol):
    """(H, W) integer labels that can be read a band of rows at a time (numpy, zarr, ...)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """(H, W)."""
        ...

    def __getitem__(self, key: Any, /) -> Any:
        """The labels of ``key``, a tuple of slices, as a numpy array."""
        ...


def format_problem(
    palette: NDArray[np.uint8],
    shape: tuple[int, ...],
    extension: str,
    icc: bytes | None = None,
) -> str | None:
    """Why an image cannot be written as ``extension`` without losing pixels, if it cannot.

    Parameters
    ----------
    palette : ndarray of uint8, shape (k, 3) or (k, 4)
        RGB colours, or RGBA colours (alpha 0 transparent to 255 opaque).
    shape : tuple of int
        The image's (H, W).
    extension : str
        ``.gif``, ``.webp``, ``.jxl``, ...: other formats have no limit checked here.
    icc : bytes, optional
        The ICC profile the colours are in (None: sRGB).

    Returns
    -------
    str or None
        One line saying what the format cannot hold (more pixels across than GIF or WebP
        allow; for GIF, more than 256 colours, or transparency other than one fully transparent
        colour; for JPEG XL, an ICC profile); None when the image can be written.
    """
    if extension == ".jxl" and icc is not None:
        return (
            "its colours are in the ICC profile of its source, which JPEG XL is written here "
            "without; --format png or webp keeps the profile"
        )
    height, width = shape
    side = MAX_SIDE.get(extension)
    if side is not None and max(height, width) > side:
        return (
            f"{PALETTE_FORMATS[extension]} holds at most {side:,} x {side:,} pixels and the image "
            f"is {width:,} x {height:,}; --format png or tif holds it"
        )
    if extension != ".gif":
        return None
    if len(palette) > INDEXED_COLOURS:
        return (
            f"GIF holds at most {INDEXED_COLOURS} colours and the image has {len(palette):,}; "
            "--format png or webp keeps them all"
        )
    alpha = _alpha(palette)
    if alpha is not None and (
        np.count_nonzero(alpha == 0) > 1 or np.any((alpha > 0) & (alpha < 255))
    ):
        return (
            "GIF holds one fully transparent colour at most and no partly transparent one, and "
            f"{np.count_nonzero(alpha < 255)} of the image's colours are transparent; "
            "--format png or webp keeps them"
        )
    return None


def write_palette_image(
    palette: NDArray[np.uint8],
    labels: Labels,
    file: BinaryIO,
    extension: str,
    *,
    rows: int = 1024,
    icc: bytes | None = None,
    effort: int | None = None,
) -> None:
    """Write the image ``palette[labels]`` as a PNG, GIF, WebP or JPEG XL file, losslessly.

    Decoding the file (to RGB, or RGBA for an RGBA palette) gives exactly ``palette[labels]``.
    PNG and GIF of at most 256 colours are indexed: the file holds the palette (only its k
    entries) and one index per pixel, made from the labels; the order of the entries in the
    file puts the transparent colours first (a short PNG ``tRNS`` chunk; GIF's transparent
    index 0). PNG is written by :mod:`pipeline.outputs.png` (1, 2, 4 or 8 bits per pixel as k
    allows, a row filter, libdeflate level 12), with its entries in the modified-Zeng order
    (:mod:`pipeline.quantize.order`: colours that touch side by side, so that the row filters
    predict), from ``rows`` rows of labels at a time, read twice (counting, then writing); GIF
    by Pillow, from every index in memory (1 byte per pixel).
    PNG of more colours is RGB (RGBA). WebP and JPEG XL are lossless (libwebp and libjxl index
    the colours on their own: the order of the palette does not reach them), keeping the colour
    of transparent pixels too; both need the RGB (RGBA) image in memory.

    Parameters
    ----------
    palette : ndarray of uint8, shape (k, 3) or (k, 4)
        RGB colours, or RGBA colours (alpha 0 transparent to 255 opaque).
    labels : numpy array, zarr array, ...
        (H, W) integer labels, each below k; read ``rows`` rows at a time.
    file : binary file
        Open for writing; written from its position, and left open.
    extension : str
        ``.png``, ``.gif``, ``.webp`` or ``.jxl``.
    rows : int
        Rows of labels read at once (a multiple of a zarr array's chunk height reads each chunk
        once).
    icc : bytes, optional
        The ICC profile the palette's colours are in (a palette kept in its source's profile):
        embedded in PNG and WebP files (GIF has no place for it; JPEG XL is refused).
    effort : int, optional
        For JPEG XL and WebP, the encoder's effort (:data:`EFFORTS`: range and default).

    Raises
    ------
    ValueError
        For a palette that is not (k, 3) or (k, 4) uint8, another extension, or an image the
        format cannot hold (:func:`format_problem` says why).
    IndexError
        When a label is not below k.
    UsageError
        For an ``effort`` the format does not take (:func:`check_effort`).
    """
    from PIL import Image

    if (
        palette.dtype != np.uint8
        or palette.ndim != 2
        or palette.shape[1] not in (3, 4)
        or not len(palette)
    ):
        raise ValueError(
            f"a palette is (k, 3) or (k, 4) uint8, not {palette.shape} {palette.dtype}"
        )
    if extension not in PALETTE_FORMATS:
        raise ValueError(f"{extension!r} is not one of {', '.join(PALETTE_FORMATS)}")
    problem = format_problem(palette, labels.shape, extension, icc)
    if problem is not None:
        raise ValueError(problem)
    effort = check_effort(extension, effort)
    alpha = _alpha(palette)
    colours = palette if alpha is not None else palette[:, :3]
    options: dict[str, Any]
    if extension == ".jxl":
        import imagecodecs

        pixels = _lookup(colours, labels, rows)
        file.write(imagecodecs.jpegxl_encode(pixels, lossless=True, effort=effort))
        return
    if extension == ".webp" or len(palette) > INDEXED_COLOURS:
        image = Image.fromarray(_lookup(colours, labels, rows))  # RGBA shared, RGB copied
        # RGB PNG keeps Pillow's defaults, as before: level 9 takes 5 times as long for 1-2%.
        options = (
            {"lossless": True, "quality": 100, "method": effort, "exact": True}
            if extension == ".webp"
            else {}
        )
        if icc is not None:
            options["icc_profile"] = icc
    else:
        if extension == ".png":
            # colours that touch side by side, so that the row filters predict indices well
            bands = (labels[top : top + rows, :] for top in range(0, labels.shape[0], rows))
            preferred = cooccurrence_order(adjacent_pairs(bands, len(palette)))
        else:  # LZW does not predict: any order compresses the same
            preferred = np.arange(len(palette))
        order, index = _file_order(alpha, preferred)
        if extension == ".png":
            opaque_from = None if alpha is None else np.count_nonzero(alpha < 255)
            write_indexed_png(
                file,
                palette[order, :3],
                None if alpha is None else alpha[order][:opaque_from],
                (labels.shape[0], labels.shape[1]),
                (index[labels[top : top + rows, :]] for top in range(0, labels.shape[0], rows)),
                icc,
            )
            return
        image, options = _gif(palette[order], alpha, _lookup(index, labels, rows))
    image.save(file, format=PALETTE_FORMATS[extension].upper(), **options)


def check_effort(extension: str, effort: int | None) -> int | None:
    """The encoder effort to write ``extension`` with: ``effort``, or the format's default.

    None for formats without one (:data:`EFFORTS`).

    Raises
    ------
    UsageError
        For an effort outside the format's range, or given for a format without one.
    """
    if extension not in EFFORTS:
        if effort is not None:
            known = " and ".join(f[1:] for f in EFFORTS)
            raise UsageError(f"--effort {effort}: only {known} take an effort, not {extension[1:]}")
        return None
    low, high, default = EFFORTS[extension]
    if effort is None:
        return default
    if not low <= effort <= high:
        raise UsageError(f"--effort {effort}: {PALETTE_FORMATS[extension]} takes {low} to {high}")
    return effort


def _alpha(palette: NDArray[np.uint8]) -> NDArray[np.uint8] | None:
    """The alpha of each palette entry; None when every entry is opaque."""
    if palette.shape[1] == 3 or np.all(palette[:, 3] == 255):
        return None
    return palette[:, 3]


def _lookup(table: NDArray[np.uint8], labels: Labels, rows: int) -> NDArray[np.uint8]:
    """``table[labels]``, reading ``rows`` rows of labels at a time."""
    height, width = labels.shape
    out = np.empty((height, width, *table.shape[1:]), dtype=np.uint8)
    for top in range(0, height, rows):
        out[top : top + rows] = table[labels[top : top + rows, :]]
    return out


def _file_order(
    alpha: NDArray[np.uint8] | None, preferred: NDArray[np.intp]
) -> tuple[NDArray[np.intp], NDArray[np.uint8]]:
    """The order of the palette in an indexed file, and the file index of each label.

    Transparent entries first (PNG's ``tRNS`` then covers only them; GIF's transparent
    index is 0), each group in the ``preferred`` order (a permutation of the labels).
    """
    k = len(preferred)
    opaque = np.ones(k, dtype=bool) if alpha is None else alpha == 255
    rank = new_labels(preferred, np.intp)
    order = np.lexsort((rank, opaque))
    index = np.empty(k, dtype=np.uint8)
    index[order] = np.arange(k)
    return order, index


def _gif(
    palette: NDArray[np.uint8], alpha: NDArray[np.uint8] | None, indices: NDArray[np.uint8]
) -> tuple[PIL.Image.Image, dict[str, Any]]:
    """A Pillow "P" image sharing ``indices``, and its GIF save options."""
    from PIL import Image

    height, width = indices.shape
    image = Image.frombuffer("P", (width, height), indices, "raw", "P", 0, 1)
    image.putpalette(palette[:, :3].tobytes())
    # Pillow's optimize would copy the indices to drop unused entries
    return image, {"optimize": False} | ({} if alpha is None else {"transparency": 0})


@dataclass(frozen=True)
class Outcome:
    """What became of one image of a :func:`write_each` call.

    Attributes
    ----------
    name : str
        The image's name in the store.
    path : str or None
        The file (or, for ``.zarr``, folder) written; None when the image was left out.
    problem : str or None
        Why it was left out, in one line without the image's name.
    kind : str
        ``"written"``; or why it was left out: ``"incomplete"`` (not marked complete),
        ``"damaged"`` (metadata, a chunk or an array unreadable or missing), ``"absent"`` (no
        such image), ``"kept"`` (an existing file or folder kept, or its source's folder not
        written into), ``"failed"`` (the output could not be written, or its format cannot
        hold the image: :func:`format_problem`).
    """

    name: str
    path: str | None = None
    problem: str | None = None
    kind: str = "written"


@dataclass
class Outputs:
    """What :func:`write_images` did.

    Attributes
    ----------
    written : dict
        Image name -> file (or ``.zarr`` folder) written.
    left_out : dict
        Image name -> why it was not written (one line; see :class:`Outcome`).
    """

    written: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        """Record one image's outcome."""
        if outcome.path is not None:
            self.written[outcome.name] = outcome.path
        else:
            self.left_out[outcome.name] = str(outcome.problem)


def check_extension(extension: str) -> str:
    """``extension`` as written: lowercase, with its dot (``.png``, ``.tif``, ``.zarr``, ...).

    ``png`` (no dot) and ``.PNG`` are accepted too.

    Raises
    ------
    UsageError
        For anything but a dot and letters or digits that imageio knows, or ``.zarr``.
    """
    from imageio.config import known_extensions

    suffix = extension.removeprefix(".").lower()
    if not (
        suffix.isascii()
        and suffix.isalnum()
        and (suffix == "zarr" or f".{suffix}" in (*known_extensions, *PALETTE_FORMATS))
    ):
        raise UsageError(f"{extension!r}: not an image format (png, tif, zarr, webp, jpg, ...)")
    return f".{suffix}"


def write_each(
    store: Location,
    out_dir: str,
    names: list[str] | None = None,
    extension: str = ".png",
    *,
    overwrite: bool = False,
    into_sources: bool = False,
    effort: int | None = None,
) -> Iterator[Outcome]:
    """Write rebuilt images as :func:`write_images` does, yielding each image's outcome.

    The store is listed once; then each image is read and written on its own, so one image
    incomplete (status not ``"complete"``), damaged (metadata unreadable, chunks missing per
    the listing, a chunk failing its checksum) or refused does not stop the others.

    Each output is named by :func:`output_names`, directly inside ``out_dir``. It is written
    under a hidden temporary name in ``out_dir`` (``.china.png.tmp-1a2b3c4d``) and renamed to
    its name once complete; a failure removes the temporary, so no file ever has its final name
    half written. An existing file (or folder) of that name is kept unless ``overwrite``; with
    it, it is replaced once the new one is complete. An image whose recorded source
    (``source.path``, compared as real paths; sources behind URLs never match) lies in
    ``out_dir`` is left out unless ``into_sources``. ``effort`` is the JPEG XL or WebP
    encoder's (:func:`check_effort`).
    """
    extension = check_extension(extension)
    effort = check_effort(extension, effort)
    chosen = None if not names else list(dict.fromkeys(check_name(n) for n in names))
    if is_url(out_dir):
        raise UsageError(f"{out_dir}: the output folder must be a local folder")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"{out_dir}: not a folder")
    open_root(store)
    listed = [(entry.name, entry.problem) for entry in scan(store, chosen)]
    files = output_names([name for name, _ in listed], extension)
    folder = os.path.realpath(out_dir)
    for done, (name, problem) in enumerate(listed):
        try:
            yield _write_one(
                store,
                name,
                problem,
                (out_dir, files[name], folder),
                extension,
                overwrite=overwrite,
                into_sources=into_sources,
                effort=effort,
            )
        except _Unwritable as exc:
            left = len(listed) - done
            raise PipelineError(
                f"{out_dir}: cannot be written: {exc}; stopped, {left:,} "
                f"{'image' if left == 1 else 'images'} not written"
            ) from None


class _Unwritable(Exception):
    """The output folder cannot be written at all (full, read-only, refused)."""


class TargetExists(Exception):
    """The target appeared while its image was being written."""


def _write_one(
    store: Location,
    name: str,
    problem: str | None,
    where: tuple[str, str, str],
    extension: str,
    *,
    overwrite: bool,
    into_sources: bool,
    effort: int | None,
) -> Outcome:
    """Write image ``name``, or say why not.

    ``where`` is the output folder as given, the image's file name, and the folder's real path.
    """
    out_dir, file_name, folder = where
    target = os.path.join(out_dir, file_name)
    if problem is not None:
        return Outcome(name, None, problem, "absent" if problem == NO_SUCH_IMAGE else "damaged")
    try:
        image = open_image(store, name, read_attrs(store, name))
    except Incomplete as exc:
        return Outcome(name, None, str(exc).removeprefix(f"{name}: "), "incomplete")
    except Damaged as exc:
        return Outcome(name, None, exc.problem, "damaged")
    unsafe = _unsafe(file_name)
    if unsafe:
        return Outcome(name, None, f"not written: {unsafe}", "failed")
    source = image.attrs["source"]["path"]
    if not into_sources and folder in _source_folders(source):
        return Outcome(
            name,
            None,
            f"not written: {out_dir} is the folder of its source "
            f"{source}; choose another --out, or give --allow-source-folder to write there",
            "kept",
        )
    refused = format_problem(
        image.palette, image.labels.shape, extension, kept_profile(image.attrs)
    )
    if refused:
        return Outcome(name, None, f"not written: {refused}", "failed")
    kept = kept_reason(target, extension == ".zarr", overwrite)
    if kept:
        return Outcome(name, None, f"not written: {kept}", "kept")
    try:
        _write_atomically(image, target, extension, overwrite=overwrite, effort=effort)
    except Damaged as exc:
        return Outcome(name, None, exc.problem, "damaged")
    except TargetExists:
        return Outcome(name, None, f"not written: {exists_message(target)}", "kept")
    except OSError as exc:
        reason = unwritable(exc)
        if reason is not None:
            raise _Unwritable(reason) from None
        return Outcome(name, None, f"cannot write {target}: {os_reason(exc)}", "failed")
    except Exception as exc:
        return Outcome(name, None, f"cannot write {target}: {one_line(exc)}", "failed")
    return Outcome(name, target)


def _unsafe(file_name: str) -> str | None:
    """Why ``file_name`` cannot be written directly inside the output folder, if it cannot."""
    separators = {"/", "\\", "\0", os.sep, os.altsep} - {None}
    if file_name in ("", ".", "..") or file_name.startswith(".") or separators & set(file_name):
        return f"{file_name!r} is not a plain file name"
    return None


def _source_folders(source: str) -> set[str]:
    """Real local folders holding a recorded source (its own and its link target's)."""
    if source.startswith("file://"):
        source = source.removeprefix("file://")
    elif is_url(source):
        return set()
    if not os.path.isabs(source):  # "<array>": compressed from an in-memory array
        return set()
    return {os.path.realpath(os.path.dirname(source)), os.path.dirname(os.path.realpath(source))}


def _is_folder(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def exists_message(target: str) -> str:
    """The line saying that ``target`` exists and is kept."""
    return f"{target} exists; --overwrite replaces it"


def kept_reason(target: str, folder: bool, overwrite: bool) -> str | None:
    """Why an existing ``target`` stays as it is (None: absent, or to be replaced)."""
    if not os.path.lexists(target):
        return None
    if not overwrite:
        return exists_message(target)
    if folder and not _is_folder(target):
        return f"{target} exists and is not a folder; not replaced"
    if not folder and _is_folder(target):
        return f"{target} exists and is a folder; not replaced"
    return None


def temporary_beside(target: str, tag: str, make: bool, folder: bool) -> str:
    """A new hidden name beside ``target`` (``.NAME.tag-XXXXXXXX``), created when ``make``.

    Created with the default permissions (umask applied, :func:`create_unique`), unlike
    :mod:`tempfile`'s private ones, since it becomes the output.
    """
    parent, base = os.path.split(target)
    prefix = f".{base}.{tag}-"
    if make:
        return create_unique(parent, prefix, folder=folder)
    while True:
        path = os.path.join(parent, f"{prefix}{os.urandom(4).hex()}")
        if not os.path.lexists(path):
            return path


def remove_output(path: str) -> None:
    """Remove the file or folder ``path`` (a temporary output), if it is there."""
    with contextlib.suppress(FileNotFoundError):
        if _is_folder(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _write_atomically(
    image: StoredImage, target: str, extension: str, *, overwrite: bool, effort: int | None
) -> None:
    """Write ``image`` rebuilt to a temporary beside ``target``, then rename it to ``target``."""
    folder = extension == ".zarr"
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    temp = temporary_beside(target, "tmp", make=True, folder=folder)
    try:
        _write_pixels(image, temp, extension, effort)
        publish(temp, target, folder=folder, overwrite=overwrite)
    except BaseException:
        remove_output(temp)
        raise


def _write_pixels(image: StoredImage, path: str, extension: str, effort: int | None) -> None:
    """Write ``image`` rebuilt to ``path`` (an existing empty file, or folder for ``.zarr``)."""
    pixels = rebuild(image)
    if extension == ".zarr":
        write_zarr(pixels, path)
        return
    # Files are written through a handle of our own, flushed to disk before being renamed; an
    # imageio format is encoded in memory first, so that a write error is raised here rather
    # than by the imageio plugin's finalizer.
    with open(path, "wb") as file:
        if extension in STREAMED_EXTENSIONS:
            write_tiled_tiff(pixels, file, tile=min(image.labels.chunks))
        elif extension in PALETTE_FORMATS:
            labels = CheckedLabels(image.name, image.labels)
            write_palette_image(
                image.palette,
                labels,
                file,
                extension,
                rows=image.labels.chunks[0],
                icc=kept_profile(image.attrs),
                effort=effort,
            )
        else:
            import imageio.v3 as iio

            file.write(iio.imwrite("<bytes>", pixels.compute(), extension=extension))
        file.flush()
        os.fsync(file.fileno())


def kept_profile(attrs: dict[str, Any]) -> bytes | None:
    """The ICC profile a stored image's colours are in, when kept from its source, else None.

    None means sRGB: the colours were converted to it (or the source had no profile).
    """
    profile = attrs.get("source", {}).get("profile") or {}
    icc = profile.get("icc") if profile.get("handling") == "kept" else None
    return base64.b64decode(icc) if isinstance(icc, str) else None


def publish(temp: str, target: str, *, folder: bool, overwrite: bool) -> None:
    """Rename the complete ``temp`` to ``target``; replace an existing one only if ``overwrite``.

    Raises
    ------
    TargetExists
        When ``target`` appeared meanwhile and ``overwrite`` is off.
    """
    if not overwrite:
        if not folder:
            try:
                os.link(temp, target)  # fails if target exists: nothing is ever replaced
            except FileExistsError:
                raise TargetExists from None
            except OSError:  # a file system without hard links
                if os.path.lexists(target):
                    raise TargetExists from None
                os.rename(temp, target)
            else:
                os.unlink(temp)
            return
        if os.path.lexists(target):
            raise TargetExists
        try:
            os.rename(temp, target)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise TargetExists from None
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise TargetExists from None
            raise
        return
    if not folder or not os.path.lexists(target):
        os.replace(temp, target)
        return
    aside = temporary_beside(target, "old", make=False, folder=True)
    os.rename(target, aside)
    try:
        os.rename(temp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    remove_output(aside)
