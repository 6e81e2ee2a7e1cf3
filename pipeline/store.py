"""The Zarr v3 store: one group per image holding ``palette``, ``labels`` and attributes.

The layout is documented in ``docs/store-format.md`` (format version :data:`FORMAT_VERSION`) and
can be read with zarr-python alone. An image's ``status`` attribute is ``"writing"`` from the
moment its group is created and becomes ``"complete"`` only in :func:`finalize`, after every
labels chunk and the palette are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import ZstdCodec

from pipeline.errors import PipelineError

#: Version of the store layout described in docs/store-format.md.
FORMAT_VERSION = 1
#: Value of the ``format`` attribute of the root group and of each image group.
FORMAT_NAME = "pipeline.palette-image"
#: zstd level of labels and palette chunks.
ZSTD_LEVEL = 3
#: Settings that must match for an existing complete image to be reused rather than rewritten.
REUSE_KEYS = ("source", "colors_requested", "sample_size_requested", "seed", "fit_settings")


def _version() -> str:
    from pipeline import __version__

    return __version__


def open_root(path: str, mode: Literal["r", "r+", "a"] = "r") -> zarr.Group:
    """Open the store's root group; ``mode="a"`` creates it (with its format attributes)."""
    try:
        root = zarr.open_group(path, mode=mode, zarr_format=3)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such store") from None
    except Exception as exc:
        raise PipelineError(f"{path}: not a Zarr v3 store ({exc})") from None
    if mode != "r" and "format" not in root.attrs:
        root.update_attributes({"format": FORMAT_NAME, "format_version": FORMAT_VERSION})
    elif root.attrs.get("format") != FORMAT_NAME:
        raise PipelineError(f"{path}: not a pipeline store (no format attribute {FORMAT_NAME!r})")
    return root


def image_names(root: zarr.Group) -> list[str]:
    """Names of the image groups in a store, sorted."""
    return sorted(root.group_keys())


def existing_status(root: zarr.Group, name: str, wanted: dict[str, Any]) -> str:
    """What a job should do with image ``name`` given the settings ``wanted`` it would record.

    Returns ``"absent"``, ``"incomplete"`` (a group left by an interrupted run), or ``"complete"``
    when a complete image with the same settings exists. Raises :class:`PipelineError` when a
    complete image with other settings exists (the caller decides whether to overwrite).
    """
    if name not in root:
        return "absent"
    attrs = dict(root[name].attrs)
    if attrs.get("status") != "complete":
        return "incomplete"
    changed = [key for key in REUSE_KEYS if attrs.get(key) != wanted.get(key)]
    if changed:
        raise PipelineError(
            f"{name}: already stored with other settings ({', '.join(changed)}); "
            "use --overwrite to replace it"
        )
    return "complete"


def create_image(
    root: zarr.Group,
    name: str,
    shape: tuple[int, int],
    chunks: tuple[int, int],
    colors: int,
    attrs: dict[str, Any],
) -> zarr.Array:
    """(Re)create image group ``name`` with status ``"writing"`` and an empty ``labels`` array.

    Labels are chunked like the work (``chunks``: every dask block then covers whole Zarr
    chunks, so no two tasks write one chunk), zstd-compressed, and every chunk is written even
    when it is all zeros, so a chunk's presence means it was written.
    """
    from pipeline.assign import label_dtype

    group = root.create_group(
        name,
        overwrite=True,
        attributes={  # one metadata write (attrs.update writes it once per key)
            **attrs,
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "package_version": _version(),
            "status": "writing",
        },
    )
    return group.create_array(
        "labels",
        shape=shape,
        chunks=chunks,
        dtype=label_dtype(colors),
        compressors=ZstdCodec(level=ZSTD_LEVEL),
        fill_value=0,
        dimension_names=("y", "x"),
        config={"write_empty_chunks": True},
    )


def block_regions(image: da.Array) -> list[tuple[slice, slice]]:
    """(rows, columns) region of each block of a dask image, in ``to_delayed().ravel()`` order."""
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in image.chunks[:2]]
    return [
        (slice(int(r0), int(r1)), slice(int(c0), int(c1)))
        for r0, r1 in zip(starts[0][:-1], starts[0][1:], strict=True)
        for c0, c1 in zip(starts[1][:-1], starts[1][1:], strict=True)
    ]


def write_labels(target: zarr.Array, region: tuple[slice, slice], labels: NDArray[Any]) -> None:
    """Write one block of labels; ``region`` must cover whole chunks of ``target``."""
    target[region] = labels


def remove_image(root: zarr.Group, name: str) -> None:
    """Delete image group ``name`` (used for images that failed while being written)."""
    if name in root:
        del root[name]


def finalize(
    path: str, name: str, palette: NDArray[np.uint8], attrs: dict[str, Any]
) -> dict[str, Any]:
    """Write the palette and the final attributes, then mark image ``name`` complete.

    Call only after every labels chunk is written. Adds ``stored_bytes`` (palette + labels chunks,
    compressed) and ``ratio`` (``raw_bytes`` / ``stored_bytes``) to ``attrs["metrics"]``.

    Returns
    -------
    dict
        All attributes of the image group, as stored.
    """
    group = zarr.open_group(path, mode="r+", zarr_format=3, path=name)
    stored = group.create_array(
        "palette",
        data=palette,
        chunks=palette.shape,
        compressors=ZstdCodec(level=ZSTD_LEVEL),
        dimension_names=("color", "channel"),
        overwrite=True,
    )
    labels = group["labels"]
    assert isinstance(labels, zarr.Array)
    nbytes = int(stored.nbytes_stored() + labels.nbytes_stored())
    metrics = dict(attrs.get("metrics", {}))
    metrics.update(stored_bytes=nbytes, ratio=metrics.get("raw_bytes", 0) / nbytes)
    # one write of the group's metadata, after every chunk and the palette
    group.update_attributes({**attrs, "metrics": metrics, "status": "complete"})
    return dict(group.attrs)


@dataclass(frozen=True)
class StoredImage:
    """One complete image of a store, opened for reading.

    Attributes
    ----------
    name : str
    palette : ndarray of uint8, shape (k, 3)
    labels : zarr.Array
        (H, W) uint8 or uint16, read lazily.
    attrs : dict
        The image group's attributes (source, settings, fit details, metrics).
    """

    name: str
    palette: NDArray[np.uint8]
    labels: zarr.Array
    attrs: dict[str, Any]


def read_image(root: zarr.Group, name: str) -> StoredImage:
    """Open image ``name``; raises :class:`PipelineError` unless it is complete."""
    if name not in root:
        raise PipelineError(f"{name}: no such image in the store")
    group = root[name]
    assert isinstance(group, zarr.Group)
    attrs = dict(group.attrs)
    if attrs.get("status") != "complete":
        raise PipelineError(
            f"{name}: incomplete (status {attrs.get('status')!r}); run the job again"
        )
    labels, palette = group["labels"], group["palette"]
    assert isinstance(labels, zarr.Array)
    assert isinstance(palette, zarr.Array)
    return StoredImage(name=name, palette=np.asarray(palette[...]), labels=labels, attrs=attrs)
