"""Files as phones, cameras and scanners write them, and how Pillow shows them (the oracle).

Files are written by Pillow (JPEG, PNG, WebP: ``exif=`` and ``icc_profile=``) and tifffile
(TIFF: the Orientation tag and ``iccprofile=``). Profiles are built with
:func:`pipeline.inputs.profiles.matrix_profile` where they can be, or are Debian's packaged ones
(``icc-profiles-free``, ``libgs-common``): a test needing one of those skips, naming the file,
when it is missing.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageCms, ImageOps

from pipeline.inputs.profiles import (
    ADOBE_GAMMA,
    ADOBE_PRIMARIES,
    D65,
    P3_PRIMARIES,
    SRGB_CURVE,
    SRGB_PRIMARIES,
    matrix_profile,
)

ORIENTATION = 0x0112
ICC_FOLDER = Path("/usr/share/color/icc")
#: Debian's profiles: Adobe RGB (icc-profiles-free), sRGB, gray, and Ghostscript's CMYK.
ADOBE_FILE = ICC_FOLDER / "compatibleWithAdobeRGB1998.icc"
SRGB_FILE = ICC_FOLDER / "sRGB.icc"
GRAY_FILE = ICC_FOLDER / "Gray.icc"
CMYK_FILE = ICC_FOLDER / "ghostscript" / "default_cmyk.icc"

P3 = matrix_profile(P3_PRIMARIES, D65, SRGB_CURVE, "Display P3")
ADOBE = matrix_profile(ADOBE_PRIMARIES, D65, ADOBE_GAMMA, "Adobe RGB (1998), built")
SRGB = matrix_profile(SRGB_PRIMARIES, D65, SRGB_CURVE, "sRGB, built")


def packaged(path: Path) -> bytes:
    """A packaged profile's bytes; the test is skipped, saying which file and package, if absent."""
    if not path.is_file():
        package = "libgs-common" if "ghostscript" in path.parts else "icc-profiles-free"
        pytest.skip(f"{path} not installed (Debian package {package}; .ci/run installs it)")
    return path.read_bytes()


def exif(orientation: int) -> bytes:
    """EXIF (TIFF structure, with ``Exif`` header) holding only an Orientation tag."""
    tags = Image.Exif()
    tags[ORIENTATION] = orientation
    return tags.tobytes()


def save(
    path: Path | str,
    pixels: NDArray[np.generic],
    orientation: int = 1,
    icc: bytes | None = None,
    **options: object,
) -> str:
    """``pixels`` written by Pillow (format by suffix) with EXIF ``orientation`` and ``icc``."""
    extra: dict[str, object] = dict(options)
    if orientation != 1:
        extra["exif"] = exif(orientation)
    if icc is not None:
        extra["icc_profile"] = icc
    Image.fromarray(pixels).save(path, **extra)
    return str(path)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, data)."""
    found, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        found.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return found


def png(signature_chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG file of chunks (type, data), their CRCs computed."""
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, data in signature_chunks:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        out.append(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc))
    return b"".join(out)


def exif_after_pixels(data: bytes) -> bytes:
    """A PNG with its ``eXIf`` chunk moved after the pixels (``IDAT``), as some writers place it."""
    found = chunks(data)
    tag = [c for c in found if c[0] == b"eXIf"]
    assert len(tag) == 1, "no eXIf chunk to move"
    rest = [c for c in found if c[0] != b"eXIf"]
    return png([*rest[:-1], *tag, rest[-1]])  # before IEND


def with_chunks(data: bytes, added: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG with chunks ``added`` after its header (IHDR)."""
    found = chunks(data)
    return png([found[0], *added, *found[1:]])


def write_tiff(
    path: Path | str,
    pixels: NDArray[np.generic],
    orientation: int = 1,
    icc: bytes | None = None,
    **options: object,
) -> str:
    """``pixels`` written by tifffile with an Orientation tag and ``icc`` (``iccprofile=``)."""
    import tifffile

    extratags = [(274, "H", 1, orientation, True)] if orientation != 1 else []
    photometric = "rgb" if pixels.ndim == 3 and pixels.shape[2] in (3, 4) else "minisblack"
    tifffile.imwrite(
        path,
        pixels,
        photometric=options.pop("photometric", photometric),
        iccprofile=icc,
        extratags=extratags,
        **options,
    )
    return str(path)


def shown(path: str | Path | bytes, frame: int = 0, convert: bool = True) -> NDArray[np.uint8]:
    """The picture as Pillow shows it: ``exif_transpose``, then its profile to sRGB (perceptual).

    ``convert``: False leaves the values as stored (only turned). 8-bit files only: Pillow cuts
    16 bits to their high byte.
    """
    opened = Image.open(io.BytesIO(path) if isinstance(path, bytes) else path)
    with opened:
        opened.seek(frame)
        opened.load()
        picture = ImageOps.exif_transpose(opened)
        icc = opened.info.get("icc_profile")
        if icc and convert:
            picture = to_srgb(picture, icc)
        return np.asarray(picture)


def to_srgb(picture: Image.Image, icc: bytes) -> Image.Image:
    """Pillow's conversion of ``picture`` in profile ``icc`` to sRGB, perceptual intent."""
    converted = ImageCms.profileToProfile(
        picture,
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
        outputMode="RGBA" if picture.mode in ("RGBA", "LA") else "RGB",
    )
    assert converted is not None
    return converted


def converted(pixels: NDArray[np.uint8], icc: bytes) -> NDArray[np.uint8]:
    """``pixels`` (RGB, RGBA, L or CMYK by their channels) converted by Pillow to sRGB."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    mode = {1: "L", 3: "RGB", 4: "CMYK" if icc[16:20] == b"CMYK" else "RGBA"}[channels]
    return np.asarray(to_srgb(Image.fromarray(pixels, mode), icc))
