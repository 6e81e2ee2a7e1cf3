"""Write indexed (palette) PNG files straight from labels, a band of rows at a time.

Pillow writes palette images of 1, 2 and 4 bits per pixel with adaptive row filters, which
deflate worse than unfiltered rows (china.jpg at 16 colours: 64.3 KB against 55.2 KB; PNG's
own advice is no filtering for palette images); it also needs the whole index array in
memory. This writes the chunks itself: ``IHDR`` (colour type 3, the smallest bit depth that
holds the palette), ``PLTE``, ``tRNS`` when some entry is not opaque, ``IDAT`` with every row
unfiltered and deflated at level 9, ``IEND``.
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


def pack_rows(indices: NDArray[np.uint8], bits: int) -> bytes:
    """PNG scanlines of ``(rows, width)`` indices: filter byte 0, then pixels packed high first."""
    height, width = indices.shape
    per = 8 // bits
    if per > 1:
        padded = np.zeros((height, -(-width // per) * per), dtype=np.uint8)
        padded[:, :width] = indices
        groups = padded.reshape(height, -1, per)
        packed = np.zeros(groups.shape[:2], dtype=np.uint8)
        for i in range(per):
            packed |= groups[:, :, i] << np.uint8(8 - bits * (i + 1))
        indices = packed
    rows = np.zeros((height, indices.shape[1] + 1), dtype=np.uint8)
    rows[:, 1:] = indices
    return rows.tobytes()


def _chunk(file: BinaryIO, kind: bytes, data: bytes) -> None:
    file.write(struct.pack(">I", len(data)) + kind + data)
    file.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_indexed_png(
    file: BinaryIO,
    palette: NDArray[np.uint8],
    alpha: NDArray[np.uint8] | None,
    shape: tuple[int, int],
    bands: Iterable[NDArray[np.uint8]],
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
    """
    height, width = shape
    bits = bit_depth(len(palette))
    file.write(PNG_SIGNATURE)
    _chunk(file, b"IHDR", struct.pack(">IIBBBBB", width, height, bits, 3, 0, 0, 0))
    _chunk(file, b"PLTE", palette[:, :3].tobytes())
    if alpha is not None and len(alpha):
        _chunk(file, b"tRNS", alpha.tobytes())
    deflate = zlib.compressobj(9)
    pending = b""
    for band in bands:
        pending += deflate.compress(pack_rows(band, bits))
        while len(pending) >= IDAT_BYTES:
            _chunk(file, b"IDAT", pending[:IDAT_BYTES])
            pending = pending[IDAT_BYTES:]
    pending += deflate.flush()
    for start in range(0, len(pending), IDAT_BYTES):
        _chunk(file, b"IDAT", pending[start : start + IDAT_BYTES])
    _chunk(file, b"IEND", b"")
