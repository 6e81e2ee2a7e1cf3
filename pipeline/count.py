"""Count the distinct colours of an image chunk by chunk (input of the whole-image refinement)."""

from __future__ import annotations

import dask.array as da
from dask import delayed
from dask.delayed import Delayed

from pipeline.colours import histogram, merge_histograms

#: Partial histograms merged per task when combining chunk counts.
FAN_IN = 8


def colour_counts(image: da.Array) -> Delayed:
    """Lazy ``(keys, counts)`` histogram of an (H, W, 3) uint8 dask image.

    Each chunk is counted on its own; the partial histograms are merged in a tree, ``FAN_IN`` at a
    time, so no task sees more than a chunk of pixels. Sorted keys make the result independent of
    the chunking.
    """
    blocks = image.to_delayed(optimize_graph=False).ravel()  # keep keys shared with the job
    parts = [delayed(histogram, pure=True)(block) for block in blocks]
    while len(parts) > 1:
        parts = [
            delayed(merge_histograms, pure=True)(*parts[i : i + FAN_IN])
            for i in range(0, len(parts), FAN_IN)
        ]
    return parts[0]
