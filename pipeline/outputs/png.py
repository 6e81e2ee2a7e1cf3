"""Write indexed (palette) PNG files straight from labels, given a band of rows at a time.

Pillow writes palette images of 1, 2 and 4 bits per pixel with adaptive row filters and never
filters 8-bit ones, deflating with zlib; it also needs every index in memory. This writes the
chunks itself: ``IHDR`` (colour type 3, the smallest bit depth that holds the palette),
``PLTE``, ``tRNS`` when some entry is not opaque, ``IDAT``, ``IEND``. Every row gets the same
filter type, the one of PNG's five whose rows deflate smallest in a fast trial over the whole
image (filters pay when neighbouring indices are close in value, as they are when the palette
is ordered by co-occurrence, :mod:`pipeline.quantize.order`); the rows are then deflated by
libdeflate at level 12. On photo8 the files are 0.5-2.4% smaller than ``oxipng -o 2`` makes
from Pillow's, at k = 16 to 256, and 7.6% smaller than the ones written before (lightness
order, zlib level 9) at k = 128, for 0.3 s per megapixel (benchmarks/formats.py). The packed
rows of the whole image and one filtered copy are in memory at once (2 bytes per pixel at 8
bits; libdeflate takes one buffer), never the RGB pixels.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bytes of compressed data per ``IDAT`` chunk (any size is valid; this bounds the buffer).
IDAT_BYTES = 1 << 20


def bit_depth(colours: int) -> int:
    """The smallest PNG bit depth (1, 2, 4 or 8) whose indices reach ``colours`` entries."""
    return next(bits for bits in (1, 2, 4, 8) if colours <= 1 << bits)


#: PNG's filter types, each predicting a byte from its neighbours': none, Sub (left), Up
#: (above), Average (of left and above), Paeth (left, above or corner).
NONE, SUB, UP, AVERAGE, PAETH = range(5)
#: Rows filtered at once (the filters' temporaries are a few bytes per pixel).
FILTER_ROWS = 256
#: libdeflate's level for trying each filter type on the whole image (its fastest).
TRIAL_LEVEL = 1
#: libdeflate's level for the file (1-12): 12, its exhaustive search, is 2-5% smaller than 9.
LEVEL = 12


def filtered(rows: NDArray[np.uint8], kind: int, above: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``(rows, bytes)`` packed scanlines filtered with filter type ``kind`` (no type byte).

    ``above`` is the (unfiltered) scanline before the first, zeros at the top of the image.
    """
    if kind == NONE:
        return rows
    x = rows.astype(np.int16)
    up = np.empty_like(x)
    up[0] = above
    up[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, 1:] = x[:, :-1]
    if kind == SUB:
        predictor = left
    elif kind == UP:
        predictor = up
    elif kind == AVERAGE:
        predictor = (left + up) // 2
    else:
        corner = np.zeros_like(x)
        corner[:, 1:] = up[:, :-1]
        guess = left + up - corner
        far_left, far_up, far_corner = (np.abs(guess - v) for v in (left, up, corner))
        predictor = np.where(
            (far_left <= far_up) & (far_left <= far_corner),
            left,
            np.where(far_up <= far_corner, up, corner),
        )
    return ((x - predictor) % 256).astype(np.uint8)


def pack_rows(indices: NDArray[np.uint8], bits: int) -> NDArray[np.uint8]:
    """``(rows, width)`` indices as PNG scanline bytes, packed high bits first below 8 bits."""
    height, width = indices.shape
    per = 8 // bits
    if per == 1:
        return indices
    padded = np.zeros((height, -(-width // per) * per), dtype=np.uint8)
    padded[:, :width] = indices
    groups = padded.reshape(height, -1, per)
    packed = np.zeros(groups.shape[:2], dtype=np.uint8)
    for i in range(per):
        packed |= groups[:, :, i] << np.uint8(8 - bits * (i + 1))
    return packed


def scanlines(
    packed: NDArray[np.uint8], kind: int, out: NDArray[np.uint8] | None = None
) -> NDArray[np.uint8]:
    """A whole image's PNG scanlines: each row's filter type ``kind``, then the filtered row.

    ``packed`` holds the (H, bytes) unfiltered rows; the scanlines, (H, bytes + 1), go into
    ``out`` when given (filtered :data:`FILTER_ROWS` rows at a time).
    """
    height, width = packed.shape
    if out is None:
        out = np.empty((height, width + 1), dtype=np.uint8)
    out[:, 0] = kind
    for top in range(0, height, FILTER_ROWS):
        above = packed[top - 1] if top else np.zeros(width, dtype=np.uint8)
        out[top : top + FILTER_ROWS, 1:] = filtered(packed[top : top + FILTER_ROWS], kind, above)
    return out


def deflate(data: NDArray[np.uint8], level: int = LEVEL) -> bytes:
    """A zlib stream of ``data`` (what ``IDAT`` holds), by libdeflate at ``level``."""
    import imagecodecs

    # any contiguous buffer, not a copy as bytes (the stubs say bytes)
    return bytes(imagecodecs.deflate_encode(data, level=level))  # type: ignore[arg-type]


def filtered_scanlines(packed: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The scanlines of the filter type that deflates the whole image smallest.

    Each type is tried at :data:`TRIAL_LEVEL` (fast; its ranking is 12's within 0.2% on
    photo8); ties go to the lower type.
    """
    rows = np.empty((packed.shape[0], packed.shape[1] + 1), dtype=np.uint8)
    sizes = {kind: len(deflate(scanlines(packed, kind, rows), TRIAL_LEVEL)) for kind in range(5)}
    return scanlines(packed, min(sizes, key=lambda kind: sizes[kind]), rows)


def _chunk(file: BinaryIO, kind: bytes, data: bytes) -> None:
    file.write(struct.pack(">I", len(data)) + kind + data)
    file.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_indexed_png(
    file: BinaryIO,
    palette: NDArray[np.uint8],
    alpha: NDArray[np.uint8] | None,
    shape: tuple[int, int],
    bands: Iterable[NDArray[np.uint8]],
    icc: bytes | None = None,
) -> None:
    """Write an indexed PNG of ``shape`` (height, width) whose rows come in ``bands``.

    Parameters
    ----------
    file : binary file
        Open for writing, at the position the PNG starts.
    palette : ndarray of uint8, shape (k, 3)
        At most 256 RGB entries.
    alpha : ndarray of uint8, shape (m,), optional
        Alpha of the first m entries (the rest opaque): the ``tRNS`` chunk.
    shape : tuple of int
    bands : iterable of ndarray of uint8
        Consecutive bands of (rows, width) indices into ``palette``, top to bottom.
    icc : bytes, optional
        An ICC profile the colours are in: the ``iCCP`` chunk (a palette kept in its source's
        profile, ``--color-profile keep``).
    """
    height, width = shape
    bits = bit_depth(len(palette))
    file.write(PNG_SIGNATURE)
    _chunk(file, b"IHDR", struct.pack(">IIBBBBB", width, height, bits, 3, 0, 0, 0))
    if icc is not None:
        _chunk(file, b"iCCP", b"ICC profile\0\0" + zlib.compress(icc, 9))
    _chunk(file, b"PLTE", palette[:, :3].tobytes())
    if alpha is not None and len(alpha):
        _chunk(file, b"tRNS", alpha.tobytes())
    packed = np.zeros((height, -(-width * bits // 8)), dtype=np.uint8)
    top = 0
    for band in bands:
        packed[top : top + len(band)] = pack_rows(band, bits)
        top += len(band)
    data = deflate(filtered_scanlines(packed))
    del packed
    for start in range(0, len(data), IDAT_BYTES):
        _chunk(file, b"IDAT", data[start : start + IDAT_BYTES])
    _chunk(file, b"IEND", b"")
