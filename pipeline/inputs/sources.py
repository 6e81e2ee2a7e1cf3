"""Find input images, open them lazily and normalise them to (H, W, 3) uint8 Dask arrays.

Normalisation (recorded in each image's ``conversion`` attribute):

* RGB uint8: used as it is.
* Grayscale (H, W) or (H, W, 1): the gray value is copied to R, G and B.
* Gray + alpha, RGBA: files decoded whole (PNG, WebP, GIF, ...) keep their alpha channel,
  as (H, W, 4) RGBA, when any pixel is not fully opaque (their palette is then RGBA, see
  :mod:`pipeline.quantize.rgba`); a fully opaque image, and any image read chunk by chunk (tiled
  TIFF, Zarr, arrays), drops it. Colour channels are kept as stored.
* 16-bit (uint16; PNG, TIFF, alpha included): rounded to 8 bits, ``(v * 255 + 32767) // 65535``.
* Palette ("P" mode) images: expanded to RGB by the reader (imageio's Pillow plugin), or to
  RGBA when a PNG's ``tRNS`` chunk or a GIF's transparent index makes some colour transparent.
* CMYK (print JPEGs and TIFFs): converted to RGB by Pillow, not taken for RGB + alpha.
* Boolean (1-bit) images: False -> 0, True -> 255, then as grayscale.
* Multi-frame files (animated GIF, WebP and PNG, multi-page TIFF): the first frame or page, or
  the one asked for (``frame``); the number the file holds is recorded.

Then, as a viewer shows the picture (:mod:`pipeline.inputs.looks` reads what the file says):

* Colour profile (:mod:`pipeline.inputs.profiles`): pixels in an embedded ICC profile (RGB, gray
  or CMYK), or described by a PNG's gAMA/cHRM chunks, are converted to sRGB with littleCMS
  (``convert``, the default); or kept as stored, the profile's bytes recorded with the image.
* EXIF orientation (:mod:`pipeline.inputs.orientation`): the stored pixels turned as the file's
  tag says, before anything else sees them.

Other pixel types (float, signed, 32-bit) and arrays that are not 2-D images are rejected with an
:class:`~pipeline.errors.InputError` naming the file.

JPEG, PNG and most formats decode whole: the file is read by one task, then split into chunks.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import InputError
from pipeline.inputs.looks import (
    PNG_CHANNELS,
    PNG_SIGNATURE,
    TIFF_SEPARATED,
    TIFF_SIGNATURES,
    Looks,
    no_pillow_limit,
    read_looks,
    tiff_pages,
)
from pipeline.inputs.orientation import describe as describe_orientation
from pipeline.inputs.orientation import orient, shown_shape, swaps_axes
from pipeline.inputs.profiles import INTENT_NAME, Profile, ProfileError, is_identity, to_srgb
from pipeline.paths import filesystem, is_url, location, read_bytes

if TYPE_CHECKING:
    import dask.array as da

#: Pillow's decompression-bomb limit (it refuses images of more pixels): the default largest
#: image decoded whole.
PILLOW_LIMIT = 178_956_970


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
        (H, W, 3) uint8, in blocks of whole ``chunks`` (each block one task's work).
    chunks : tuple of int
        Rows and columns of the chunks its labels are stored in.
    shape : tuple of int
        Shape of the image as stored in the file.
    dtype : str
        Pixel type as stored in the file.
    conversion : str
        What normalisation did (see module docstring).
    record : dict
        What the store records of the source (:meth:`Probe.record`); empty for an array.
    streamed : bool
        Whether chunks can be read again cheaply, one by one (tiled TIFF, Zarr, dask arrays):
        the job then holds only some of them between its fit and its labelling (up to
        ``pipeline.hold-bytes``) and reads the others again, instead of holding the image.
    whole : dask.array.Array or None
        For a file decoded whole, the decoded image as one chunk, before it is split into
        ``image``'s chunks: the sample and the colour counts read it directly (one task each,
        where it was decoded) instead of one task per chunk.
    """

    name: str
    path: str
    image: da.Array
    chunks: tuple[int, int]
    shape: tuple[int, ...]
    dtype: str
    conversion: str
    record: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False
    whole: da.Array | None = None


#: ``conversion`` steps for an alpha channel (see the module docstring).
ALPHA_KEPT = "alpha kept unless fully opaque"
ALPHA_DROPPED = "alpha dropped"


def conversion_for(shape: tuple[int, ...], dtype: np.dtype, keep_alpha: bool = False) -> str:
    """How an image of this shape and pixel type becomes RGB uint8; raises ValueError if it cannot.

    Returns one of the ``conversion`` values described in the module docstring, joined by ``+``;
    ``keep_alpha``: the image is decoded whole, and keeps an alpha channel that is not opaque.
    """
    alpha = ALPHA_KEPT if keep_alpha else ALPHA_DROPPED
    steps = []
    if dtype == np.uint16:
        steps.append("16-bit rounded to 8-bit")
    elif dtype == np.bool_:
        steps.append("1-bit to 0/255")
    elif dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {dtype} (expected uint8, uint16 or bool)")
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        steps.append("gray to RGB")
    elif len(shape) == 3 and shape[2] == 2:
        steps.extend([alpha, "gray to RGB"])
    elif len(shape) == 3 and shape[2] == 4:
        steps.append(alpha)
    elif not (len(shape) == 3 and shape[2] == 3):
        raise ValueError(f"not a 2-D image: array of shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"empty image of shape {shape}")
    return "+".join(steps) or "none"


def to_8bit(block: NDArray[np.generic]) -> NDArray[np.generic]:
    """16-bit values rounded to 8 bits, 1-bit ones to 0/255; channels as they are."""
    if block.dtype == np.uint16:
        return ((block.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if block.dtype == np.bool_:
        return block.astype(np.uint8) * np.uint8(255)
    return block


def to_rgb8(block: NDArray[np.generic], keep_alpha: bool = False) -> NDArray[np.uint8]:
    """Normalise an image block of any supported shape and type to (h, w, 3) uint8.

    With ``keep_alpha``, a block with an alpha channel that is not fully opaque becomes
    (h, w, 4) RGBA instead.
    """
    block = to_8bit(block)
    if block.ndim == 2:
        block = block[:, :, None]
    alpha = block[:, :, -1] if block.shape[2] in (2, 4) else None
    if block.shape[2] in (1, 2):
        block = np.repeat(block[:, :, :1], 3, axis=2)
    if keep_alpha and alpha is not None and not (alpha == 255).all():
        return np.concatenate([block[:, :, :3], alpha[:, :, None]], axis=2).astype(np.uint8)
    return np.ascontiguousarray(block[:, :, :3], dtype=np.uint8)


def shown_colours(
    block: NDArray[np.generic],
    profile: Profile | None = None,
    cmyk: bool = False,
    keep_alpha: bool = False,
) -> NDArray[np.uint8]:
    """A block of stored pixels as sRGB uint8 (h, w, 3), or RGBA with ``keep_alpha``.

    8 bits (:func:`to_8bit`), then the colours: CMYK through ``profile`` or else Pillow's plain
    conversion, other pixels through ``profile`` when given (:func:`profiles.to_srgb`), then
    :func:`to_rgb8`. Works chunk by chunk: nothing depends on the block's neighbours.
    """
    pixels: NDArray[Any] = to_8bit(block)
    if cmyk:
        pixels = to_srgb(pixels, profile) if profile is not None else _cmyk_to_rgb(pixels)
    elif profile is not None:
        pixels = to_srgb(pixels, profile)
    return to_rgb8(pixels, keep_alpha)


def read_file(
    path: str,
    data: bytes | None = None,
    *,
    frame: int = 0,
    looks: Looks | None = None,
    convert: bool = True,
) -> NDArray[np.uint8]:
    """Decode one frame of an image file as a viewer shows it: (H, W, 3) uint8 sRGB, oriented.

    An image with transparency becomes (H, W, 4) RGBA instead (see :func:`to_rgb8`).

    ``data``: the file's bytes, when they were read already (a URL's small file, by
    :func:`probe`). ``frame``: the frame or page (0 for the first). ``looks``: what the
    file's header says (:func:`~pipeline.inputs.looks.read_looks`), when read already.
    ``convert``: convert pixels in a colour profile to sRGB; else keep their values (CMYK is
    converted either way).

    Raises
    ------
    InputError
        If the file cannot be decoded or its pixels cannot be normalised.
    """
    try:
        # a URL is read once; a local file only if the fast decoders take it
        remote = is_url(path)
        if data is None and (remote or _fast_format(read_bytes(path, 8))):
            data = read_bytes(path)
        raw = None if data is None or frame else _decode_fast(data)
        resource: str | bytes = data if remote and data is not None else path
        cmyk = False
        if raw is None:
            raw, cmyk = _decode(path, resource, frame)
        if looks is None:
            looks = read_looks(data if data is not None else path, frame, _channels(raw.shape))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot decode image: {_one_line(exc)}") from None
    try:
        conversion_for(raw.shape, raw.dtype)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    profile = applied_profile(looks, cmyk, convert)
    try:
        pixels = shown_colours(raw, profile, cmyk, keep_alpha=True)
    except ProfileError as exc:
        raise InputError(path, str(exc)) from None
    return np.ascontiguousarray(orient(pixels, looks.orientation))


def _channels(shape: tuple[int, ...]) -> int:
    return 1 if len(shape) == 2 else int(shape[2])


def applied_profile(looks: Looks, cmyk: bool, convert: bool) -> Profile | None:
    """The profile pixels are converted from: a CMYK one always, others when ``convert``.

    None for pixels used as stored: no profile, one that is sRGB already
    (:func:`~pipeline.inputs.profiles.is_identity`), a CMYK profile on pixels that are not
    CMYK or the other way round, or ``convert`` off.
    """
    profile = looks.profile
    if profile is None or cmyk != (profile.channels == 4):
        return None
    if cmyk:
        return profile
    return profile if convert and not is_identity(profile) else None


def _decode(path: str, resource: str | bytes, frame: int) -> tuple[NDArray[Any], bool]:
    """Decode ``frame`` of a file with tifffile (TIFF) or imageio; and whether it is CMYK."""
    import imageio.v3 as iio

    head = resource[:8] if isinstance(resource, bytes) else read_bytes(resource, 8)
    if head.startswith(TIFF_SIGNATURES):
        import tifffile

        opened = io.BytesIO(resource) if isinstance(resource, bytes) else resource
        with tifffile.TiffFile(opened) as tif:
            page = tif.pages[_page(tif, frame)]
            assert isinstance(page, tifffile.TiffPage)
            raw = page.asarray()
            cmyk = int(page.photometric) == TIFF_SEPARATED and raw.ndim == 3 and raw.shape[2] == 4
            return raw, cmyk
    hint = Path(path).suffix.lower() or None
    keyed = {"mode": "RGBA"} if _keyed_alpha(resource) else {}
    with no_pillow_limit():
        raw = iio.imread(resource, index=frame, extension=hint, **keyed)  # type: ignore[arg-type]
    return raw, _is_cmyk(resource, raw.shape)


def _page(tif: Any, frame: int) -> int:
    """The index in ``tif.pages`` of image ``frame`` (see :func:`looks.tiff_pages`)."""
    pages = tiff_pages(tif) or [0]
    if frame >= len(pages):
        raise IndexError(f"it has {len(pages)} page(s), page {frame + 1} asked for")
    return pages[frame]


#: Bytes of a file's start that hold a PNG's chunks before its pixels (tRNS among them).
KEY_BYTES = 1 << 16


def _keyed_alpha(resource: str | bytes, shape: tuple[int, ...] | None = None) -> bool:
    """Whether a PNG or GIF has transparency in a key that imageio drops unless asked for RGBA.

    A palette PNG's ``tRNS`` chunk (or a gray or RGB PNG's single transparent colour) and a
    GIF's transparent index: imageio reads such files as RGB. ``shape``: the image's shape as
    imageio reports it, when known (an alpha channel already there needs nothing).
    """
    if shape is not None and len(shape) == 3 and shape[2] in (2, 4):
        return False
    head = resource[:KEY_BYTES] if isinstance(resource, bytes) else read_bytes(resource, 8)
    if head.startswith(PNG_SIGNATURE):
        if not isinstance(resource, bytes):  # only a PNG's chunks are worth reading
            head = read_bytes(resource, KEY_BYTES)
        pixels = head.find(b"IDAT")
        return b"tRNS" in (head if pixels < 0 else head[:pixels])
    if head.startswith((b"GIF87a", b"GIF89a")):
        import imageio.v3 as iio

        return "transparency" in iio.immeta(resource, index=0)  # type: ignore[arg-type]
    return False


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


#: IHDR fields (bit depth, colour type) of the PNGs libpng decodes here: 8-bit RGB, and 16-bit
#: gray, RGB, gray + alpha and RGBA.
PNG_DIRECT = (b"\x08\x02", b"\x10\x00", b"\x10\x02", b"\x10\x04", b"\x10\x06")


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
    * PNG through libpng, about twice as fast, for plain 8-bit RGB and every 16-bit PNG without
      a palette (no transparency chunk, not animated): Pillow would cut 16-bit values to their
      high byte. Other PNG flavours follow Pillow's conversions.
    """
    import imagecodecs

    try:
        if data.startswith(b"\xff\xd8\xff"):  # JPEG start-of-image marker
            if not data.endswith(b"\xff\xd9"):  # truncated (or trailing bytes): imageio decides
                return None
            pixels = imagecodecs.jpeg8_decode(data)
            return pixels if pixels.ndim == 2 or pixels.shape[2] == 3 else None
        if data.startswith(PNG_SIGNATURE) and data[24:26] in PNG_DIRECT:
            header = data[: data.find(b"IDAT")]
            if b"tRNS" in header or b"acTL" in header:
                return None
            pixels = imagecodecs.png_decode(data)
            expected = PNG_CHANNELS[data[25]]
            return pixels if _channels(pixels.shape) == expected else None
    except Exception:
        return None
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith("Could not find a backend"):
        return "unknown or unsupported format"
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(frozen=True)
class Probe:
    """What a worker learns from an input's header, enough to build its lazy image on the client.

    Attributes
    ----------
    path : str
        The input as given (messages name it).
    where : str
        The input as every process reads it (:func:`pipeline.paths.location`).
    kind : str
        ``"whole"`` (decoded whole by one task), ``"tiff"`` (tiled TIFF, read tile by tile) or
        ``"zarr"`` (a Zarr array, read chunk by chunk).
    shape : tuple of int
        Shape of the image as stored (before its orientation is applied).
    dtype : str
        Pixel type as stored.
    conversion : str
        How it becomes the picture a viewer shows, in sRGB uint8 (see the module docstring).
    tile : tuple of int or None
        Tile height and width of a tiled TIFF (as stored).
    array : zarr.Array or None
        The opened Zarr array of a ``"zarr"`` input (opening it reads only its metadata).
    data : bytes or None
        The whole file, when reading its header from a URL read all of it (a small file): the
        decode then reads nothing again.
    looks : Looks
        Its orientation, colour profile and frames (:mod:`pipeline.inputs.looks`).
    frame : int
        The frame or page read (0 for the first).
    convert : bool
        Whether pixels in a colour profile are converted to sRGB (else kept as stored).
    cmyk : bool
        Whether its pixels are CMYK.
    """

    path: str
    where: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    conversion: str
    tile: tuple[int, int] | None = None
    array: Any = None
    data: bytes | None = None
    looks: Looks = field(default_factory=Looks)
    frame: int = 0
    convert: bool = True
    cmyk: bool = False

    @property
    def pixels(self) -> int:
        """Pixels of the image."""
        return int(self.shape[0]) * int(self.shape[1])

    @property
    def shown(self) -> tuple[int, int]:
        """Height and width of the picture as shown (its orientation applied)."""
        height, width = shown_shape(self.shape[:2], self.looks.orientation)
        return int(height), int(width)

    @property
    def profile(self) -> Profile | None:
        """The profile its pixels are converted from (:func:`applied_profile`)."""
        return applied_profile(self.looks, self.cmyk, self.convert)

    def record(self) -> dict[str, Any]:
        """What the store records of the source (an image group's ``source`` attribute)."""
        looks = self.looks
        record: dict[str, Any] = {
            "path": location(self.path),
            "shape": [int(s) for s in self.shape],
            "dtype": self.dtype,
            "conversion": self.conversion,
            "orientation": looks.orientation,
            "frame": self.frame,
            "frames": looks.frames,
        }
        handling = profile_handling(looks, self.cmyk, self.convert)
        if looks.profile is not None:
            record["profile"] = {
                "description": looks.profile.description,
                "origin": looks.profile.origin,
                "handling": handling,
                "intent": INTENT_NAME,
            }
            if handling == "kept":
                record["profile"]["icc"] = base64.b64encode(looks.profile.icc).decode("ascii")
        return record


def profile_handling(looks: Looks, cmyk: bool, convert: bool) -> str:
    """What is done with a file's colour profile (:func:`applied_profile`), as recorded.

    ``"converted"`` to sRGB; ``"ignored"``: a CMYK profile on pixels that are not CMYK, or the
    other way round; ``"sRGB"``: sRGB already, nothing to do; ``"kept"``: values stored as
    they are (``convert`` off). Empty when the file has no profile.
    """
    profile = looks.profile
    if profile is None:
        return ""
    if applied_profile(looks, cmyk, convert) is not None:
        return "converted"
    if cmyk != (profile.channels == 4):
        return "ignored"
    return "sRGB" if convert else "kept"


def describe_looks(looks: Looks, frame: int, convert: bool, cmyk: bool) -> list[str]:
    """The conversion steps of what a file's header says (profile, orientation, frame)."""
    steps = []
    if looks.profile is not None:
        name = looks.profile.description
        steps.append(
            {
                "converted": f"{name} to sRGB ({INTENT_NAME})",
                "ignored": f"profile {name!r} does not fit the pixels: ignored",
                "sRGB": f"{name}: sRGB already, unchanged",
                "kept": f"{name} kept (profile stored)",
            }[profile_handling(looks, cmyk, convert)]
        )
    if looks.ignored:
        steps.append(looks.ignored)
    if looks.orientation != 1:
        steps.append(describe_orientation(looks.orientation))
    if looks.frames > 1:
        steps.append(f"{'page' if looks.paged else 'frame'} {frame + 1} of {looks.frames}")
    return steps


def probe(
    path: str,
    max_pixels: int = PILLOW_LIMIT,
    *,
    listed: bool = False,
    frame: int = 0,
    convert: bool = True,
) -> Probe:
    """Open an input's header (on a worker): its size, pixel type and how it is to be read.

    Tiled TIFF files and Zarr arrays are read chunk by chunk (:mod:`pipeline.inputs.tiled`); every
    other format is decoded whole by one task, and is refused above ``max_pixels`` (default:
    Pillow's own decompression-bomb limit). ``path`` may be a URL (see :mod:`pipeline.paths`);
    a TIFF behind a URL is decoded whole. ``listed``: the path was listed as a file, so it is
    not looked up again (on object storage each lookup is a request). ``frame``: the frame or
    page to read; ``convert``: see :func:`read_file`.

    Raises
    ------
    InputError
        If the path is missing, not a file, or not an image that can be read.
    """
    from pipeline.inputs.tiled import is_zarr_array, open_zarr_array

    where = location(path)
    fs, inner = filesystem(path) if is_url(path) else (None, path)
    if not listed:
        try:
            exists = fs.exists(inner) if fs else os.path.exists(path)
        except OSError as exc:
            raise InputError(path, f"cannot open: {_one_line(exc)}") from None
        if not exists:
            raise InputError(path, "no such file")
        if is_zarr_array(path):
            array = open_zarr_array(where)
            shape = tuple(int(s) for s in array.shape)
            return Probe(
                path,
                where,
                "zarr",
                shape,
                str(array.dtype),
                _conversion(path, shape, array.dtype),
                array=array,
            )
        if not (fs.isfile(inner) if fs else os.path.isfile(path)):
            raise InputError(path, "not a file")
    try:
        found = _probe_file(path, where, fs is not None, max_pixels, frame)
    except (ProfileError, IndexError) as exc:
        raise InputError(path, _one_line(exc)) from None
    steps = [found.conversion] if found.conversion != "none" else []
    if found.cmyk and found.profile is not None:
        steps = []  # the profile's step says it
    steps += describe_looks(found.looks, frame, convert, found.cmyk)
    return replace(found, frame=frame, convert=convert, conversion="+".join(steps) or "none")


def _probe_file(path: str, where: str, remote: bool, max_pixels: int, frame: int) -> Probe:
    """:func:`probe` of a path known to be a file (its conversion without the header's steps)."""
    from pipeline.inputs.tiled import tiff_layout

    layout = None if remote else tiff_layout(path, frame)
    if layout is not None:
        shape, dtype, tile, cmyk = layout
        channels = 1 if len(shape) == 2 else shape[2]
        return Probe(
            path,
            where,
            "tiff",
            shape,
            str(dtype),
            "CMYK to RGB" if cmyk else _conversion(path, shape, dtype),
            tile=tile,
            looks=read_looks(path, frame, channels),
            cmyk=cmyk,
        )
    resource, looks, props = _header(path, frame)
    if looks.shape is not None and looks.dtype is not None:
        shape, dtype = looks.shape, np.dtype(looks.dtype)  # what libpng and tifffile decode
    else:
        shape, dtype = tuple(int(s) for s in props.shape), np.dtype(props.dtype)
    cmyk = looks.cmyk or (not looks.paged and _is_cmyk(resource, shape))
    if cmyk:
        conversion = "CMYK to RGB"
    else:
        if _keyed_alpha(resource, shape):  # decoded as RGBA (see read_file)
            shape = (shape[0], shape[1], 4)
        conversion = _conversion(path, shape, dtype, keep_alpha=True)
    pixels = shape[0] * shape[1]
    if pixels > max_pixels:
        gib = pixels * 4 / 2**30
        raise InputError(
            path,
            f"{shape[1]}x{shape[0]} is {pixels:,} pixels, over the limit of {max_pixels:,} for "
            f"images decoded whole (about {gib:.1f} GiB of worker memory); raise --max-pixels, "
            "or convert it to a tiled TIFF, which is read tile by tile",
        )
    whole = resource if isinstance(resource, bytes) and len(resource) < HEADER_BYTES else None
    return Probe(
        path, where, "whole", shape, str(dtype), conversion, data=whole, looks=looks, cmyk=cmyk
    )


def _conversion(path: str, shape: tuple[int, ...], dtype: Any, keep_alpha: bool = False) -> str:
    try:
        return conversion_for(shape, np.dtype(dtype), keep_alpha)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


#: Bytes read from a URL to learn an image's size and type before deciding how to read it.
HEADER_BYTES = 1 << 20


def _header(path: str, frame: int) -> tuple[str | bytes, Looks, Any]:
    """What an image's header is read from (the path, or a URL's bytes), its looks and props.

    A URL's first ``HEADER_BYTES`` usually hold the header; else the whole file is read.
    ``props``: imageio's properties of ``frame`` (None for a TIFF: its looks say its shape).
    """
    import imageio.v3 as iio

    hint = Path(path).suffix.lower() or None
    resource: str | bytes = read_bytes(path, HEADER_BYTES) if is_url(path) else path
    whole = isinstance(resource, str) or len(resource) < HEADER_BYTES
    while True:
        try:
            looks = read_looks(resource, frame)
            if looks.shape is not None and looks.dtype is not None:
                return resource, looks, None
            with no_pillow_limit():
                props = iio.improps(resource, index=frame, extension=hint)  # type: ignore[arg-type]
            return resource, looks, props
        except (ProfileError, IndexError):
            raise
        except Exception as exc:
            if whole:
                size = len(resource) if isinstance(resource, bytes) else os.path.getsize(path)
                problem = f"not a readable image: {_one_line(exc)}" if size else "empty file"
                raise InputError(path, problem) from None
            resource, whole = read_bytes(path), True  # a header past HEADER_BYTES: read it all


def decode(found: Probe) -> NDArray[np.uint8]:
    """:func:`read_file` of a probed input; errors name the input as it was given."""
    try:
        return read_file(
            found.where, found.data, frame=found.frame, looks=found.looks, convert=found.convert
        )
    except InputError as exc:
        raise InputError(found.path, exc.problem) from None


def decode_rgb(found: Probe) -> NDArray[np.uint8]:
    """:func:`decode` without an alpha channel."""
    return np.ascontiguousarray(decode(found)[:, :, :3])


def read_whole(found: Probe) -> NDArray[np.uint8]:
    """Every pixel of a probed input as one (H, W, 3) uint8 array (small images of a batch).

    (H, W, 4) RGBA for an image decoded whole that has transparency.
    """
    if found.kind == "whole":
        return decode(found)
    region = (slice(None),) * len(found.shape)
    pixels = shown_colours(np.asarray(tiled_array(found)[region]), found.profile, found.cmyk)
    return np.ascontiguousarray(orient(pixels, found.looks.orientation))


def tiled_array(found: Probe) -> Any:
    """The array-like of an input read chunk by chunk (a Zarr array, or a tiled TIFF's tiles)."""
    from pipeline.inputs.tiled import TiffTiles

    if found.kind == "zarr":
        return found.array
    return TiffTiles(found.where, found.shape, np.dtype(found.dtype), found.looks.page)


def read_chunks(found: Probe, chunk: int) -> tuple[int, int]:
    """Rows and columns of the chunks an input is read in, as stored (before its orientation).

    Squares of ``chunk`` pixels; for inputs read tile by tile, whole tiles near ``chunk``.
    """
    from pipeline.inputs.tiled import aligned

    if found.kind == "whole":
        return chunk, chunk
    tile = found.tile if found.kind == "tiff" else found.array.chunks
    assert tile is not None
    return aligned(chunk, tile[0]), aligned(chunk, tile[1])


def work_chunks(found: Probe, chunk: int) -> tuple[int, int]:
    """Rows and columns of the chunks an input is worked on and its labels are stored in.

    :func:`read_chunks` as shown: a tile's sides exchanged by an orientation that turns the
    image a quarter.
    """
    rows, cols = read_chunks(found, chunk)
    return (cols, rows) if swaps_axes(found.looks.orientation) else (rows, cols)
