"""EXIF orientation: turning stored pixels into the picture a viewer shows.

Cameras and phones store pixels as the sensor read them and say in the EXIF ``Orientation`` tag
(274) how to turn them; TIFF has the same tag. The eight values, as in the EXIF and TIFF
specifications and Pillow's ``ImageOps.exif_transpose``:

====  ===============================================  =========================
 tag   stored row 0 is the picture's ...                applied here as
====  ===============================================  =========================
 1     top (nothing to do)                              -
 2     top, mirrored                                    flip left-right
 3     bottom, mirrored (turned 180 degrees)            rotate 180
 4     bottom                                           flip top-bottom
 5     left side, stored column 0 at the top            transpose
 6     right side (the camera turned clockwise)         rotate 90 clockwise
 7     right side, mirrored                             transverse
 8     left side (the camera turned counter-clockwise)  rotate 90 counter-clockwise
====  ===============================================  =========================

The kernels work on numpy arrays and, through numpy's protocols, on dask arrays (chunk by
chunk, nothing computed), with the image's rows and columns first.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

#: The EXIF tag holding the orientation.
ORIENTATION_TAG = 0x0112

#: What each orientation is turned by, in words (recorded in a stored image's conversion).
TURNS = {
    2: "mirrored left-right",
    3: "rotated 180",
    4: "mirrored top-bottom",
    5: "transposed",
    6: "rotated 90 clockwise",
    7: "transversed",
    8: "rotated 90 counter-clockwise",
}

Pixels = TypeVar("Pixels")


def valid(value: object) -> int:
    """The orientation a tag's value asks for: 1 to 8, or 1 for anything else (missing, bad)."""
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def swaps_axes(orientation: int) -> bool:
    """Whether the orientation exchanges the image's height and width (5 to 8)."""
    return orientation >= 5


def shown_shape(shape: tuple[int, ...], orientation: int) -> tuple[int, ...]:
    """The shape of an image of stored ``shape`` once turned by ``orientation``."""
    if swaps_axes(orientation):
        return (shape[1], shape[0], *shape[2:])
    return tuple(shape)


def describe(orientation: int) -> str:
    """The conversion step of an orientation (empty for 1: nothing done)."""
    turn = TURNS.get(orientation)
    return f"EXIF orientation {orientation} ({turn})" if turn else ""


def orient(pixels: Pixels, orientation: int) -> Pixels:
    """``pixels`` (rows, columns, ...) turned as ``orientation`` says, as a viewer shows them.

    A view where numpy allows it: nothing is copied.
    """
    image = pixels
    if orientation in (2, 3, 7):
        image = np.flip(image, axis=1)  # type: ignore[call-overload]
    if orientation in (3, 4, 7):
        image = np.flip(image, axis=0)  # type: ignore[call-overload]
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # type: ignore[call-overload]
    if orientation == 6:
        image = np.flip(image, axis=1)  # type: ignore[call-overload]
    if orientation == 8:
        image = np.flip(image, axis=0)  # type: ignore[call-overload]
    return image  # type: ignore[no-any-return]
