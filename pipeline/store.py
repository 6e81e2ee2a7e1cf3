"""The Zarr v3 store: one group per image holding ``palette``, ``labels`` and attributes.

The layout is documented in ``docs/store-format.md`` (format version :data:`FORMAT_VERSION`) and
can be read with zarr-python alone. An image's ``status`` attribute is ``"writing"`` from the
moment its group is created and becomes ``"complete"`` only in :func:`finalize`, after every
labels chunk and the palette are written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import ZstdCodec

from pipeline.errors import PipelineError
from pipeline.paths import filesystem, is_url, join, zarr_store

#: Version of the store layout described in docs/store-format.md.
FORMAT_VERSION = 2
#: Value of the ``format`` attribute of the root group and of each image group.
FORMAT_NAME = "pipeline.palette-image"
#: zstd level of labels and palette chunks.
ZSTD_LEVEL = 3
#: Settings that must match for an existing complete image to be reused rather than rewritten
#: (with the source's path, ``source.path``).
REUSE_KEYS = ("colors_requested", "sample_size_requested", "seed", "fit_settings")
#: Group of the store root holding the job's bookkeeping; image group names never start with
#: ``.`` (see :mod:`pipeline.names`), so it is never taken for an image.
META = ".pipeline"
#: Group of completion markers: one empty group ``<digest>-<name>`` per complete image, written
#: after the image is marked complete, so that listing it tells a rerun what is done. Markers
#: are Zarr groups (one small ``zarr.json`` each) so that the store holds Zarr nodes only.
COMPLETE = META + "/complete"
#: The metadata document of an empty group without attributes.
EMPTY_GROUP = b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'
#: What the bookkeeping group says of itself.
META_NOTE = "job bookkeeping (completion markers); not an image"
#: Hex digits of the settings digest in a marker's name.
DIGEST_CHARS = 16


def _version() -> str:
    from pipeline import __version__

    return __version__


def open_root(path: str, mode: Literal["r", "r+", "a"] = "r") -> zarr.Group:
    """Open the store's root group; ``mode="a"`` creates it (with its format attributes).

    Opened for writing, a version-1 store gets the bookkeeping group (:data:`META`) and becomes
    version 2; its images are unchanged.
    """
    try:
        root = zarr.open_group(zarr_store(path), mode=mode, zarr_format=3)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such store") from None
    except Exception as exc:
        raise PipelineError(f"{path}: not a Zarr v3 store ({exc})") from None
    if mode != "r" and "format" not in root.attrs:
        root.update_attributes({"format": FORMAT_NAME})
    elif root.attrs.get("format") != FORMAT_NAME:
        raise PipelineError(f"{path}: not a pipeline store (no format attribute {FORMAT_NAME!r})")
    if mode != "r" and root.attrs.get("format_version") != FORMAT_VERSION:
        meta = zarr.open_group(zarr_store(path), path=META, mode="a", zarr_format=3)
        meta.update_attributes({"pipeline": META_NOTE})
        meta.require_group("complete")
        root.update_attributes({"format_version": FORMAT_VERSION})
    return root


def image_names(root: zarr.Group) -> list[str]:
    """Names of the image groups in a store, sorted (the bookkeeping group left out)."""
    return sorted(name for name in root.group_keys() if not name.startswith("."))


def reuse_values(source_path: str, settings: Any) -> dict[str, Any]:
    """What must match for a stored image to be reused: its source and the settings shaping it.

    ``source_path`` as recorded (:func:`pipeline.paths.location`); ``settings`` a
    :class:`pipeline.config.Settings`.
    """
    return {
        "source_path": source_path,
        "colors_requested": settings.colors,
        "sample_size_requested": settings.sample,
        "seed": settings.seed,
        "fit_settings": settings.fit_settings(),
    }


def digest(values: dict[str, Any]) -> str:
    """Short stable digest of :func:`reuse_values` (part of a completion marker's name)."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:DIGEST_CHARS]


def marker(store: str, name: str, key: str) -> str:
    """Path of the completion marker of image ``name`` stored with settings digest ``key``."""
    return join(store, f"{COMPLETE}/{key}-{name}")


def write_marker(store: str, name: str, key: str) -> None:
    """Record that image ``name`` is complete (after its status says so)."""
    _write_group(marker(store, name, key), EMPTY_GROUP)


def _write_group(group: str, document: bytes) -> None:
    """Write ``document`` as the ``zarr.json`` of the group at path or URL ``group``."""
    fs, path = filesystem(group)
    if not is_url(group):  # object stores have no folders to make (and would ask for each)
        fs.makedirs(path, exist_ok=True)
    fs.pipe_file(join(path, "zarr.json"), document)


def remove_marker(store: str, name: str, key: str) -> None:
    """Forget that image ``name`` was complete (before its group is written again)."""
    fs, path = filesystem(marker(store, name, key))
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


@dataclass(frozen=True)
class Listing:
    """What one listing of a store tells, without reading any image's metadata.

    Attributes
    ----------
    groups : set of str
        Names of the image groups present (complete or not).
    complete : dict
        Image name -> settings digest of its completion marker (see :func:`marker`).
    root : bool
        Whether the store's root ``zarr.json`` exists.
    """

    groups: frozenset[str]
    complete: dict[str, str]
    root: bool = False


def list_store(store: str) -> Listing:
    """List the image groups and completion markers of ``store`` (empty if it does not exist).

    Two listings (paged by the filesystem: on S3 one request per 1,000 names), whatever the
    number of images.
    """
    fs, root = filesystem(store)
    fs.invalidate_cache(root)
    try:
        top = fs.ls(root, detail=True)
    except FileNotFoundError:
        return Listing(frozenset(), {})
    names = {entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in top}
    groups = frozenset(
        name
        for entry in top
        if entry["type"] == "directory"
        and not (name := entry["name"].rstrip("/").rsplit("/", 1)[-1]).startswith(".")
    )
    try:
        marks = fs.ls(join(root, COMPLETE), detail=True)
    except FileNotFoundError:
        marks = []
    complete = {}
    for entry in marks:
        base = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["type"] != "directory":
            continue
        if len(base) > DIGEST_CHARS and base[DIGEST_CHARS] == "-":
            complete[base[DIGEST_CHARS + 1 :]] = base[:DIGEST_CHARS]
    return Listing(groups, complete, root="zarr.json" in names)


def prepare(store: str, listing: Listing) -> None:
    """Make ``store`` ready to write images into: create it, or open it for writing.

    A store its ``listing`` shows without a root gets its root and bookkeeping groups as three
    metadata documents (three requests on object storage, where zarr's group creation looks
    for each node and its parents first); an existing one is opened as by :func:`open_root`.
    """
    if listing.root:
        open_root(store, mode="a")
        return
    _write_group(store, _group_document({"format": FORMAT_NAME, "format_version": FORMAT_VERSION}))
    _write_group(join(store, META), _group_document({"pipeline": META_NOTE}))
    _write_group(join(store, COMPLETE), EMPTY_GROUP)


def _group_document(attributes: dict[str, Any]) -> bytes:
    """The ``zarr.json`` of a Zarr v3 group with ``attributes``."""
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes}).encode()


def existing_status(root: zarr.Group, name: str, wanted: dict[str, Any]) -> str:
    """What a job should do with image ``name`` given the :func:`reuse_values` ``wanted``.

    Reads the image's metadata: for images the listing cannot vouch for (stores written before
    completion markers, or an image whose marker was not written). Returns ``"absent"``,
    ``"incomplete"`` (a group left by an interrupted run), or ``"complete"`` when a complete
    image with the same settings exists. Raises :class:`PipelineError` when a complete image
    with other settings exists (the caller decides whether to overwrite).
    """
    if name not in root:
        return "absent"
    attrs = dict(root[name].attrs)
    if attrs.get("status") != "complete":
        return "incomplete"
    stored = {**{key: attrs.get(key) for key in REUSE_KEYS}, "source_path": _source_path(attrs)}
    changed = [key for key in stored if stored[key] != wanted.get(key)]
    if changed:
        raise PipelineError(
            f"{name}: already stored with other settings ({', '.join(changed)}); "
            "use --overwrite to replace it"
        )
    return "complete"


def _source_path(attrs: dict[str, Any]) -> Any:
    source = attrs.get("source")
    return source.get("path") if isinstance(source, dict) else None


def create_image(
    store: str,
    name: str,
    shape: tuple[int, int],
    chunks: tuple[int, int],
    colors: int,
    attrs: dict[str, Any],
    *,
    fresh: bool = False,
) -> zarr.Array:
    """(Re)create image group ``name`` with status ``"writing"`` and an empty ``labels`` array.

    ``fresh``: the store's listing had no such group, so there is nothing to delete first (on
    object storage deleting a prefix is a listing and a request per object); if one exists
    after all, zarr refuses and the image fails.

    Labels are chunked like the work (``chunks``: every dask block then covers whole Zarr
    chunks, so no two tasks write one chunk), zstd-compressed, and every chunk is written even
    when it is all zeros, so a chunk's presence means it was written.
    """
    from pipeline.assign import label_dtype

    group = zarr.create_group(
        zarr_store(store),
        path=name,
        zarr_format=3,
        overwrite=not fresh,
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


def block_regions(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[slice, slice]]:
    """(rows, columns) region of each block of a dask-style chunking, in row-major order."""
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in chunks[:2]]
    return [
        (slice(int(r0), int(r1)), slice(int(c0), int(c1)))
        for r0, r1 in zip(starts[0][:-1], starts[0][1:], strict=True)
        for c0, c1 in zip(starts[1][:-1], starts[1][1:], strict=True)
    ]


def write_labels(target: zarr.Array, region: tuple[slice, slice], labels: NDArray[Any]) -> None:
    """Write one block of labels; ``region`` must cover whole chunks of ``target``."""
    target[region] = labels


def remove_image(store: str, name: str) -> None:
    """Delete image group ``name`` (used for images that failed while being written)."""
    fs, path = filesystem(join(store, name))
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


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
    group = zarr.open_group(zarr_store(path), mode="r+", zarr_format=3, path=name)
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
