"""Write indexed (palette) PNG files straight from labels, given a band of rows at a time.

Pillow writes palette images of 1, 2 and 4 bits per pixel with adaptive row filters and never
filters 8-bit ones, deflating with zlib; it also needs every index in memory. This writes the
chunks itself: ``IHDR`` (colour type 3, the smallest bit depth that holds the palette),
``PLTE``, ``tRNS`` when some entry is not opaque, ``IDAT``, ``IEND``. Every row gets the same
filter type, none, Sub or Paeth, whichever deflates smallest on :data:`TRIAL_ROWS` rows of the
image (filters pay when neighbouring indices are close in value, as they are when the palette
is ordered by co-occurrence, :mod:`pipeline.quantize.order`); the rows are deflated by
libdeflate at level 12. On photo8 at k = 128 the files are 6.4% smaller than the ones written
before (lightness order, zlib level 9) and 1.2% smaller than ``oxipng -o 2`` makes those
(benchmarks/formats.py). The packed rows of the whole image are in
memory at once (1 byte per pixel at 8 bits; libdeflate takes one buffer), never the RGB pixels.
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


#: PNG filter types tried: none, Sub (the byte to the left), Paeth (left, above, corner).
NONE, SUB, PAETH = 0, 1, 4
#: Rows of the image on which each filter type is tried before the whole is compressed.
TRIAL_ROWS = 128
#: Rows filtered at once (the filters' temporaries are a few bytes per pixel).
FILTER_ROWS = 256
#: libdeflate's compression level (1-12): 12 is its exhaustive search, 2-5% smaller than 9.
LEVEL = 12


def paeth(indices: NDArray[np.uint8], above: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Paeth-filtered ``(rows, width)`` bytes; ``above``: the row before the first."""
    x = indices.astype(np.int16)
    up = np.empty_like(x)
    up[0] = above
    up[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, 1:] = x[:, :-1]
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


def filtered(rows: NDArray[np.uint8], kind: int, above: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``(rows, bytes)`` packed scanlines filtered with filter type ``kind`` (no type byte).

    ``above`` is the (unfiltered) scanline before the first, zeros at the top of the image.
    """
    if kind == PAETH:
        return paeth(rows, above)
    if kind == SUB:
        out = rows.copy()
        out[:, 1:] -= rows[:, :-1]  # uint8 arithmetic wraps modulo 256, as PNG's does
        return out
    return rows


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


def scanlines(packed: NDArray[np.uint8], kind: int, above: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """PNG scanlines: each row's filter type byte ``kind``, then the row filtered with it."""
    rows = np.empty((packed.shape[0], packed.shape[1] + 1), dtype=np.uint8)
    rows[:, 0] = kind
    rows[:, 1:] = filtered(packed, kind, above)
    return rows


def deflate(data: NDArray[np.uint8]) -> bytes:
    """A zlib stream of ``data`` (what ``IDAT`` holds), by libdeflate at :data:`LEVEL`."""
    import imagecodecs

    # any contiguous buffer, not a copy as bytes (the stubs say bytes)
    return bytes(imagecodecs.deflate_encode(data, level=LEVEL))  # type: ignore[arg-type]


def best_filter(packed: NDArray[np.uint8]) -> int:
    """The filter type (none, Sub or Paeth) whose rows of ``packed`` deflate smallest.

    Tried on :data:`TRIAL_ROWS` rows from the middle of the image; ties go to the earlier type.
    """
    top = max(0, (len(packed) - TRIAL_ROWS) // 2)
    trial = packed[top : top + TRIAL_ROWS]
    above = packed[top - 1] if top else np.zeros(packed.shape[1], dtype=np.uint8)
    sizes = {kind: len(deflate(scanlines(trial, kind, above))) for kind in (NONE, SUB, PAETH)}
    return min(sizes, key=lambda kind: sizes[kind])


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
    rows = np.zeros((height, -(-width * bits // 8) + 1), dtype=np.uint8)
    top = 0
    for band in bands:
        rows[top : top + len(band), 1:] = pack_rows(band, bits)
        top += len(band)
    kind = best_filter(rows[:, 1:])
    rows[:, 0] = kind
    # filtered in place a band at a time, bottom up, so that each band's row above is unfiltered
    for top in reversed(range(0, height, FILTER_ROWS)):
        above = rows[top - 1, 1:] if top else np.zeros(rows.shape[1] - 1, dtype=np.uint8)
        band = rows[top : top + FILTER_ROWS, 1:]
        band[...] = filtered(band, kind, above)
    data = deflate(rows)
    del rows
    for start in range(0, len(data), IDAT_BYTES):
        _chunk(file, b"IDAT", data[start : start + IDAT_BYTES])
    _chunk(file, b"IEND", b"")
