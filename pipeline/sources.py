"""Find input images, open them lazily and normalise them to (H, W, 3) uint8 Dask arrays.

Normalisation (recorded in each image's ``conversion`` attribute):

* RGB uint8: used as it is.
* Grayscale (H, W) or (H, W, 1): the gray value is copied to R, G and B.
* Gray + alpha, RGBA: the alpha channel is dropped; colour channels are kept as stored.
* 16-bit (uint16): scaled to 8 bits with rounding, ``(v * 255 + 32767) // 65535``.
* Palette ("P" mode) images: expanded to RGB by the reader (imageio's Pillow plugin).
* CMYK (print JPEGs and TIFFs): converted to RGB by Pillow, not taken for RGB + alpha.
* Boolean (1-bit) images: False -> 0, True -> 255, then as grayscale.
* Multi-frame files (animated GIF, multi-page TIFF): the first frame only.

Other pixel types (float, signed, 32-bit) and arrays that are not 2-D images are rejected with an
:class:`~pipeline.errors.InputError` naming the file.

JPEG, PNG and most formats decode whole: the file is read by one task, then split into chunks.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask import delayed
from numpy.typing import NDArray

from pipeline.errors import InputError, UsageError
from pipeline.paths import filesystem, is_url, location, read_bytes

#: Pillow's decompression-bomb limit (it refuses images of more pixels): the default largest
#: image decoded whole.
PILLOW_LIMIT = 178_956_970

#: File extensions picked up when a folder is given as input.
IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
)


@dataclass(frozen=True)
class Source:
    """One input image, opened lazily.

    Attributes
    ----------
    name : str
        Group name of the image in the output store (unique within a job).
    path : str
        Where it was read from (a file path, or ``"<array>"``).
    image : dask.array.Array
        (H, W, 3) uint8, chunked ``(chunk, chunk, 3)``.
    shape : tuple of int
        Shape of the image as stored in the file.
    dtype : str
        Pixel type as stored in the file.
    conversion : str
        What normalisation did (see module docstring).
    streamed : bool
        Whether chunks can be read again cheaply, one by one (tiled TIFF, Zarr, dask arrays):
        the job then reads them once to fit and again to label, instead of holding the image.
    whole : dask.array.Array or None
        For a file decoded whole, the decoded image as one chunk, before it is split into
        ``image``'s chunks: the sample and the colour counts read it directly (one task each,
        where it was decoded) instead of one task per chunk.
    """

    name: str
    path: str
    image: da.Array
    shape: tuple[int, ...]
    dtype: str
    conversion: str
    streamed: bool = False
    whole: da.Array | None = None


def discover(inputs: Sequence[str], exclude: str | None = None) -> list[str]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of files.

    Folders contribute the image files (by extension, see ``IMAGE_EXTENSIONS``) and Zarr arrays
    directly inside them; a Zarr array's own folder is an input, not a folder to search. A path
    that does not exist and matches no glob is still returned, so that opening it reports it as
    missing alongside the other images. Paths inside ``exclude`` (the job's own output store)
    are left out. URLs (``s3://...``) are listed with fsspec.
    """
    from pipeline.tiled import is_zarr_array

    found: list[str] = []
    for item in inputs:
        if is_url(item):
            found.extend(_discover_url(item))
        elif os.path.isdir(item) and not is_zarr_array(item):
            found.extend(
                str(p)
                for p in sorted(Path(item).iterdir())
                if (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS) or is_zarr_array(str(p))
            )
        elif glob.has_magic(item):
            found.extend(sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p)))
        else:
            found.append(item)
    if exclude is not None:
        found = [p for p in found if not _inside(p, exclude)]
    return list(dict.fromkeys(found))


def _inside(path: str, folder: str) -> bool:
    if is_url(path) or is_url(folder):
        return path == folder or path.startswith(folder.rstrip("/") + "/")
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _discover_url(item: str) -> list[str]:
    """:func:`discover` for one URL: a folder's image files and Zarr arrays, a glob, a file."""
    from pipeline.tiled import is_zarr_array

    fs, inner = filesystem(item)
    if glob.has_magic(inner):
        return [fs.unstrip_protocol(p) for p in sorted(fs.glob(inner)) if fs.isfile(p)]
    if not fs.isdir(inner) or is_zarr_array(item):
        return [item]
    found = []
    for entry in sorted(fs.ls(inner, detail=True), key=lambda e: e["name"]):
        url = fs.unstrip_protocol(entry["name"])
        if entry["type"] == "file":
            if Path(entry["name"]).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(url)
        elif is_zarr_array(url):
            found.append(url)
    return found


def unique_names(paths: Sequence[str]) -> list[str]:
    """Group names for ``paths``: the file name, prefixed by parent folders where names clash."""
    parts = [Path(p).parts for p in paths]
    depth = [1] * len(paths)
    while True:
        names = ["__".join(pp[-d:]) for pp, d in zip(parts, depth, strict=True)]
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            return names
        grown = False
        for i, n in enumerate(names):
            if n in clash and depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:
            raise UsageError(f"inputs give the same name twice: {sorted(clash)}")


def conversion_for(shape: tuple[int, ...], dtype: np.dtype) -> str:
    """How an image of this shape and pixel type becomes RGB uint8; raises ValueError if it cannot.

    Returns one of the ``conversion`` values described in the module docstring, joined by ``+``.
    """
    steps = []
    if dtype == np.uint16:
        steps.append("16-bit scaled to 8-bit")
    elif dtype == np.bool_:
        steps.append("1-bit to 0/255")
    elif dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {dtype} (expected uint8, uint16 or bool)")
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        steps.append("gray to RGB")
    elif len(shape) == 3 and shape[2] == 2:
        steps.extend(["alpha dropped", "gray to RGB"])
    elif len(shape) == 3 and shape[2] == 4:
        steps.append("alpha dropped")
    elif not (len(shape) == 3 and shape[2] == 3):
        raise ValueError(f"not a 2-D image: array of shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"empty image of shape {shape}")
    return "+".join(steps) or "none"


def to_rgb8(block: NDArray[np.generic]) -> NDArray[np.uint8]:
    """Normalise an image block of any supported shape and type to (h, w, 3) uint8."""
    if block.dtype == np.uint16:
        block = ((block.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif block.dtype == np.bool_:
        block = block.astype(np.uint8) * np.uint8(255)
    if block.ndim == 2:
        block = block[:, :, None]
    if block.shape[2] in (1, 2):
        block = np.repeat(block[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(block[:, :, :3], dtype=np.uint8)


@contextmanager
def _no_pillow_limit() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit: :func:`open_file` applies ``max_pixels`` itself."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def read_file(path: str) -> NDArray[np.uint8]:
    """Decode the first frame of an image file and normalise it to (H, W, 3) uint8.

    Raises
    ------
    InputError
        If the file cannot be decoded or its pixels cannot be normalised.
    """
    import imageio.v3 as iio

    try:
        # a URL is read once; a local file only if the fast decoders take it
        remote = is_url(path)
        data = read_bytes(path) if remote or _fast_format(read_bytes(path, 8)) else None
        raw = None if data is None else _decode_fast(data)
        if raw is None:
            resource = data if remote else path
            hint = Path(path).suffix.lower() or None
            with _no_pillow_limit():
                raw = iio.imread(resource, index=0, extension=hint)
            if _is_cmyk(resource, raw.shape):
                raw = _cmyk_to_rgb(raw)
    except Exception as exc:
        raise InputError(path, f"cannot decode image: {_one_line(exc)}") from None
    try:
        conversion_for(raw.shape, raw.dtype)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    return to_rgb8(raw)


def _is_cmyk(resource: str | bytes, shape: tuple[int, ...]) -> bool:
    """Whether the four channels of ``shape`` are CMYK (as Pillow reads the file), not RGBA."""
    if len(shape) != 3 or shape[2] != 4:
        return False
    import imageio.v3 as iio

    try:
        return iio.immeta(resource, index=0).get("mode") == "CMYK"
    except Exception:
        return False


def _cmyk_to_rgb(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Decoded CMYK pixels converted to RGB by Pillow (no second decode of the file)."""
    from PIL import Image

    height, width = pixels.shape[:2]
    cmyk = Image.frombytes("CMYK", (width, height), np.ascontiguousarray(pixels).tobytes())
    return np.asarray(cmyk.convert("RGB"))


#: PNG file signature, and the IHDR fields (bit depth 8, colour type 2) of plain 8-bit RGB.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_RGB8 = b"\x08\x02"


def _fast_format(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a JPEG or PNG (see :func:`_decode_fast`)."""
    return head.startswith((b"\xff\xd8\xff", PNG_SIGNATURE))


def _decode_fast(data: bytes) -> NDArray[np.uint8] | None:
    """Decode the commonest files with imagecodecs, or return None to let imageio decode them.

    imageio's Pillow plugin converts and copies after decoding; imagecodecs hands over the
    decoded buffer. Both use the same libraries with the same settings, so the pixels are the
    same (tested on every bundled photo):

    * JPEG through libjpeg-turbo, about three times faster. Only grayscale and RGB results are
      taken; anything else (CMYK, a damaged file) goes to imageio, which then converts it or
      reports the problem; so does a file without its end-of-image marker, which libjpeg would
      pad silently where Pillow reports it as truncated.
    * PNG through libpng, about twice as fast, only for plain 8-bit RGB (no transparency chunk,
      not animated): other PNG flavours follow Pillow's conversions.
    """
    import imagecodecs

    try:
        if data.startswith(b"\xff\xd8\xff"):  # JPEG start-of-image marker
            if not data.endswith(b"\xff\xd9"):  # truncated (or trailing bytes): imageio decides
                return None
            pixels = imagecodecs.jpeg8_decode(data)
            return pixels if pixels.ndim == 2 or pixels.shape[2] == 3 else None
        if data.startswith(PNG_SIGNATURE) and data[24:26] == PNG_RGB8:
            header = data[: data.find(b"IDAT")]
            if b"tRNS" in header or b"acTL" in header:
                return None
            pixels = imagecodecs.png_decode(data)
            return pixels if pixels.ndim == 3 and pixels.shape[2] == 3 else None
    except Exception:
        return None
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith("Could not find a backend"):
        return "unknown or unsupported format"
    return text if len(text) <= 200 else text[:197] + "..."


def open_file(path: str, name: str, chunk: int, max_pixels: int = PILLOW_LIMIT) -> Source:
    """Open an input lazily: read its header now, its pixels when the graph runs.

    Tiled TIFF files and Zarr arrays are read chunk by chunk (:mod:`pipeline.tiled`); every
    other format is decoded whole by one task, then split into chunks, and is refused above
    ``max_pixels`` (default: Pillow's own decompression-bomb limit). ``path`` may be a URL
    (see :mod:`pipeline.paths`); a TIFF behind a URL is decoded whole.

    Raises
    ------
    InputError
        If the path is missing, not a file, or not an image imageio can read.
    """
    from pipeline.tiled import is_tiled_tiff, is_zarr_array, open_tiff, open_zarr

    where = location(path)  # what tasks read: the workers may run in another folder
    fs, inner = filesystem(path) if is_url(path) else (None, path)
    if not (fs.exists(inner) if fs else os.path.exists(path)):
        raise InputError(path, "no such file")
    if is_zarr_array(path):
        return from_array(open_zarr(where, chunk), name, chunk, path=path, keep_chunks=True)
    if not (fs.isfile(inner) if fs else os.path.isfile(path)):
        raise InputError(path, "not a file")
    if fs is None and is_tiled_tiff(path):
        return from_array(open_tiff(where, chunk), name, chunk, path=path, keep_chunks=True)
    resource, props = _header(path)
    shape = tuple(int(s) for s in props.shape)
    try:
        cmyk = _is_cmyk(resource, shape)
        conversion = "CMYK to RGB" if cmyk else conversion_for(shape, props.dtype)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    pixels = shape[0] * shape[1]
    if pixels > max_pixels:
        gib = pixels * 4 / 2**30
        raise InputError(
            path,
            f"{shape[1]}x{shape[0]} is {pixels:,} pixels, over the limit of {max_pixels:,} for "
            f"images decoded whole (about {gib:.1f} GiB of worker memory); raise --max-pixels, "
            "or convert it to a tiled TIFF, which is read tile by tile",
        )
    whole = da.from_delayed(
        delayed(read_file, pure=True)(where, dask_key_name=f"read-{name}-{file_token(path)}"),
        shape=(shape[0], shape[1], 3),
        dtype=np.uint8,
    )
    return Source(
        name=name,
        path=path,
        image=whole.rechunk((chunk, chunk, 3)),
        shape=shape,
        dtype=str(props.dtype),
        conversion=conversion,
        whole=whole,
    )


#: Bytes read from a URL to learn an image's size and type before deciding how to read it.
HEADER_BYTES = 1 << 20


def _header(path: str) -> tuple[str | bytes, Any]:
    """What imageio reads an image's properties from (the path, or a URL's bytes), and them.

    A URL's first ``HEADER_BYTES`` usually hold the header; else the whole file is read.
    """
    import imageio.v3 as iio

    hint = Path(path).suffix.lower() or None
    attempts: list[str | bytes] = (
        [read_bytes(path, HEADER_BYTES), read_bytes(path)] if is_url(path) else [path]
    )
    for i, resource in enumerate(attempts):
        try:
            with _no_pillow_limit():
                return resource, iio.improps(resource, index=0, extension=hint)
        except Exception as exc:
            if i == len(attempts) - 1 or len(resource) < HEADER_BYTES:
                raise InputError(path, f"not a readable image: {_one_line(exc)}") from None
    raise AssertionError("unreachable")


def file_token(path: str, *extra: object) -> str:
    """Dask token of a file's current version (path, size, modification time) and ``extra``."""
    from dask.base import tokenize

    if is_url(path):
        fs, inner = filesystem(path)
        info = fs.info(inner)
        version = info.get("ETag") or info.get("LastModified") or info.get("mtime")
        return tokenize(path, info.get("size"), str(version), *extra)
    stat = os.stat(path)
    return tokenize(os.path.abspath(path), stat.st_size, stat.st_mtime_ns, *extra)


def from_array(
    array: NDArray[np.generic] | da.Array,
    name: str,
    chunk: int,
    path: str = "<array>",
    keep_chunks: bool = False,
) -> Source:
    """Wrap a numpy or dask image as a :class:`Source`, normalised like a file.

    The image is chunked ``(chunk, chunk)``, or, with ``keep_chunks``, keeps the dask array's
    own regular chunking (tile-aligned readers use this). A dask array is marked ``streamed``.
    """
    shape = tuple(int(s) for s in array.shape)
    try:
        conversion = conversion_for(shape, np.dtype(array.dtype))
    except ValueError as exc:
        raise InputError(path if path != "<array>" else name, str(exc)) from None
    streamed = isinstance(array, da.Array)
    arr = array if isinstance(array, da.Array) else da.from_array(array, chunks=chunk)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = arr.rechunk({2: -1})
    image = arr.map_blocks(
        to_rgb8,
        dtype=np.uint8,
        chunks=(arr.chunks[0], arr.chunks[1], (3,)),
        meta=np.empty((0, 0, 0), dtype=np.uint8),
    )
    return Source(
        name=name,
        path=path,
        image=image if keep_chunks else image.rechunk((chunk, chunk, 3)),
        shape=shape,
        dtype=str(np.dtype(array.dtype)),
        conversion=conversion,
        streamed=streamed,
    )


def open_inputs(
    inputs: Iterable[str], chunk: int, max_pixels: int = PILLOW_LIMIT, exclude: str | None = None
) -> tuple[list[Source], list[InputError]]:
    """Discover and open every input; bad ones are returned as errors instead of raising.

    ``exclude`` is the job's output store, never an input (see :func:`discover`).

    Returns
    -------
    sources : list of Source
    errors : list of InputError
    """
    paths = discover(list(inputs), exclude)
    sources: list[Source] = []
    errors: list[InputError] = []
    for path, name in zip(paths, unique_names(paths), strict=True):
        try:
            sources.append(open_file(path, name, chunk, max_pixels))
        except InputError as exc:
            errors.append(exc)
    return sources, errors


def sample_images() -> list[str]:
    """Paths of the two photos that ship with scikit-learn (``china.jpg``, ``flower.jpg``)."""
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return [str(folder / "china.jpg"), str(folder / "flower.jpg")]
