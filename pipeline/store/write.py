"""The Zarr v3 store: one group per image holding ``palette``, ``labels`` and attributes.

The layout is documented in ``docs/store-format.md`` (format version :data:`FORMAT_VERSION`) and
can be read with zarr-python alone. An image's ``status`` attribute is ``"writing"`` from the
moment its group is created and becomes ``"complete"`` only in :func:`finalize`, after every
labels chunk, every chunk of the labels' pyramid (:mod:`pipeline.store.ngff`) and the palette are
written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import lzma
import os
import re
import shutil
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import ContainsGroupError

from pipeline.errors import PipelineError
from pipeline.paths import create_unique
from pipeline.results import brief
from pipeline.store import ngff
from pipeline.store.fence import FencedStore, Interfered, create_file, create_objects
from pipeline.store.location import Location

#: Version of the store layout described in docs/store-format.md.
FORMAT_VERSION = 4
#: First format version whose images have a labels pyramid and OME-NGFF metadata.
PYRAMID_VERSION = 3
#: First format version whose images no longer than :data:`pipeline.store.ngff.WHOLE_SIDE`
#: have no pyramid.
WHOLE_VERSION = 4
#: Value of the ``format`` attribute of the root group and of each image group.
FORMAT_NAME = "pipeline.palette-image"
#: zstd level of labels and palette chunks: on photo8's labels 3% smaller than level 3 for
#: twice its encode time (127 against 253 MP/s in one thread; the 100-MP JPEG job ~5% slower);
#: level 7 saves 5% for a job 30% slower (benchmarks/README.md, "store bytes").
ZSTD_LEVEL = 5
#: Codecs after the array-to-bytes step of both arrays: zstd, then a CRC-32C of the compressed
#: chunk (Zarr v3's core ``crc32c`` codec), so that every reader notices a damaged chunk.
COMPRESSORS = (ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec())
#: LZMA2 of the ``archival`` compression, raw (no .xz container): the strongest preset, and
#: for labels (one byte or two per pixel, no text) 4 literal context bits and no position
#: bits; on photo8's labels 12% smaller than zstd level 5, 3% smaller than zstd 19
#: (benchmarks/README.md, "store bytes").
LZMA_FILTERS = (
    {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 4, "lp": 0, "pb": 0},
)
#: What zarr-python says of every array with a numcodecs codec, when it is made and each time
#: it is opened; archival stores use one on purpose (docs/store-format.md), so it is not shown.
NUMCODECS_WARNING = "Numcodecs codecs are not in the Zarr version 3 specification"
warnings.filterwarnings("ignore", message=NUMCODECS_WARNING)
#: The compression of images recorded before the ``compression`` attribute (all zstd).
PORTABLE = "portable"
#: The compression for the smallest store: LZMA, and no colour table in the OME-NGFF metadata.
ARCHIVAL = "archival"
#: Hash of the ``digests`` attribute (see :func:`chunk_digest`).
DIGEST_ALGORITHM = "sha256"
#: Settings that must match for an existing complete image to be reused rather than rewritten
#: (with the source's path, ``source.path``).
REUSE_KEYS = ("colors_requested", "sample_size_requested", "seed", "fit_settings")
#: Group of the store root holding the job's bookkeeping; image group names never start with
#: ``.`` (see :mod:`pipeline.inputs.names`), so it is never taken for an image.
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
#: Largest metadata document (a ``zarr.json``) readers parse; a larger one is damaged, and is
#: refused without being read whole. The largest is an image group's with 65,536 colours, nearly
#: all of it the OME-NGFF colour table (``ome``): 3.1 MB as :func:`finalize` writes it (compact,
#: 47 bytes per palette entry), 11.1 MB indented as zarr writes attributes (170 bytes per entry);
#: array documents are under 1 KB.
MAX_DOCUMENT_BYTES = 16 << 20
#: What readers say of an image name where the store's root holds a file instead of a group.
STRAY_FILE = "a file where an image group should be; run the job again on its input to redo it"
#: What readers say of an image whose completion marker remains without its group.
GROUP_GONE = "image group missing (its completion marker remains); run the job again to redo it"


def compressors(compression: str) -> tuple[Any, ...]:
    """The codecs after the array-to-bytes step of the arrays of ``compression``.

    ``"portable"``: :data:`COMPRESSORS`; ``"archival"``: LZMA (:data:`LZMA_FILTERS`, zarr's
    ``numcodecs.lzma``), then the same CRC-32C.
    """
    if compression == PORTABLE:
        return COMPRESSORS
    from zarr.codecs.numcodecs import LZMA

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NUMCODECS_WARNING)
        return (LZMA(format=lzma.FORMAT_RAW, filters=list(LZMA_FILTERS)), Crc32cCodec())


def viewer_colours(attrs: dict[str, Any]) -> bool:
    """Whether the ``ome`` metadata of an image with ``attrs`` holds its colour table.

    Every image but an archival one (:data:`ARCHIVAL`: the smallest store; the table takes
    ~40 bytes a colour, as much as its labels' chunks on a small image).
    """
    return attrs.get("compression", PORTABLE) != ARCHIVAL


def _version() -> str:
    from pipeline import __version__

    return __version__


def open_root(store: Location, mode: Literal["r", "r+", "a"] = "r") -> zarr.Group:
    """Open the store's root group; ``mode="a"`` creates it (with its format attributes).

    Opened for writing, an older store gets the bookkeeping group (:data:`META`) if it has
    none and becomes version :data:`FORMAT_VERSION`; its images are unchanged.
    """
    try:
        root = zarr.open_group(store.zarr, mode=mode, zarr_format=3)
    except FileNotFoundError:
        raise PipelineError(f"{store}: no such store") from None
    except Exception as exc:
        raise PipelineError(f"{store}: not a Zarr v3 store ({exc})") from None
    if mode != "r" and "format" not in root.attrs:
        root.update_attributes({"format": FORMAT_NAME})
    elif root.attrs.get("format") != FORMAT_NAME:
        raise PipelineError(f"{store}: not a pipeline store (no format attribute {FORMAT_NAME!r})")
    if mode != "r" and root.attrs.get("format_version") != FORMAT_VERSION:
        meta = zarr.open_group(store.zarr, path=META, mode="a", zarr_format=3)
        meta.update_attributes({"pipeline": META_NOTE})
        meta.require_group("complete")
        root.update_attributes({"format_version": FORMAT_VERSION})
    return root


def reuse_values(source_path: str, settings: Any, frame: int | None = None) -> dict[str, Any]:
    """What must match for a stored image to be reused: its source and the settings shaping it.

    ``source_path`` as recorded (:func:`pipeline.paths.location`); ``settings`` a
    :class:`pipeline.settings.Settings`; ``frame`` the frame or page of the file the image is
    (0-based, as its ``source.frame`` records it). A frame other than the first is one of the
    values (``source_frame``); the first is left out, so that a file's first frame has the values
    (and digest) it had before frames were recorded, whatever the image is named.
    """
    values = {
        "source_path": source_path,
        "colors_requested": settings.colors,
        "sample_size_requested": settings.sample,
        "seed": settings.seed,
        "fit_settings": settings.fit_settings(),
    }
    if frame:
        values["source_frame"] = frame
    return values


def digest(values: dict[str, Any]) -> str:
    """Short stable digest of :func:`reuse_values` (part of a completion marker's name)."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:DIGEST_CHARS]


def marker(name: str, tag: str) -> str:
    """Node path of the completion marker ``<tag>-<name>`` of image ``name`` in its store.

    ``tag`` is the settings digest, followed by ``.`` and the number of chunks of the labels
    and their pyramid for markers written since checksums (:func:`marker_tag`).
    """
    return f"{COMPLETE}/{tag}-{name}"


def marker_tag(key: str, chunks: int) -> str:
    """The tag of a completion marker: settings digest ``key`` and the label chunks written.

    ``chunks`` counts the chunks of ``labels`` and of every level of its pyramid.
    """
    return f"{key}.{chunks}"


def tag_digest(tag: str) -> str:
    """The settings digest of a marker's tag."""
    return tag[:DIGEST_CHARS]


def write_marker(store: Location, name: str, tag: str) -> None:
    """Record that image ``name`` is complete (after its status says so)."""
    write_group(store, marker(name, tag), EMPTY_GROUP)


def write_group(store: Location, node: str, document: bytes) -> None:
    """Write ``document`` whole as the ``zarr.json`` of group ``node`` (``""``: the root).

    An object store puts an object whole. Locally, a new group is made in a hidden folder
    beside it and renamed into place, and an existing group's document is replaced by
    renaming a complete file over it, so that a full disk or a killed process never leaves a
    group folder (a completion marker, the store's root) without its document, or with half
    of one.
    """
    group = store.path(node) if node else store.root
    if not store.local:  # object stores have no folders to make (and would ask for each)
        store.guard()
        store.fs.pipe_file(f"{group}/zarr.json", document)
        return
    if os.path.isdir(group):
        staged = os.path.join(group, f".zarr.json.{uuid.uuid4().hex}")
        try:
            with open(staged, "wb") as file:
                file.write(document)
            store.guard()
            os.replace(staged, os.path.join(group, "zarr.json"))
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(staged)
            raise
        return
    _new_folder(store, group, {"zarr.json": document})


def _new_folder(store: Location, path: str, files: dict[str, bytes]) -> None:
    """Make local folder ``path`` whole, holding ``files`` (path inside it -> bytes), at once.

    Written into a new hidden folder beside ``path`` (which listings skip), then, the fence
    checked, renamed into place: a rename that fails where a folder holding files exists
    already (:class:`FileExistsError`), so it never replaces one. The parent is made if need
    be. Nothing is left behind when it fails.
    """
    parent, base = os.path.split(path)
    try:
        folder = create_unique(parent, f".{base}.", folder=True)
    except FileNotFoundError:  # the store's folder itself is gone or not made yet
        os.makedirs(parent, exist_ok=True)
        folder = create_unique(parent, f".{base}.", folder=True)
    try:
        _fill_folder(folder, files)
        store.guard()
        try:
            os.rename(folder, path)
        except OSError as exc:
            if not os.path.isdir(path):
                raise
            raise FileExistsError(errno.EEXIST, "made meanwhile", path) from exc
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


#: Flags of a file made new in a hidden folder: never one that exists.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _fill_folder(folder: str, files: dict[str, bytes]) -> None:
    """Write ``files`` (path inside ``folder`` -> bytes) into the new, empty local ``folder``.

    Paths are resolved from a descriptor of ``folder`` and each file is written by one
    ``write`` on its descriptor, without Python's buffered file objects (which add a
    ``fstat``, an ``ioctl`` and a ``lseek`` per file): for a thumbnail's group, 0.75 ms
    against 0.6 ms on this machine's ext4.
    """
    top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        made = {""}
        for inner, data in files.items():
            parts = inner.split("/")
            for depth in range(1, len(parts)):  # each folder made once, parents first
                here = "/".join(parts[:depth])
                if here not in made:
                    os.mkdir(here, dir_fd=top)
                    made.add(here)
            file = os.open(inner, _NEW_FILE, 0o666, dir_fd=top)
            try:
                view = memoryview(data)
                while view:  # a regular file takes all at once, unless the disk is full
                    view = view[os.write(file, view) :]
            finally:
                os.close(file)
    finally:
        os.close(top)


def remove_marker(store: Location, name: str, tag: str) -> None:
    """Forget that image ``name`` was complete (before its group is written again)."""
    store.guard()
    with contextlib.suppress(FileNotFoundError):
        store.fs.rm(store.path(marker(name, tag)), recursive=True)


@dataclass(frozen=True)
class Listing:
    """What one listing of a store tells, without reading any image's metadata.

    Attributes
    ----------
    groups : set of str
        Names of the image groups present (complete or not).
    complete : dict
        Image name -> tag of its completion marker (see :func:`marker`).
    root : bool
        Whether the store's root ``zarr.json`` exists.
    damaged : dict
        Image name -> what is wrong with it, as far as the listing shows: for images whose
        marker says how many label chunks they hold (``labels`` and its pyramid), a metadata
        document missing or larger than :data:`MAX_DOCUMENT_BYTES`, a chunk missing, or a chunk
        emptied to 0 bytes; for names of :attr:`strays` and of markers without a group, that.
    links : set of str
        Entries of the root that are symbolic links: never read as images.
    strays : set of str
        Files of the root where image groups would be (names not starting with ``.``).
    staged : set of str
        What a process stopped while writing left staged, hidden (:func:`is_staged`): paths of
        the root and of the completion markers' folder, relative to the root; removed by the
        next job (:func:`prepare`).
    """

    groups: frozenset[str]
    complete: dict[str, str]
    root: bool = False
    damaged: dict[str, str] = field(default_factory=dict)
    links: frozenset[str] = frozenset()
    strays: frozenset[str] = frozenset()
    staged: frozenset[str] = frozenset()

    @property
    def names(self) -> frozenset[str]:
        """Every name readers show: image groups, links, and what :attr:`damaged` names."""
        return self.groups | self.links | self.damaged.keys()


def list_store(store: Location) -> Listing:
    """List the image groups and completion markers of ``store`` (empty if it does not exist).

    The root and the markers are one listing each, and the files of every image one listing of
    the whole store (paged by the filesystem: on S3 one request per 1,000 objects; a walk of
    the folders of a local store), whatever the number of images. Files are looked at image by
    image as the walk goes, so memory does not grow with the store. A file of the root where an
    image group would be, and a completion marker whose group is gone, are damaged images too.
    """
    fs, root, local = store.fs, store.root, store.local
    fs.invalidate_cache(root)
    try:
        top = dict(_entries(fs, root, local))
    except FileNotFoundError:
        return Listing(frozenset(), {})
    groups = frozenset(n for n, kind in top.items() if kind == "directory" and n[0] != ".")
    links = frozenset(n for n, kind in top.items() if kind == "link")
    strays = frozenset(
        n for n, kind in top.items() if kind == "file" and n[0] != "." and n != "zarr.json"
    )
    try:
        marks = list(_entries(fs, store.path(COMPLETE), local))
    except FileNotFoundError:
        marks = []
    complete = {}
    for base, kind in marks:
        if kind == "directory" and (parsed := _parse_marker(base)) is not None:
            complete[parsed[1]] = parsed[0]
    staged = (
        frozenset(n for n in top if is_staged(n))
        | frozenset(f"{COMPLETE}/{n}" for n, _ in marks if is_staged(n))
        if local  # object stores stage nothing
        else frozenset()
    )
    expected = {
        name: int(tag[DIGEST_CHARS + 1 :])
        for name, tag in complete.items()
        if name in groups and len(tag) > DIGEST_CHARS
    }
    damaged = dict.fromkeys(complete.keys() - groups - links - strays, GROUP_GONE)
    damaged.update(dict.fromkeys(strays, STRAY_FILE))
    if expected:
        files = _walk(root) if local else _find(fs, root)
        for name, found in _by_image(files, expected):
            problem = _lacking(found, expected[name])
            if problem:
                damaged[name] = problem
    return Listing(groups, complete, top.get("zarr.json") == "file", damaged, links, strays, staged)


#: Names of what is staged in a local store's folder: a new group's hidden folder
#: (:func:`_new_folder`: ``.NAME.`` and 8 hex digits) or a group document replacing another
#: (:func:`write_group`: ``.zarr.json.`` and 32).
_STAGED = re.compile(r"\.(?:.+\.[0-9a-f]{8}|zarr\.json\.[0-9a-f]{32})")


def is_staged(name: str) -> bool:
    """Whether ``name``, an entry of a local store's folder, is something a job staged there.

    Listings skip such hidden entries; one is left behind only by a process stopped between
    staging and renaming it into place.
    """
    # the first character alone rules out a store's images (a million names: 0.38 -> 0.21 s)
    return name[:1] == "." and _STAGED.fullmatch(name) is not None


def _entries(fs: Any, path: str, local: bool) -> Iterator[tuple[str, str]]:
    """(name, ``"directory"``, ``"file"`` or ``"link"``) of each entry of a folder or prefix.

    Local folders are read with ``os.scandir`` (no stat of each entry: a store's root may hold
    millions of groups); other filesystems list as fsspec does.
    """
    if local:
        with os.scandir(path) as found:
            for entry in found:
                kind = "directory" if entry.is_dir(follow_symlinks=False) else "file"
                yield entry.name, "link" if entry.is_symlink() else kind
        return
    for info in fs.ls(path, detail=True):
        kind = "link" if info.get("islink") else info["type"]
        yield info["name"].rstrip("/").rsplit("/", 1)[-1], kind


def _parse_marker(base: str) -> tuple[str, str] | None:
    """(tag, image name) of a marker named ``<digest>[.<chunks>]-<name>``, else None."""
    head, sep, name = base.partition("-")
    digest_part, dot, chunks = head.partition(".")
    valid = (
        sep
        and name
        and len(digest_part) == DIGEST_CHARS
        and (not dot or (chunks.isdigit() and len(chunks) < 12))
    )
    return (head, name) if valid else None


#: The documents every image's folder holds besides chunks (those of pyramid levels aside).
_DOCUMENTS = ("zarr.json", "labels/zarr.json", "palette/zarr.json")


def _walk(root: str) -> Iterator[tuple[str, int]]:
    """(path relative to ``root``, size) of the files of a local store, folder by folder.

    Never follows a symbolic link; skips the bookkeeping group.
    """
    stack = [""]
    while stack:
        relative = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, relative)))
        except OSError:
            continue
        for entry in entries:
            path = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_dir(follow_symlinks=False):
                if relative or not entry.name.startswith("."):
                    stack.append(path)
            elif entry.is_file(follow_symlinks=False) and relative:
                # only the sizes of chunks (0 bytes: emptied) and of metadata documents (too
                # large to read) matter; a stat costs a system call
                sized = "/c/" in path or entry.name == "zarr.json"
                yield path, entry.stat(follow_symlinks=False).st_size if sized else 1


def _find(fs: Any, root: str) -> Iterator[tuple[str, int]]:
    """(path relative to ``root``, size) of the objects of a store behind a URL, sorted."""
    prefix = root.rstrip("/") + "/"
    for path, info in sorted(fs.find(root, detail=True).items()):
        relative = path[len(prefix) :] if path.startswith(prefix) else path
        if "/" in relative and not relative.startswith("."):
            yield relative, int(info.get("size") or 0)


@dataclass
class _Found:
    """The files of one image, as a listing sees them.

    ``chunks`` counts the chunks of each label array (``labels`` and its pyramid levels) by
    name; ``documents`` holds the metadata documents found, by path inside the image;
    ``oversized`` names one larger than :data:`MAX_DOCUMENT_BYTES`.
    """

    documents: set[str] = field(default_factory=set)
    chunks: dict[str, int] = field(default_factory=dict)
    palette: int = 0
    empty: str | None = None
    oversized: str | None = None


def _by_image(
    files: Iterable[tuple[str, int]], wanted: dict[str, int]
) -> Iterator[tuple[str, _Found]]:
    """What each image of ``wanted`` holds, from ``files`` given image by image.

    Files of one image come together (a walk or a sorted listing); images of ``wanted`` with
    no file at all are given last, empty.
    """
    current: tuple[str, _Found] | None = None
    seen: set[str] = set()
    for path, size in files:
        name, _, inner = path.partition("/")
        if name not in wanted:
            continue
        if current is None or current[0] != name:
            if current is not None:
                yield current
            current = (name, _Found())
            seen.add(name)
        found = current[1]
        array, _, rest = inner.partition("/")
        labels = ngff.level_of(array) is not None
        if rest == "zarr.json" or inner == "zarr.json":
            found.documents.add(inner)
            if size > MAX_DOCUMENT_BYTES and found.oversized is None:
                found.oversized = inner
        elif rest.startswith("c/") and (labels or array == "palette"):
            if labels:
                found.chunks[array] = found.chunks.get(array, 0) + 1
            else:
                found.palette += 1
            if size == 0 and found.empty is None:
                found.empty = inner
    if current is not None:
        yield current
    for name in wanted.keys() - seen:
        yield name, _Found()


def _lacking(found: _Found, chunks: int) -> str | None:
    """What an image holding ``found`` lacks, given its marker's ``chunks``; None if whole."""
    documents = [*_DOCUMENTS, *(f"{array}/zarr.json" for array in sorted(found.chunks))]
    missing = [doc for doc in dict.fromkeys(documents) if doc not in found.documents]
    if missing:
        return f"metadata missing ({', '.join(missing)})"
    if found.oversized is not None:
        return oversized(found.oversized)
    held = sum(found.chunks.values())
    if held < chunks:
        return f"{chunks - held} of {chunks} labels chunks missing"
    if found.palette < 1:
        return "palette chunk missing"
    if found.empty is not None:
        return f"chunk {found.empty} is empty (0 bytes)"
    return None


def oversized(document: str) -> str:
    """The problem of a metadata ``document`` larger than :data:`MAX_DOCUMENT_BYTES`."""
    return f"metadata larger than {MAX_DOCUMENT_BYTES:,} bytes ({document}); not read"


def prepare(store: Location, listing: Listing) -> None:
    """Make ``store`` ready to write images into: create it, or open it for writing.

    A store its ``listing`` shows without a root gets its root and bookkeeping groups as three
    metadata documents (three requests on object storage, where zarr's group creation looks
    for each node and its parents first); an existing one is opened as by :func:`open_root`,
    and what a stopped job left staged in it (:attr:`Listing.staged`) is removed: the caller
    holds the store's lease, so no job that could still rename it into place is writing.
    """
    if listing.root:
        open_root(store, mode="a")
        for path in listing.staged:  # a stopped job's: no live job writes them any more
            target = store.path(path)
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                else:
                    os.remove(target)
        return
    root = group_document({"format": FORMAT_NAME, "format_version": FORMAT_VERSION})
    write_group(store, "", root)
    write_group(store, META, group_document({"pipeline": META_NOTE}))
    write_group(store, COMPLETE, EMPTY_GROUP)


def group_document(attributes: dict[str, Any]) -> bytes:
    """The ``zarr.json`` of a Zarr v3 group with ``attributes``."""
    document = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    return json.dumps(document, separators=(",", ":")).encode()


def create_image(
    store: Location,
    name: str,
    shape: tuple[int, int],
    chunks: tuple[int, int],
    colors: int,
    attrs: dict[str, Any],
    *,
    compression: str = PORTABLE,
    fresh: bool = False,
) -> zarr.Array:
    """(Re)create image group ``name`` with status ``"writing"`` and empty label arrays.

    ``compression`` (:data:`PORTABLE` or :data:`ARCHIVAL`, :func:`compressors`) is recorded
    as the ``compression`` attribute; the palette is written with it too (:func:`finalize`).

    ``fresh``: the store's listing had no such group, so there is nothing to delete first (on
    object storage deleting a prefix is a listing and a request per object); if one exists
    after all, zarr refuses and the image fails.

    Labels are chunked like the work (``chunks``: every dask block then covers whole Zarr
    chunks, so no two tasks write one chunk), cut to the image on a side it is smaller than a
    chunk (:func:`stored_chunks`: no padding to compress), compressed, and every chunk is
    written even when it is all zeros, so a chunk's presence means it was written. The levels of
    their pyramid (:mod:`pipeline.store.ngff`) are made alike, empty, beside them.

    Returns
    -------
    zarr.Array
        The ``labels`` array.
    """
    from pipeline.quantize.assign import label_dtype

    attributes = created_attributes(attrs, compression)  # one write (not one per key)
    make = functools.partial(
        zarr.create_group, store.zarr, path=name, zarr_format=3, attributes=attributes
    )
    try:
        group = make(overwrite=not fresh)
    except ContainsGroupError:  # made since the listing (by a job that lost the store)
        group = make(overwrite=True)
    chunks = stored_chunks(shape, chunks)
    arrays = [
        create_level(
            group, level, ngff.level_shape(shape, level), chunks, label_dtype(colors), compression
        )
        for level in range(ngff.level_count(shape, chunks))
    ]
    return arrays[0]


def created_attributes(attrs: dict[str, Any], compression: str) -> dict[str, Any]:
    """The attributes of an image group as it is created (status ``"writing"``)."""
    return {
        **attrs,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": _version(),
        "compression": compression,
        "status": "writing",
    }


def create_level(
    group: zarr.Group,
    level: int,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: Any,
    compression: str,
) -> zarr.Array:
    """The empty labels array of pyramid ``level`` (0: the labels) in image ``group``.

    Every chunk is written, even all zeros (``write_empty_chunks``), so that a chunk's
    presence says it was written.
    """
    with compact_documents():
        return group.create_array(
            ngff.level_path(level),
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            compressors=compressors(compression),
            fill_value=0,
            dimension_names=("y", "x"),
            config={"write_empty_chunks": True},
        )


def create_palette(group: zarr.Group, palette: NDArray[np.uint8], compression: str) -> zarr.Array:
    """The palette array of image ``group``, one chunk (replacing any there)."""
    with compact_documents():
        array = group.create_array(
            "palette",
            shape=palette.shape,
            dtype=palette.dtype,
            chunks=palette.shape,
            compressors=compressors(compression),
            dimension_names=("color", "channel"),
            overwrite=True,
            config={"write_empty_chunks": True},  # a black image's palette is all zeros
        )
    array[...] = palette
    return array


_COMPACT_LOCK = threading.Lock()


@contextlib.contextmanager
def compact_documents() -> Iterator[None]:
    """Within it, zarr writes the documents of the arrays it makes unindented (35% smaller).

    zarr's ``json_indent`` setting is the process's; the lock keeps every thread of this
    module from restoring it while another is still making an array.
    """
    with _COMPACT_LOCK, zarr.config.set({"json_indent": None}):
        yield


def stored_chunks(shape: tuple[int, int], chunks: tuple[int, int]) -> tuple[int, int]:
    """The chunk shape of labels of ``shape`` worked on in ``chunks``: no side beyond the image.

    An image smaller than a chunk on a side is one block on that side, so the work's blocks
    still cover whole chunks, and its pyramid has the same levels
    (:func:`pipeline.store.ngff.level_count`).
    """
    return min(chunks[0], shape[0]), min(chunks[1], shape[1])


def block_regions(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[slice, slice]]:
    """(rows, columns) region of each block of a dask-style chunking, in row-major order."""
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in chunks[:2]]
    return [
        (slice(int(r0), int(r1)), slice(int(c0), int(c1)))
        for r0, r1 in zip(starts[0][:-1], starts[0][1:], strict=True)
        for c0, c1 in zip(starts[1][:-1], starts[1][1:], strict=True)
    ]


#: A labels chunk's digest with its position in the chunk grid: ((row, column), digest).
ChunkDigest = tuple[tuple[int, int], bytes]


def write_labels(
    target: zarr.Array, region: tuple[slice, slice], labels: NDArray[Any]
) -> list[ChunkDigest]:
    """Write one block of labels; ``region`` must cover whole chunks of ``target``.

    The chunks are encoded here, in the calling thread, as zarr encodes them, and written
    straight to the store (:func:`write_chunks`); those of an array of other codecs (a store
    of an earlier format) by zarr.

    Returns
    -------
    list
        Each chunk of the block with its :func:`chunk_digest`.
    """
    rows, cols = target.chunks
    top, left = region[0].start or 0, region[1].start or 0
    height, width = labels.shape
    pieces = {
        ((top + y) // rows, (left + x) // cols): labels[y : y + rows, x : x + cols]
        for y in range(0, height, rows)
        for x in range(0, width, cols)
    }
    compression = encoded_as(target)
    if compression is None:
        target[region] = labels
    else:
        write_chunks(target, pieces, compression)
    return [(index, chunk_digest(values)) for index, values in pieces.items()]


def write_chunks(
    target: zarr.Array, pieces: dict[tuple[int, int], NDArray[Any]], compression: str
) -> None:
    """Write whole chunks of ``target`` (chunk index -> values, cut to the array at its edges).

    ``compression``: the array's, as :func:`encoded_as` finds it. Each chunk is encoded by
    :func:`encode_chunk` (an edge chunk padded with the fill value first): the bytes zarr's
    codec pipeline makes of it, without zarr's round trips through its event loop and thread
    pool, which took two thirds of a 250-megapixel TIFF's labelling time. On a fenced local
    store each chunk is written by :meth:`~pipeline.store.fence.FencedStore.create_chunk`, as
    the store's own writes are (the fence checked before it appears); on other stores all are
    set at once (on S3, concurrent requests).
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    rows, cols = target.chunks
    fill = target.fill_value
    files = {}
    for index, values in pieces.items():
        short = ((0, rows - values.shape[0]), (0, cols - values.shape[1]))
        if short[0][1] or short[1][1]:
            values = np.pad(values, short, constant_values=fill)
        key = f"{target.path}/{target.metadata.encode_chunk_key(index)}"
        files[key] = encode_chunk(values, compression)
    store = target.store
    if isinstance(store, FencedStore) and store.local:
        for key, data in files.items():
            store.create_chunk(key, data)
        return
    buffer = default_buffer_prototype().buffer

    async def set_all() -> None:
        await asyncio.gather(*(store.set(key, buffer.from_bytes(b)) for key, b in files.items()))

    sync(set_all())


#: A pyramid chunk's digest with its level: (level, ((row, column), digest)).
LevelDigest = tuple[int, ChunkDigest]


def level_array(labels: zarr.Array, level: int, mode: Literal["r", "r+"] = "r+") -> zarr.Array:
    """The array of pyramid ``level`` beside ``labels`` (level 0: ``labels`` itself).

    Like ``labels`` as :func:`create_image` makes it, it writes every chunk, all-zero ones
    included (zarr keeps that setting in the array object, not in the store).
    """
    if level == 0:
        return labels
    parent = labels.path.rpartition("/")[0]
    path = f"{parent}/{ngff.level_path(level)}" if parent else ngff.level_path(level)
    array = zarr.open_array(labels.store, path=path, mode=mode, zarr_format=3)
    return array.with_config({"write_empty_chunks": True})


def write_level(labels: zarr.Array, level: int, index: tuple[int, int]) -> list[LevelDigest]:
    """Write chunk ``index`` of pyramid ``level`` from the level below, already written.

    Reads at most four chunks of the level below (:func:`pipeline.store.ngff.source_region`).

    Returns
    -------
    list
        The chunk's digest (:func:`write_labels`), with its level.
    """
    below = level_array(labels, level - 1, mode="r")
    target = level_array(labels, level)
    _, (rows, cols) = label_grid(labels)
    values = np.asarray(below[ngff.source_region(index, (rows, cols))])
    top, left = index
    region = (
        slice(top * rows, top * rows + values.shape[0]),
        slice(left * cols, left * cols + values.shape[1]),
    )
    return [(level, digest) for digest in write_labels(target, region, values)]


def write_block_levels(
    labels: zarr.Array, region: tuple[slice, slice], values: NDArray[Any]
) -> list[LevelDigest]:
    """Write the pyramid chunks under a block of ``labels`` that it makes alone, from ``values``.

    ``values`` are the labels just written at ``region`` (whole chunks); the chunks of levels
    1 to :func:`pipeline.store.ngff.covered_levels` under it are cut from them, every
    ``2**n``-th pixel, as :func:`write_level` makes them from the level below.

    Returns
    -------
    list
        Each chunk's digest (:func:`write_labels`), with its level.
    """
    shape, chunks = label_grid(labels)
    top, left = region[0].start or 0, region[1].start or 0
    written: list[LevelDigest] = []
    for level in range(1, ngff.covered_levels(region, shape, chunks) + 1):
        step = 2**level
        cut = values[::step, ::step]
        at = (
            slice(top // step, top // step + cut.shape[0]),
            slice(left // step, left // step + cut.shape[1]),
        )
        digests = write_labels(level_array(labels, level), at, cut)
        written.extend((level, digest) for digest in digests)
    return written


def label_grid(labels: zarr.Array) -> tuple[tuple[int, int], tuple[int, int]]:
    """Shape and chunk shape of a 2-D label array (``labels`` or a pyramid level)."""
    (height, width), (rows, cols) = labels.shape, labels.chunks
    return (height, width), (rows, cols)


def chunk_digest(values: NDArray[Any]) -> bytes:
    """SHA-256 of one labels chunk's values (cut to the image), C order, little-endian."""
    data = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    return hashlib.new(DIGEST_ALGORITHM, data.data).digest()


def labels_digest(chunk_digests: Iterable[bytes]) -> str:
    """The labels' digest: SHA-256 of the chunks' digests in row-major chunk order, as hex."""
    return hashlib.new(DIGEST_ALGORITHM, b"".join(chunk_digests)).hexdigest()


def palette_digest(palette: NDArray[np.uint8]) -> str:
    """SHA-256 of the palette's bytes ((k, 3) uint8, C order), as hex."""
    return hashlib.new(DIGEST_ALGORITHM, np.ascontiguousarray(palette).data).hexdigest()


def remove_image(store: Location, name: str) -> None:
    """Delete image group ``name`` (used for images that failed while being written)."""
    store.guard()
    with contextlib.suppress(FileNotFoundError):
        store.fs.rm(store.path(name), recursive=True)


def sized_metrics(
    metrics: dict[str, Any], palette: zarr.Array, levels: list[zarr.Array]
) -> dict[str, Any]:
    """``metrics`` with the stored sizes of an image's ``palette`` and labels ``levels``.

    ``levels``: ``labels`` then its pyramid levels. Sets ``stored_bytes`` (palette + labels:
    their files, compressed chunks and documents), ``ratio`` (``raw_bytes`` /
    ``stored_bytes``), ``pyramid_bytes`` and, when ``source_bytes`` is known, ``ratio_source``
    (``source_bytes`` / ``stored_bytes``).
    """
    nbytes = int(palette.nbytes_stored() + levels[0].nbytes_stored())
    pyramid = sum(int(level.nbytes_stored()) for level in levels[1:])
    return with_sizes(metrics, nbytes, pyramid)


def with_sizes(metrics: dict[str, Any], nbytes: int, pyramid: int = 0) -> dict[str, Any]:
    """``metrics`` with ``stored_bytes`` and ``pyramid_bytes`` set (see :func:`sized_metrics`)."""
    sized = {
        **metrics,
        "stored_bytes": nbytes,
        "ratio": metrics.get("raw_bytes", 0) / nbytes,
        "pyramid_bytes": pyramid,
    }
    if metrics.get("source_bytes"):
        sized["ratio_source"] = metrics["source_bytes"] / nbytes
    return sized


def finalize(
    store: Location,
    name: str,
    palette: NDArray[np.uint8],
    attrs: dict[str, Any],
    chunk_digests: Iterable[ChunkDigest],
    level_digests: Iterable[LevelDigest] = (),
) -> tuple[dict[str, Any], int]:
    """Write the palette and the final attributes, then mark image ``name`` complete.

    Call only after every labels chunk and every chunk of their pyramid is written;
    ``chunk_digests`` are the labels chunks' (:func:`write_labels`) and ``level_digests`` the
    pyramid's (:func:`write_level`), in any order. Adds the stored sizes to ``attrs["metrics"]``
    (:func:`sized_metrics`), the ``digests`` of the
    arrays, ``image_shape`` with the palette's channels (4 for an image with transparency) and
    the OME-NGFF metadata (``ome``, :func:`pipeline.store.ngff.metadata`).

    Returns
    -------
    dict
        All attributes of the image group, as stored.
    int
        The number of chunks of the labels and their pyramid (for the completion marker).
    """
    group = zarr.open_group(store.zarr, mode="r+", zarr_format=3, path=name)
    check_ours(store, name, group.attrs.get("run"))
    stored = create_palette(group, palette, str(group.attrs.get("compression", PORTABLE)))
    labels = group["labels"]
    assert isinstance(labels, zarr.Array)
    levels = ngff.level_count(*label_grid(labels))
    written: list[list[ChunkDigest]] = [list(chunk_digests), *([] for _ in range(1, levels))]
    for level, digest in level_digests:
        written[level].append(digest)
    hashes = []
    arrays = []
    for level, digests_of_level in enumerate(written):
        array = level_array(labels, level)
        ordered = dict(sorted(digests_of_level))
        if len(ordered) != array.nchunks:
            raise PipelineError(
                f"{name}: {len(ordered)} {ngff.level_path(level)} chunks written of {array.nchunks}"
            )
        hashes.append(labels_digest(ordered.values()))
        arrays.append(array)
    chunks = sum(array.nchunks for array in arrays)
    metrics = sized_metrics(attrs.get("metrics", {}), stored, arrays)
    complete = complete_attributes(
        name, group.attrs.asdict(), {**attrs, "metrics": metrics}, palette, labels.shape, hashes
    )
    write_group(store, name, group_document(complete))
    return complete, chunks


def write_image(
    store: Location,
    name: str,
    attrs: dict[str, Any],
    palette: NDArray[np.uint8],
    labels: NDArray[np.integer],
    final: dict[str, Any],
    *,
    compression: str = PORTABLE,
    fresh: bool = False,
) -> dict[str, Any]:
    """Write image ``name`` whose ``labels`` are one chunk and have no pyramid, and finish it.

    The same files and bytes as :func:`create_image` (``attrs``), :func:`write_labels` and
    :func:`finalize` (``final``) make for such an image, each written once: the documents and
    chunks of ``labels`` and ``palette`` (encoded here as zarr encodes them:
    :func:`encode_chunk`) and the complete group. Locally they are written into a hidden folder
    beside the group's place, which is renamed into it only where no group exists
    (:func:`_new_folder`): the image appears whole or not at all, in a fifth of the system
    calls of writing it file by file. On object storage the group is written with status
    ``"writing"``, then the four array files in one request, then the complete group.
    ``fresh`` as :func:`create_image` takes it.

    Returns
    -------
    dict
        All attributes of the image group, as stored.

    Raises
    ------
    Interfered
        If another job's group or chunk appeared at the image's place meanwhile.
    """
    created = created_attributes(attrs, compression)
    if not fresh or (store.local and os.path.lexists(store.path(name))):
        remove_image(store, name)
    files = {
        "labels/zarr.json": array_document("labels", labels.shape, labels.dtype, compression),
        "labels/c/0/0": encode_chunk(labels, compression),
        "palette/zarr.json": array_document("palette", palette.shape, palette.dtype, compression),
        "palette/c/0/0": encode_chunk(palette, compression),
    }
    metrics = with_sizes(final.get("metrics", {}), sum(map(len, files.values())))
    hashes = [labels_digest([chunk_digest(labels)])]
    complete = complete_attributes(
        name, created, {**final, "metrics": metrics}, palette, labels.shape, hashes
    )
    if store.local:
        try:
            _new_folder(store, store.path(name), {"zarr.json": group_document(complete), **files})
        except FileExistsError as exc:
            raise Interfered(f"{name}: its group was written by another job meanwhile") from exc
        return complete
    write_group(store, name, group_document(created))
    write_files(store, name, files)
    written = json.loads(store.read(name, "zarr.json"))
    check_ours(store, name, written["attributes"].get("run"))
    write_group(store, name, group_document(complete))
    return complete


@functools.cache
def _array_template(array: str, dtype: str, compression: str) -> dict[str, Any]:
    """The document zarr writes for an array made by :func:`create_level` or :func:`create_palette`.

    ``array`` is ``"labels"`` (any level) or ``"palette"``; its shape and chunks are one's.
    """
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    if array == "palette":
        made = create_palette(group, np.zeros((1, 3), dtype=dtype), compression)
    else:
        made = create_level(group, 0, (1, 1), (1, 1), dtype, compression)
    return made.metadata.to_dict()


def array_document(
    array: str, shape: tuple[int, ...], dtype: np.dtype[Any], compression: str
) -> bytes:
    """The ``zarr.json`` of ``array`` (``"labels"`` or ``"palette"``) of ``shape``, in one chunk.

    Byte for byte as zarr writes it under :func:`compact_documents`.
    """
    document = dict(_array_template(array, np.dtype(dtype).str, compression))
    document["shape"] = list(shape)
    document["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": list(shape)}}
    return json.dumps(document, allow_nan=True).encode()


def encoded_as(array: zarr.Array) -> str | None:
    """The ``compression`` whose :func:`encode_chunk` gives ``array``'s chunks, if any.

    None for an array of other codecs (a store of an earlier format, for one).
    """
    from zarr.codecs import BytesCodec

    serializer = array.serializer
    if array.filters or not isinstance(serializer, BytesCodec):
        return None
    if serializer.endian is not None and serializer.endian.value != "little":
        return None
    found = tuple(array.compressors)
    if found == (ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()):
        return PORTABLE
    if found == compressors(ARCHIVAL):
        return ARCHIVAL
    return None


def encode_chunk(values: NDArray[Any], compression: str) -> bytes:
    """The bytes of one chunk of ``values`` as an array of :func:`compressors` stores it.

    C order, little-endian, compressed (zstd or LZMA), then its CRC-32C, little-endian.
    """
    import google_crc32c
    import numcodecs

    data = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    if compression == PORTABLE:
        packed = bytes(numcodecs.Zstd(level=ZSTD_LEVEL).encode(data))
    else:
        archival = numcodecs.LZMA(format=lzma.FORMAT_RAW, filters=list(LZMA_FILTERS))
        packed = bytes(archival.encode(data))
    return packed + np.array([google_crc32c.value(packed)], dtype="<u4").tobytes()


def write_files(store: Location, name: str, files: dict[str, bytes]) -> None:
    """Write the new files ``files`` (path inside image group ``name`` -> bytes), each whole.

    Each only where none exists, as fenced chunks are (:mod:`pipeline.store.fence`): locally
    written beside its place and linked into it, on S3 all at once with ``If-None-Match: *``;
    one found there must hold the same bytes (a task run again), else :class:`Interfered`. The
    fence is checked right before.
    """
    paths = {store.path(name, *path.split("/")): data for path, data in files.items()}
    if not store.local:
        store.guard()
        create_objects(store.fs, paths)
        return
    for path, data in paths.items():
        create_file(path, data, store.fence)


def check_ours(store: Location, name: str, run: object) -> None:
    """Raise :class:`Interfered` when image ``name``'s group, of ``run``, is not this job's."""
    if store.fence is not None and run != store.fence.run:
        raise Interfered(f"{name}: rewritten by another job meanwhile; not marked complete")


def complete_attributes(
    name: str,
    created: dict[str, Any],
    attrs: dict[str, Any],
    palette: NDArray[np.uint8],
    shape: tuple[int, ...],
    hashes: list[str],
) -> dict[str, Any]:
    """The attributes of complete image ``name``, written once after every chunk and the palette.

    ``created``'s (as :func:`create_image` made them), then ``attrs`` (``metrics`` sized),
    ``image_shape`` with the palette's channels (4 for an image with transparency), the
    ``digests`` (``hashes``: of ``labels`` then of each pyramid level) and the OME-NGFF
    metadata. Written as compact JSON (the colour table alone is ~50 bytes per colour, three
    times that indented).
    """
    digests = {
        "algorithm": DIGEST_ALGORITHM,
        "palette": palette_digest(palette),
        "labels": hashes[0],
        "levels": hashes[1:],
    }
    return {
        **created,
        **attrs,
        "image_shape": [*shape, palette.shape[1]],
        "digests": digests,
        "ome": ngff.metadata(name, palette, len(hashes), viewer_colours(created)),
        "status": "complete",
    }


@dataclass(frozen=True, repr=False)
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

    def __repr__(self) -> str:
        """One line, without the palette's values: size, colours, PSNR, ratio, labels."""
        height, width = self.labels.shape
        words = [f"name={self.name!r}", f"{width}x{height}"]
        words += ["RGBA"] if self.palette.shape[1] == 4 else []
        words += brief(self.attrs)
        chunks = "x".join(map(str, self.labels.chunks))
        words.append(f"labels {self.labels.dtype} in {chunks} chunks")
        return f"StoredImage({', '.join(words)})"
