"""Colour profiles: the pixels of an image in an ICC profile, converted to sRGB by littleCMS.

A photo from a phone or a camera is often not in sRGB: Display P3 (phones), Adobe RGB (1998)
(cameras), a gray or CMYK profile (scans, print files). Its values mean colours only through
the ICC profile embedded in the file; a viewer converts them to the screen's colours. The job
converts them to sRGB before anything else, with littleCMS through Pillow's
:mod:`PIL.ImageCms`, so that the palette, the labels and the metrics are those of the picture a
viewer shows.

* Rendering intent: perceptual (:data:`INTENT`), ICC's and Pillow's default. For the
  matrix-shaper profiles of phones and cameras (Display P3, Adobe RGB) it is the same as
  relative colorimetric: colours outside sRGB are clipped to its gamut, the white point kept.
* A profile that maps every 8-bit colour to itself, within the rounding of an sRGB profile's
  tables (:func:`is_identity`), is sRGB: not applied.
* PNG's own colour chunks (:func:`png_profile`): ``iCCP`` is a profile; ``sRGB`` says sRGB;
  ``gAMA`` and ``cHRM`` describe a gamma and primaries, made into a profile here
  (:func:`matrix_profile`) unless they are sRGB's.
* A profile whose colour space does not match the pixels (an RGB profile in a gray file) is
  ignored, and the conversion says so.

Profiles are built here as well (:func:`matrix_profile`, :func:`gray_profile`): ICC version 4
matrix-shaper profiles from primaries, a white point and a tone curve, as PNG's chunks describe
them; tests build Display P3 with it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Rendering intent of every conversion (0: perceptual, as Pillow's ``ImageCms.Intent``).
INTENT = 0
#: The intent's name, as conversions record it.
INTENT_NAME = "perceptual"

#: Colour spaces of profiles (ICC header bytes 16-20) and the channels their pixels have.
CHANNELS = {b"RGB ": 3, b"GRAY": 1, b"CMYK": 4}

#: CIE xy of sRGB's primaries (red, green, blue) and white point (D65).
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
D65 = (0.3127, 0.3290)
#: Display P3's primaries (DCI-P3's, with a D65 white and sRGB's tone curve).
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
#: Adobe RGB (1998)'s primaries (with a D65 white and a gamma of 563/256).
ADOBE_PRIMARIES = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
ADOBE_GAMMA = 563 / 256
#: sRGB's tone curve as an ICC parametric curve of type 3: (g, a, b, c, d).
SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
#: PNG's gAMA for sRGB (1/2.2), and how near a gAMA or cHRM value counts as sRGB's.
SRGB_GAMMA = 1 / 2.2
GAMMA_NEAR, XY_NEAR = 0.005, 0.01
#: How far (in 8-bit steps) a profile may move a colour and still count as sRGB.
IDENTITY_NEAR = 1


class ProfileError(ValueError):
    """An embedded profile that littleCMS cannot read or use."""


@dataclass(frozen=True)
class Profile:
    """An image's colour profile, as found in its file.

    Attributes
    ----------
    icc : bytes
        The ICC profile (embedded, or built from PNG's gAMA and cHRM chunks).
    description : str
        Its description (the name a viewer shows, such as ``Display P3``).
    origin : str
        Where it came from: ``"ICC"`` (embedded) or ``"PNG gAMA/cHRM"``.
    """

    icc: bytes
    description: str
    origin: str = "ICC"

    @property
    def channels(self) -> int:
        """Colour channels of the pixels it describes (3 for RGB, 1 for gray, 4 for CMYK)."""
        return CHANNELS.get(self.icc[16:20], 0)


def read_profile(icc: bytes, origin: str = "ICC") -> Profile:
    """A :class:`Profile` of ICC bytes; raises :class:`ProfileError` if littleCMS cannot read it."""
    from PIL import ImageCms

    try:
        opened = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(opened).strip()
    except Exception as exc:
        raise ProfileError(f"unreadable ICC profile: {' '.join(str(exc).split())}") from None
    if icc[16:20] not in CHANNELS:
        space = icc[16:20].decode("latin-1").strip()
        raise ProfileError(f"ICC profile of unsupported colour space {space!r}")
    return Profile(icc, description or "unnamed profile", origin)


def png_profile(info: dict[str, Any], channels: int) -> Profile | None:
    """The profile a PNG's ``sRGB``, ``gAMA`` and ``cHRM`` chunks describe, as Pillow reads them.

    None when they say sRGB (or nothing). ``channels``: 1 for a gray PNG, else 3. An ``iCCP``
    chunk (``info["icc_profile"]``) is read by the caller first: it wins over these.
    """
    if "srgb" in info:
        return None
    gamma = info.get("gamma")
    chromaticity = info.get("chromaticity")
    if gamma is None and chromaticity is None:
        return None
    srgb_gamma = gamma is None or abs(float(gamma) - SRGB_GAMMA) < GAMMA_NEAR
    if chromaticity is None:
        white, primaries = D65, SRGB_PRIMARIES
    else:
        values = [float(v) for v in chromaticity]
        white = (values[0], values[1])
        primaries = ((values[2], values[3]), (values[4], values[5]), (values[6], values[7]))
    srgb_xy = np.allclose((*white, *np.ravel(primaries)), (*D65, *np.ravel(SRGB_PRIMARIES)),
                          atol=XY_NEAR)  # fmt: skip
    if srgb_gamma and (srgb_xy or channels == 1):
        return None
    curve: float | Sequence[float] = SRGB_CURVE if gamma is None else 1 / float(gamma)
    said = [] if gamma is None else [f"gAMA {float(gamma):.5f}"]
    if chromaticity is not None and channels != 1:
        said.append("cHRM")
    description = "PNG " + " + ".join(said)
    if channels == 1:
        icc = gray_profile(curve, white, description)
    else:
        icc = matrix_profile(primaries, white, curve, description)
    return read_profile(icc, "PNG gAMA/cHRM")


@functools.cache
def _srgb() -> Any:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


#: Transforms built, by profile digest and modes (building one parses the profile: ~1 ms), at
#: most MAX_TRANSFORMS in a process.
MAX_TRANSFORMS = 64
_TRANSFORMS: dict[tuple[str, str, str], Any] = {}


def _transform(profile: Profile, mode_in: str, mode_out: str) -> Any:
    from PIL import ImageCms

    key = (hashlib.sha256(profile.icc).hexdigest(), mode_in, mode_out)
    transform = _TRANSFORMS.get(key)
    if transform is None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile.icc))
            transform = ImageCms.buildTransform(
                source, _srgb(), mode_in, mode_out, ImageCms.Intent(INTENT)
            )
        except Exception as exc:
            raise ProfileError(
                f"cannot convert from ICC profile {profile.description!r}: "
                + " ".join(str(exc).split())
            ) from None
        if len(_TRANSFORMS) >= MAX_TRANSFORMS:  # a bucket of many profiles: keep memory bounded
            _TRANSFORMS.clear()
        _TRANSFORMS[key] = transform
    return transform


#: Modes Pillow converts pixels of these channels in (colour channels, alpha).
_MODES = {(3, False): "RGB", (3, True): "RGBA", (1, False): "L", (4, False): "CMYK"}


#: Images of more pixels than this are converted in strips of rows on a pool of threads:
#: littleCMS runs without the GIL, and one transform serves every thread. On 2 cores, a
#: 100-megapixel photo converts 4.6 times as fast as in one call over the whole image
#: (benchmarks/colour.py).
STRIP_PIXELS = 4_000_000
STRIP_ROWS = 256
STRIP_THREADS = min(4, os.cpu_count() or 1)


def to_srgb(
    pixels: NDArray[np.uint8], profile: Profile, threads: int | None = None
) -> NDArray[np.uint8]:
    """8-bit ``pixels`` in ``profile`` converted to sRGB: (h, w, 3), or (h, w, 4) with alpha.

    ``pixels``: (h, w) or (h, w, 1) gray and (h, w, 2) gray + alpha for a gray profile,
    (h, w, 3) or (h, w, 4) RGB(A) for an RGB profile, (h, w, 4) for a CMYK one. Alpha is kept
    as it is. ``threads``: threads converting an image of more than :data:`STRIP_PIXELS` pixels
    in strips of :data:`STRIP_ROWS` rows (default :data:`STRIP_THREADS`; 0: one call). Every
    pixel is converted on its own, so strips give the same values.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    threads = STRIP_THREADS if threads is None else threads
    if threads < 1 or height * width <= STRIP_PIXELS or height <= STRIP_ROWS:
        return _convert(pixels, profile)
    alpha = (profile.channels, channels) in ((3, 4), (1, 2))
    out = np.empty((height, width, 4 if alpha else 3), dtype=np.uint8)

    def strip(top: int) -> None:
        out[top : top + STRIP_ROWS] = _convert(pixels[top : top + STRIP_ROWS], profile)

    with ThreadPoolExecutor(threads, thread_name_prefix="to_srgb") as pool:
        for _ in pool.map(strip, range(0, height, STRIP_ROWS)):
            pass  # raises a strip's error, if any
    return out


def _convert(pixels: NDArray[np.uint8], profile: Profile) -> NDArray[np.uint8]:
    """:func:`to_srgb` of (h, w, c) ``pixels`` in one littleCMS call."""
    from PIL import Image, ImageCms

    colour = profile.channels
    alpha = None
    if colour == 1 and pixels.shape[2] == 2:
        pixels, alpha = pixels[:, :, :1], pixels[:, :, 1:]
    mode_in = _MODES[colour, pixels.shape[2] == 4 and colour == 3]
    mode_out = "RGBA" if mode_in == "RGBA" else "RGB"
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels if colour != 1 else pixels[:, :, 0])
    image = Image.frombuffer(mode_in, (width, height), data, "raw", mode_in, 0, 1)
    converted = ImageCms.applyTransform(image, _transform(profile, mode_in, mode_out))
    assert converted is not None
    out = np.asarray(converted)
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    return out


def fits(profile: Profile, channels: int) -> bool:
    """Whether ``profile`` describes pixels of ``channels`` channels (alpha included)."""
    colour = profile.channels
    return (colour, channels) in ((3, 3), (3, 4), (1, 1), (1, 2), (4, 4))


@functools.lru_cache(maxsize=64)
def is_identity(profile: Profile) -> bool:
    """Whether ``profile`` maps 8-bit colours to themselves (an sRGB profile): then not applied.

    Within 1: sRGB profiles whose curves are tables (Debian's ``sRGB.icc``, Ghostscript's
    ``srgb.icc``) move about one colour in a hundred by one step from littleCMS's own sRGB,
    rounding. Tried on a grid of every 15th value and 60,000 random colours (a millisecond or
    two).
    """
    if profile.channels != 3:
        return False
    colours = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    grid = np.meshgrid(*[np.arange(0, 256, 15, dtype=np.uint8)] * 3, indexing="ij")
    colours.reshape(-1, 3)[: grid[0].size] = np.stack(grid, -1).reshape(-1, 3)
    difference = to_srgb(colours, profile).astype(np.int16) - colours
    return bool(np.abs(difference).max() <= IDENTITY_NEAR)


# ICC profile writing (version 4, matrix-shaper): used for PNG's gAMA/cHRM and by the tests.

#: The profile connection space's white (D50), as ICC's header and wtpt tag give it.
D50_XYZ = (0.9642, 1.0, 0.8249)
#: The Bradford cone response matrix (chromatic adaptation from one white to another).
BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def _xyz(xy: tuple[float, float]) -> NDArray[np.float64]:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _adaptation(white: tuple[float, float]) -> NDArray[np.float64]:
    """Bradford's matrix from ``white`` to D50."""
    source = BRADFORD @ _xyz(white)
    target = BRADFORD @ np.array(D50_XYZ)
    return np.asarray(np.linalg.inv(BRADFORD) @ np.diag(target / source) @ BRADFORD)


def _s15(values: Sequence[float] | NDArray[np.float64]) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _xyz_tag(values: Sequence[float] | NDArray[np.float64]) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(values)


def _text_tag(text: str) -> bytes:
    encoded = text.encode("utf-16-be")
    return (
        b"mluc\0\0\0\0" + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(encoded), 28) + encoded
    )


def _curve_tag(curve: float | Sequence[float]) -> bytes:
    if isinstance(curve, (int, float)):  # a plain gamma
        return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(curve * 256)) + b"\0\0"
    return b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + _s15(curve)


def _profile(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v4 display profile of ``space`` holding ``tags`` (signature, data)."""
    offset = 128 + 4 + 12 * len(tags)
    table, body, placed = b"", b"", {}
    for signature, data in tags:
        if data not in placed:  # identical tags (three tone curves) share their data
            placed[data] = offset + len(body)
            body += data + b"\0" * (-len(data) % 4)
        table += struct.pack(">4sII", signature, placed[data], len(data))
    size = offset + len(body)
    header = struct.pack(
        ">I4sI4s4s4s6H4s4sI4s4s8sI12s4s16s28s",
        size, b"\0\0\0\0", 0x04300000, b"mntr", space, b"XYZ ",
        2026, 1, 1, 0, 0, 0, b"acsp", b"\0\0\0\0", 0, b"\0\0\0\0", b"\0\0\0\0", b"\0" * 8,
        INTENT, _s15(D50_XYZ), b"\0\0\0\0", b"\0" * 16, b"\0" * 28,
    )  # fmt: skip
    return header + struct.pack(">I", len(tags)) + table + body


def matrix_profile(
    primaries: Sequence[tuple[float, float]],
    white: tuple[float, float],
    curve: float | Sequence[float],
    description: str,
) -> bytes:
    """An RGB ICC profile from CIE xy ``primaries`` (red, green, blue), ``white`` and ``curve``.

    ``curve``: a gamma (2.2), or the five parameters of an ICC parametric curve of type 3
    (:data:`SRGB_CURVE`). Colorants are adapted to D50 with Bradford's matrix, as ICC v4 asks.
    """
    columns = np.column_stack([_xyz(p) for p in primaries])
    scale = np.linalg.solve(columns, _xyz(white))
    adapt = _adaptation(white)
    colorants = adapt @ (columns * scale)
    trc = _curve_tag(curve)
    return _profile(
        b"RGB ",
        [
            (b"desc", _text_tag(description)),
            (b"cprt", _text_tag("No copyright, use freely")),
            (b"wtpt", _xyz_tag(D50_XYZ)),
            (b"chad", b"sf32\0\0\0\0" + _s15(adapt.ravel())),
            (b"rXYZ", _xyz_tag(colorants[:, 0])),
            (b"gXYZ", _xyz_tag(colorants[:, 1])),
            (b"bXYZ", _xyz_tag(colorants[:, 2])),
            (b"rTRC", trc),
            (b"gTRC", trc),
            (b"bTRC", trc),
        ],
    )


def gray_profile(
    curve: float | Sequence[float], white: tuple[float, float], description: str
) -> bytes:
    """A gray ICC profile with tone ``curve`` (as :func:`matrix_profile`'s) and ``white``."""
    return _profile(
        b"GRAY",
        [
            (b"desc", _text_tag(description)),
            (b"cprt", _text_tag("No copyright, use freely")),
            (b"wtpt", _xyz_tag(D50_XYZ)),
            (b"chad", b"sf32\0\0\0\0" + _s15(_adaptation(white).ravel())),
            (b"kTRC", _curve_tag(curve)),
        ],
    )
