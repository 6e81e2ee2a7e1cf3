"""How a file says its pixels are to be shown: orientation, colour profile, frames.

Read from the file's header, without decoding pixels:

* JPEG, WebP, GIF and other formats Pillow opens: Pillow's lazy open (EXIF orientation, the
  ``icc_profile`` it finds, ``n_frames`` of animated GIF and WebP);
* PNG: its chunks, walked here (``IHDR``'s bit depth, ``iCCP``, ``sRGB``, ``gAMA``, ``cHRM``,
  ``eXIf``, APNG's ``acTL`` frame count), skipping the pixel data; Pillow would decode the
  whole image to find an ``eXIf`` chunk placed after it;
* TIFF: tifffile (the ``Orientation`` and ``InterColorProfile`` tags of the page read, and
  the pages that are images rather than reduced-resolution copies of one).

JPEG's multi-picture extension (MPO: a phone's second image or depth map) is not counted as
frames: the first picture is the photo.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from pipeline.inputs import orientation
from pipeline.inputs.profiles import Profile, ProfileError, fits, png_profile, read_profile

#: File signatures.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")

#: The TIFF tags read (Orientation, InterColorProfile), and the photometric interpretation of
#: CMYK (separated) pixels.
TIFF_ORIENTATION, TIFF_ICC = 274, 34675
TIFF_SEPARATED = 5
#: PNG colour types and their channels (gray, RGB, palette, gray + alpha, RGBA).
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class Looks:
    """How a file's pixels are to be shown.

    Attributes
    ----------
    orientation : int
        EXIF or TIFF orientation, 1 to 8 (:mod:`pipeline.inputs.orientation`).
    profile : Profile or None
        The colour profile of its pixels; None for sRGB (or nothing said).
    frames : int
        Frames (animations) or pages (TIFF) it holds.
    ignored : str
        A profile found but not used, and why (empty if none).
    bits : int
        Bits per sample where the header says it and the usual reader would lose it (16 for a
        16-bit PNG), else 0.
    shape : tuple of int or None
        The stored shape where the header says it (a PNG's, TIFF page's), else None.
    dtype : str or None
        The pixel type the decoder gives, where the header says it (a TIFF page's, a 16-bit
        PNG's), else None.
    cmyk : bool
        Whether the pixels are CMYK (a TIFF page's photometric interpretation says so).
    paged : bool
        Whether its frames are pages (TIFF).
    page : int
        The index in a TIFF's pages of the frame read (0 for other files).
    """

    orientation: int = 1
    profile: Profile | None = None
    frames: int = 1
    ignored: str = ""
    bits: int = 0
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    cmyk: bool = False
    paged: bool = False
    page: int = 0


def read_looks(resource: str | bytes, frame: int = 0, channels: int | None = None) -> Looks:
    """The :class:`Looks` of a file (a local path, or its bytes), for frame or page ``frame``.

    ``channels``: channels of the decoded pixels, when known (a profile that does not fit them
    is ignored). Raises ``ValueError`` or ``OSError`` when the header cannot be read.
    """
    with _open(resource) as file:
        head = file.read(8)
        file.seek(0)
        if head.startswith(PNG_SIGNATURE):
            return _png(file, channels)
        if head.startswith(TIFF_SIGNATURES):
            return _tiff(file, frame, channels)
        return _pillow(file, channels)


def _open(resource: str | bytes) -> IO[bytes]:
    return io.BytesIO(resource) if isinstance(resource, bytes) else open(resource, "rb")


def _checked(icc: bytes | None, channels: int | None) -> tuple[Profile | None, str]:
    """The profile of ``icc`` if it can be used on pixels of ``channels``, else why not."""
    if not icc:
        return None, ""
    try:
        profile = read_profile(icc)
    except ProfileError as exc:
        return None, f"{exc}: ignored"
    if channels is not None and not fits(profile, channels):
        kind = {1: "gray", 3: "RGB", 4: "CMYK"}.get(profile.channels, "other")
        return None, f"{kind} profile {profile.description!r} on {channels}-channel pixels: ignored"
    return profile, ""


def _png(file: IO[bytes], channels: int | None) -> Looks:
    """Walk a PNG's chunks (seeking over their data, reading only the small ones)."""
    file.seek(8)
    info: dict[str, Any] = {}
    bits, shape, frames, exif, icc, keyed = 8, None, 1, None, None, False
    while True:
        header = file.read(8)
        if len(header) < 8:  # a URL's first bytes: the caller reads the whole file
            raise ValueError("the PNG ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", header)
        if kind in (b"IDAT", b"fdAT") or length > 1 << 24:
            file.seek(length + 4, io.SEEK_CUR)
            continue
        data = file.read(length)
        file.seek(4, io.SEEK_CUR)  # the CRC
        if kind == b"IHDR" and length >= 10:
            width, height, bits, colour = struct.unpack(">IIBB", data[:10])
            stored = PNG_CHANNELS.get(colour, 3)
            shape = (height, width) if stored == 1 else (height, width, stored)
            if colour == 3:
                bits = 8  # a palette of 8-bit entries, whatever the index depth
            channels = channels or stored
        elif kind == b"iCCP":
            name_end = data.find(b"\0")
            try:
                icc = zlib.decompress(data[name_end + 2 :])
            except zlib.error:
                icc = b"\0"  # reported as unreadable
        elif kind == b"sRGB":
            info["srgb"] = data[:1]
        elif kind == b"gAMA" and length == 4:
            info["gamma"] = struct.unpack(">I", data)[0] / 100_000
        elif kind == b"cHRM" and length == 32:
            info["chromaticity"] = [v / 100_000 for v in struct.unpack(">8I", data)]
        elif kind == b"tRNS":
            keyed = True
        elif kind == b"eXIf":
            exif = data
        elif kind == b"acTL" and length >= 8:
            frames = max(1, struct.unpack(">I", data[:4])[0])
        elif kind == b"IEND":
            break
    profile, ignored = _checked(icc, channels)
    if icc is None and channels is not None:
        try:
            profile = png_profile(info, 1 if channels in (1, 2) else 3)
        except ProfileError as exc:
            ignored = f"PNG gAMA/cHRM: {exc}: ignored"
    return Looks(
        orientation=_exif_orientation(exif),
        profile=profile,
        frames=frames,
        ignored=ignored,
        bits=16 if bits == 16 else 0,
        shape=shape,
        dtype=_png_dtype(bits, keyed, frames),
    )


def _png_dtype(bits: int, keyed: bool, frames: int) -> str | None:
    """What the decoder gives for a PNG's pixels, where its header says so (else None).

    8 bits (a palette's entries included) or 16 per sample, without a transparent colour
    (``tRNS``, which can add an alpha channel), in a still image: 1-, 2- and 4-bit gray decode
    to other types.
    """
    if keyed or frames > 1 or bits not in (8, 16):
        return None
    return f"uint{bits}"


def _exif_orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    from PIL import Image

    parsed = Image.Exif()
    try:
        parsed.load(exif)
    except Exception:
        return 1
    return orientation.valid(parsed.get(orientation.ORIENTATION_TAG))


def tiff_pages(tif: Any) -> list[int]:
    """Indices of a TIFF's pages that are images (not reduced-resolution copies or masks)."""
    return [i for i, page in enumerate(tif.pages) if not int(page.subfiletype) & 0b101]


def _tiff(file: IO[bytes], frame: int, channels: int | None) -> Looks:
    import tifffile

    with tifffile.TiffFile(file) as tif:
        pages = tiff_pages(tif) or [0]
        index = pages[min(frame, len(pages) - 1)]
        page = tif.pages[index]
        assert isinstance(page, tifffile.TiffPage)
        tag = page.tags.get(TIFF_ORIENTATION)
        turn = orientation.valid(int(tag.value)) if tag is not None else 1
        icc_tag = page.tags.get(TIFF_ICC)
        icc = bytes(icc_tag.value) if icc_tag is not None else None
        shape = tuple(int(s) for s in page.shape)
        dtype = str(page.dtype)
        cmyk = int(page.photometric) == TIFF_SEPARATED and len(shape) == 3 and shape[2] == 4
        if channels is None:
            channels = 1 if len(shape) == 2 else shape[-1]
    profile, ignored = _checked(icc, channels)
    return Looks(
        turn,
        profile,
        len(pages),
        ignored,
        shape=shape,
        dtype=dtype,
        cmyk=cmyk,
        paged=True,
        page=index,
    )


class _PillowLimit:
    """Pillow's decompression-bomb limit (one global), lifted while any thread needs it lifted."""

    lock = threading.Lock()
    holders = 0
    saved: int | None = None


@contextmanager
def no_pillow_limit() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit inside: the job applies ``max_pixels`` itself.

    Without it Pillow warns about an image over 89 million pixels (the warning reached the
    job's output) and refuses one over 179 million, whatever ``--max-pixels`` says. The limit
    is a global of Pillow's: the first of the threads inside lifts it and the last one out
    puts back what was there, so one thread's leaving never restores it under another.
    """
    from PIL import Image

    with _PillowLimit.lock:
        if _PillowLimit.holders == 0:
            _PillowLimit.saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _PillowLimit.holders += 1
    try:
        yield
    finally:
        with _PillowLimit.lock:
            _PillowLimit.holders -= 1
            if _PillowLimit.holders == 0:
                Image.MAX_IMAGE_PIXELS = _PillowLimit.saved


def _pillow(file: IO[bytes], channels: int | None) -> Looks:
    from PIL import Image, UnidentifiedImageError

    try:
        with no_pillow_limit():
            opened = Image.open(file)
    except UnidentifiedImageError:  # a format only another imageio plugin reads: says nothing
        return Looks()
    with opened as image:
        icc = image.info.get("icc_profile")
        turn = orientation.valid(image.getexif().get(orientation.ORIENTATION_TAG))
        frames = 1 if image.format == "MPO" else int(getattr(image, "n_frames", 1))
        if channels is None:
            channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "P": 3}.get(image.mode)
    profile, ignored = _checked(icc, channels)
    return Looks(turn, profile, frames, ignored)
