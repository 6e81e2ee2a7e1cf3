"""Label every pixel with its exact nearest palette entry, chunk by chunk, and measure its error.

Assignment is a table lookup keyed by the 24-bit colour (:func:`pipeline.quantize.colours.pack`).
The table of a fit starts with the colours the fit counted and their exact labels; a colour it has
not seen yet (an image whose colours were counted from a sample) is labelled once, exactly, by the
brute-force kernel and added to the table. The result is always
:func:`pipeline.quantize.colours.nearest` of the stored palette, in the fit's colour space
(:attr:`pipeline.quantize.fit.Fit.space`). Each table entry also holds the squared RGB error of its
colour (PSNR is measured in RGB whatever the space), so a chunk's labels and its exact error come
from one pass over the pixels, compiled with numba (three times faster than the same steps as NumPy
array operations, which each make a full-size temporary).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
from numpy.typing import NDArray

from pipeline.quantize.colours import (
    colour_table,
    nearest,
    pixel_key,
    recycle_table,
    squared_errors,
    unpack,
)
from pipeline.quantize.dither import DEFAULT_STRENGTH, dither_block
from pipeline.quantize.fit import Fit

#: Bits of a squared distance between two uint8 RGB colours (at most 3 * 255**2 < 2**18).
ERROR_BITS = 18


def label_dtype(colors: int) -> np.dtype:
    """uint8 labels up to 256 colours, uint16 above."""
    return np.dtype(np.uint8 if colors <= 256 else np.uint16)


@numba.njit(nogil=True, cache=True)
def _lookup(block, entries, shift, mask, one, labels, pending):  # type: ignore[no-untyped-def]
    # Fills ``labels`` from the table; returns the summed error and how many pixels were not
    # in it, whose flat positions go to ``pending`` (their labels are left unset). ``shift``,
    # ``mask`` and ``one`` have the entries' type, so that no operation mixes signed and
    # unsigned integers (numba would use floats).
    error = np.uint64(0)
    missing = 0
    height, width = labels.shape
    for i in range(height):
        for j in range(width):
            key = pixel_key(block, i, j)
            entry = entries[key]
            if entry == 0:
                pending[missing] = i * width + j
                missing += 1
            else:
                labels[i, j] = (entry & mask) - one
                error += np.uint64(entry >> shift)
    return error, missing


@numba.njit(nogil=True, cache=True)
def _lookup_at(block, entries, shift, mask, one, labels, positions):  # type: ignore[no-untyped-def]
    # The same as _lookup for the pixels at ``positions`` only, all of them in the table.
    error = np.uint64(0)
    width = labels.shape[1]
    for position in positions:
        i, j = position // width, position % width
        key = pixel_key(block, i, j)
        entry = entries[key]
        labels[i, j] = (entry & mask) - one
        error += np.uint64(entry >> shift)
    return error


@numba.njit(nogil=True, cache=True)
def _distinct_keys(block, positions, width):  # type: ignore[no-untyped-def]
    # distinct_keys: a bit per 24-bit colour (2 MiB), set for each pixel, then read in order.
    seen = np.zeros(1 << 18, dtype=np.uint64)
    for position in positions:
        key = pixel_key(block, position // width, position % width)
        seen[key >> 6] |= np.uint64(1) << np.uint64(key & 63)
    keys = np.empty(len(positions), dtype=np.uint32)  # at most one key per pixel
    found = 0
    for index in range(seen.shape[0]):
        word = seen[index]
        bit = 0
        while word:
            if word & np.uint64(1):
                keys[found] = (index << 6) | bit
                found += 1
            word >>= np.uint64(1)
            bit += 1
    return keys[:found]


def distinct_keys(block: NDArray[np.uint8], positions: NDArray[np.integer]) -> NDArray[np.uint32]:
    """Sorted distinct 24-bit keys of the pixels of an (h, w, 3) block at flat ``positions``.

    ``np.unique(pack(block.reshape(-1, 3)[positions]))``, without a sort: one compiled pass
    marks each colour in a bit table, read back in order (a 100-megapixel photo's chunk with
    400,000 colours the fit had not counted: 3.7 ms against 35 ms).
    """
    return _distinct_keys(block, positions, block.shape[1])  # type: ignore[no-any-return]


class LookupTable:
    """Label and squared error of every 24-bit colour met so far, for one palette.

    An entry is 0 for a colour not labelled yet, else ``1 + label`` in its low ``label_bits``
    (the nearest entry in the fit's colour space) and the colour's squared RGB distance to its
    entry above them: 2**24 entries (64 MiB). The
    memory is reused by the next table once this one is released (only the entries that were
    set are cleared): a fresh 64 MiB table per image costs more in page faults than the lookups.
    """

    def __init__(self, fit: Fit) -> None:
        self.palette = fit.palette
        self.space = fit.space
        self.label_bits = len(fit.palette).bit_length()
        wide = self.label_bits + ERROR_BITS > 32
        self.entries = colour_table(np.dtype(np.uint64 if wide else np.uint32))
        self._set: list[NDArray[np.uint32]] = []
        self.users = 0  # tasks using the table now
        self.retired = False  # released as soon as no task uses it
        self._add(fit.keys, fit.labels)

    def _add(self, keys: NDArray[np.uint32], labels: NDArray[np.integer]) -> None:
        error = squared_errors(keys, labels, self.palette).astype(self.entries.dtype)
        self.entries[keys] = (labels.astype(self.entries.dtype) + 1) | (error << self.label_bits)
        self._set.append(keys)

    def lookup(
        self, block: NDArray[np.uint8], dtype: np.dtype
    ) -> tuple[NDArray[np.unsignedinteger], int]:
        """Labels (h, w) of an (h, w, 3) uint8 block and the sum of their squared errors.

        One compiled pass over the pixels; colours the table does not hold yet are labelled
        exactly (:func:`~pipeline.quantize.colours.nearest` in the fit's space) and added, and their
        pixels are looked up again.
        """
        height, width = block.shape[:2]
        labels = np.empty((height, width), dtype=dtype)
        pending = np.empty(height * width, dtype=np.uint32 if height * width < 1 << 32 else np.intp)
        word = self.entries.dtype.type
        fields = (word(self.label_bits), word((1 << self.label_bits) - 1), word(1))
        error, missing = _lookup(block, self.entries, *fields, labels, pending)
        if missing:
            where = pending[:missing]
            new = distinct_keys(block, where)
            self._add(new, nearest(unpack(new), self.palette, space=self.space))
            error += _lookup_at(block, self.entries, *fields, labels, where)
        return labels, int(error)

    def release(self) -> None:
        """Clear the entries set and hand the memory back for the next table."""
        recycle_table(self.entries, *self._set)


#: Most tables kept per process. Beyond it the least recently used table is released (and
#: rebuilt if its fit is used again), so that a batch of images reuses table memory.
KEEP_TABLES = 2
#: Tables by ``id`` of their fit, least recently used first.
_TABLES: OrderedDict[int, LookupTable] = OrderedDict()
#: Re-entrant: a fit may be garbage-collected (and its table forgotten) while it is held.
_LOCK = threading.RLock()


def _retire(table: LookupTable) -> None:
    table.retired = True
    if table.users == 0:
        table.release()


def _forget(fit_id: int) -> None:
    with _LOCK:
        table = _TABLES.pop(fit_id, None)
        if table is not None:
            _retire(table)


@contextmanager
def lookup_table(fit: Fit) -> Iterator[LookupTable]:
    """The table of ``fit`` in this process, built on first use and shared by every block."""
    with _LOCK:
        table = _TABLES.get(id(fit))
        if table is None:
            table = _TABLES[id(fit)] = LookupTable(fit)
            weakref.finalize(fit, _forget, id(fit))
            while len(_TABLES) > KEEP_TABLES:
                _retire(_TABLES.popitem(last=False)[1])
        else:
            _TABLES.move_to_end(id(fit))
        table.users += 1
    try:
        yield table
    finally:
        with _LOCK:
            table.users -= 1
            if table.retired and table.users == 0:
                table.release()


def label_block(
    block: NDArray[np.uint8],
    fit: Fit,
    dtype: np.dtype,
    dither: str = "none",
    strength: float = DEFAULT_STRENGTH,
    origin: tuple[int, int] = (0, 0),
) -> tuple[NDArray[np.unsignedinteger], int]:
    """Labels (h, w) of an (h, w, 3) uint8 block for ``fit``'s palette, and their squared error.

    The error is the sum over the block's pixels and channels of (pixel - palette entry)**2.
    With ``dither`` (``"ordered"`` or ``"blue-noise"``, see :mod:`pipeline.quantize.dither`) each
    pixel is nudged by a threshold fixed to its absolute position before it is labelled: ``origin``
    is the block's top-left pixel in the image, ``strength`` the nudge in palette spacings. A
    fit whose palette holds every colour it counted exactly is not dithered: that could only
    add error.
    """
    with lookup_table(fit) as table:
        if dither == "none" or fit.info.get("mse") == 0:
            return table.lookup(block, dtype)
        return dither_block(
            block,
            *origin,
            fit.palette,
            dither,
            strength,
            lambda pixels: table.lookup(pixels, dtype)[0],
            fit.space,
        )


def assign_block(
    block: NDArray[np.uint8], fit: Fit, dtype: np.dtype
) -> NDArray[np.unsignedinteger]:
    """Labels (h, w) of an (h, w, 3) uint8 block for ``fit``'s palette."""
    return label_block(block, fit, dtype)[0]
