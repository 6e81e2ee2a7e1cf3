"""Reading a store's images defensively: one damaged or crafted image group is that image's problem.

Every reader of a store (``info``, ``reconstruct``, ``verify``, :func:`pipeline.open_store`, a
rerun) learns the image names from a listing (:func:`pipeline.store.write.list_store`), never from
zarr's own walk of the hierarchy, which stops at the first unreadable ``zarr.json``. Each image's
metadata document is then read on its own, at most :data:`MAX_DOCUMENT_BYTES`, and its
attributes are checked for the types readers rely on before any is used; a complete image's
labels document must give the shape and dtype its attributes call for. What is wrong becomes a
:class:`Damaged` error naming the image; the other images are read as usual. A rerun checks the
images that completion markers vouch for the same way, many at a time (:func:`check_complete`).

An image is ``palette[labels]`` (:func:`rebuild_block`); its labels are read through
:class:`CheckedLabels`, so that a chunk failing its checksum is that image's problem too. The
lazy rebuild of a whole image is :func:`pipeline.job.graph.rebuild`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

import numpy as np
import zarr
from numpy.typing import NDArray

from pipeline.errors import PipelineError, UsageError
from pipeline.results import is_number
from pipeline.settings import ORIGINAL, recorded_settings
from pipeline.store import ngff
from pipeline.store.location import Location
from pipeline.store.write import (
    MAX_DOCUMENT_BYTES,
    PYRAMID_VERSION,
    REUSE_KEYS,
    WHOLE_VERSION,
    Listing,
    StoredImage,
    label_grid,
    level_array,
    list_store,
    oversized,
)

#: The problem of a name that is not an image group of the store.
NO_SUCH_IMAGE = "no such image in the store"
#: Images whose two documents :func:`check_complete` reads in one batch of concurrent requests on
#: object storage: about 0.4 MB held at 128 colours (3 KB a document), 0.9 GB at worst (65,536
#: colours each).
DOCUMENT_BATCH = 128
#: A metadata document as read: its bytes (at most :data:`MAX_DOCUMENT_BYTES` + 1), or the error.
Document = bytes | Exception


class Damaged(PipelineError):
    """An image group that cannot be read as the store format says; the message names it."""

    def __init__(self, name: str, problem: str, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem
        self.attrs = attrs


class Incomplete(PipelineError):
    """An image whose status is not ``"complete"`` (being written, or left by a stopped run)."""


def check_name(name: str) -> str:
    r"""``name`` if it can be an image group's name (one path component, not hidden).

    Raises
    ------
    UsageError
        For a name with ``/`` or ``\\``, an empty name or one starting with ``.``.
    """
    if not name or "/" in name or "\\" in name or name.startswith(".") or name == "zarr.json":
        raise UsageError(f"{name!r}: not an image name (one path component, not starting with .)")
    return name


def _integer(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


#: Attribute -> (check, what it must be), for every image.
_ALWAYS = {
    "status": (lambda v: isinstance(v, str), "a string"),
    "image_shape": (
        lambda v: (
            isinstance(v, list)
            and len(v) == 3
            and all(_integer(n) and n > 0 for n in v)
            and v[2] in (3, 4)
        ),
        "[H, W, 3] or [H, W, 4] with positive integers",
    ),
    "source": (lambda v: isinstance(v, dict) and isinstance(v.get("path"), str), "{path: ...}"),
    "colors_requested": (lambda v: _integer(v) and v > 0, "a positive integer"),
}
#: Attribute -> (check, what it must be), for complete images.
_COMPLETE = {
    "colors": (lambda v: _integer(v) and 0 < v <= 65536, "an integer from 1 to 65536"),
    "metrics": (
        lambda v: (
            isinstance(v, dict)
            and (v.get("psnr_db") is None or is_number(v.get("psnr_db")))
            and _integer(v.get("stored_bytes"))
            and is_number(v.get("ratio"))
        ),
        "{psnr_db, stored_bytes, ratio, ...} with numbers",
    ),
    "digests": (
        lambda v: (
            v is None
            or (
                isinstance(v, dict)
                and all(isinstance(v.get(k), str) for k in ("palette", "labels"))
                and isinstance(v.get("levels", []), list)
                and all(isinstance(d, str) for d in v.get("levels", []))
            )
        ),
        "{algorithm, palette, labels, levels} with strings",
    ),
}


def check_attrs(attrs: dict[str, Any]) -> list[str]:
    """What is wrong with an image group's attributes (empty when readers can use them)."""
    checks = dict(_ALWAYS)
    if attrs.get("status") == "complete":
        checks.update(_COMPLETE)
    problems = []
    for key, (valid, shape) in checks.items():
        if key not in attrs and key == "digests":
            continue  # stores written before checksums have none
        if key not in attrs:
            problems.append(f"attribute {key} missing")
        elif not valid(attrs[key]):
            problems.append(f"attribute {key} is {_shown(attrs[key])}, not {shape}")
    return problems


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_document(store: Location, name: str, path: str) -> Document:
    """Document ``path`` of image ``name`` (at most one byte over the bound), or the error."""
    return store.read_each([(name, path)], MAX_DOCUMENT_BYTES + 1)[0]


def _parsed(name: str, path: str, data: Document) -> Any:
    """The JSON of document ``path`` of image ``name``, read as ``data``.

    Raises
    ------
    Damaged
        When it is missing, unreadable, too large or not JSON.
    """
    if isinstance(data, FileNotFoundError):
        raise Damaged(name, f"metadata missing (no {path})")
    if isinstance(data, Exception):
        reason = data.strerror if isinstance(data, OSError) and data.strerror else one_line(data)
        raise Damaged(name, f"metadata unreadable ({path}: {reason})")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise Damaged(name, oversized(path))
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Damaged(name, f"metadata is not valid JSON ({path}: {exc})") from None


def parse_attrs(name: str, data: Document) -> dict[str, Any]:
    """The attributes of image group ``name`` from its ``zarr.json`` read as ``data``, checked.

    Raises
    ------
    Damaged
        When the document is missing, too large, not JSON, not a Zarr v3 group's, or its
        attributes are not what readers need.
    """
    document = _parsed(name, "zarr.json", data)
    if not isinstance(document, dict) or document.get("node_type") != "group":
        raise Damaged(name, "metadata is not a Zarr group's")
    attrs = document.get("attributes")
    if not isinstance(attrs, dict):
        raise Damaged(name, "metadata has no attributes object")
    problems = check_attrs(attrs)
    if problems:
        raise Damaged(name, "; ".join(problems), attrs)
    return attrs


def read_attrs(store: Location, name: str) -> dict[str, Any]:
    """The attributes of image group ``name``, read and checked on their own.

    Raises
    ------
    Damaged
        As :func:`parse_attrs`.
    """
    return parse_attrs(name, read_document(store, name, "zarr.json"))


def labels_problem(attrs: dict[str, Any], shape: tuple[int, ...], dtype: Any) -> str | None:
    """What is wrong with labels of ``shape`` and ``dtype`` for an image with checked ``attrs``."""
    height, width, _ = attrs["image_shape"]
    expected = np.dtype(np.uint8 if attrs["colors_requested"] <= 256 else np.uint16)
    if shape == (height, width) and str(dtype) == expected.name:
        return None
    return f"labels are {shape} {dtype}, the attributes say ({height}, {width}) {expected}"


def _labels_document_problem(name: str, attrs: dict[str, Any], data: Document) -> str | None:
    """What is wrong with the labels' ``zarr.json`` (read as ``data``) of complete ``name``."""
    try:
        document = _parsed(name, "labels/zarr.json", data)
    except Damaged as exc:
        return exc.problem
    fields = document if isinstance(document, dict) else {}
    shape, dtype = fields.get("shape"), fields.get("data_type")
    if not (isinstance(shape, list) and all(map(_integer, shape)) and isinstance(dtype, str)):
        return "labels metadata is not a Zarr array's (no shape and data_type)"
    return labels_problem(attrs, tuple(shape), dtype)


def judged(name: str, group: Document, labels: Callable[[], Document]) -> Entry:
    """Image ``name`` as its group's document ``group`` shows it; ``labels`` gives its labels'.

    The labels' document is asked for only when the group's says the image is complete.
    """
    try:
        attrs = parse_attrs(name, group)
    except Damaged as exc:
        return Entry(name, None, exc.problem, exc.attrs)
    if attrs.get("status") != "complete":
        return Entry(name, attrs)
    return Entry(name, attrs, _labels_document_problem(name, attrs, labels()))


@dataclass(frozen=True)
class Entry:
    """One image group of a store as a reader finds it: its attributes, or what is wrong.

    Attributes
    ----------
    name : str
    attrs : dict or None
        Its checked attributes; None when they cannot be used.
    problem : str or None
        What is wrong with it, if anything.
    raw : dict or None
        Its attributes as stored, when they parse but fail the checks (for a repair, which
        needs only the source and the settings).
    """

    name: str
    attrs: dict[str, Any] | None
    problem: str | None = None
    raw: dict[str, Any] | None = None


def scan(store: Location, names: list[str] | None = None) -> Iterator[Entry]:
    """Every image group of ``store`` (or those ``names``), sorted, each read on its own.

    Symbolic links in the store's root, groups the listing shows damaged (chunks or metadata
    missing, see :attr:`pipeline.store.write.Listing.damaged`), and groups whose metadata cannot be
    used come with a ``problem`` instead of attributes.
    """
    listing, chosen = listed(store, names)
    for name in chosen:
        yield entry(store, name, listing)


def listed(store: Location, names: list[str] | None = None) -> tuple[Listing, list[str]]:
    """The store's listing and the image names to read: ``names`` (checked), else all, sorted.

    Raises
    ------
    UsageError
        For a name of ``names`` that cannot be an image's.
    """
    listing = list_store(store)
    chosen = sorted(listing.names) if names is None else names
    for name in chosen:
        check_name(name)
    return listing, chosen


def entry(store: Location, name: str, listing: Listing) -> Entry:
    """Image ``name`` of ``store`` as the store's ``listing`` and its own metadata show it."""
    if name in listing.links:
        return Entry(name, None, "a symbolic link in the store; not read")
    if name not in listing.groups:
        return Entry(name, None, listing.damaged.get(name, NO_SUCH_IMAGE))
    found = judged(
        name,
        read_document(store, name, "zarr.json"),
        lambda: read_document(store, name, "labels/zarr.json"),
    )
    if found.attrs is not None and found.attrs.get("status") == "complete":
        return replace(found, problem=listing.damaged.get(name, found.problem))
    return found


def _already(document: Document) -> Callable[[], Document]:
    """A document read already, as :func:`judged` asks for one."""
    return lambda: document


def check_complete(store: Location, listing: Listing, names: Iterable[str]) -> Listing:
    """``listing``, with the images of ``names`` its completion markers vouch for checked.

    A marker says that an image was complete; its group's and its labels' documents, read
    and checked as :func:`entry` does (never more than :data:`MAX_DOCUMENT_BYTES` of one, and
    none the listing found larger), say whether they still are. Images are read
    :data:`DOCUMENT_BATCH` at a time (on object storage, one batch of concurrent requests), so
    memory does not grow with the store. Returns the listing with those found damaged among
    its :attr:`~pipeline.store.write.Listing.damaged`, which a rerun redoes.
    """
    vouched = (
        name
        for name in names
        if name in listing.complete and name in listing.groups and name not in listing.damaged
    )
    damaged = dict(listing.damaged)
    while batch := list(itertools.islice(vouched, DOCUMENT_BATCH)):
        files = [(name, path) for name in batch for path in ("zarr.json", "labels/zarr.json")]
        documents = iter(store.read_each(files, MAX_DOCUMENT_BYTES + 1))
        for name, group, labels in zip(batch, documents, documents, strict=False):
            problem = judged(name, group, _already(labels)).problem
            if problem is not None:
                damaged[name] = problem
    return replace(listing, damaged=damaged)


def open_image(store: Location, name: str, attrs: dict[str, Any]) -> StoredImage:
    """Open complete image ``name`` (whose checked ``attrs`` :func:`read_attrs` gave).

    Raises
    ------
    Incomplete
        When its status is not ``"complete"``.
    Damaged
        When its arrays are missing, unreadable, or disagree with its attributes.
    """
    if attrs.get("status") != "complete":
        raise Incomplete(f"{name}: incomplete (status {attrs.get('status')!r}); run the job again")
    arrays = {}
    for key in ("palette", "labels"):
        try:
            arrays[key] = zarr.open_array(store.zarr, path=f"{name}/{key}", mode="r")
        except Exception as exc:
            raise Damaged(name, f"{key} array unreadable ({one_line(exc)})") from None
    labels, palette = arrays["labels"], arrays["palette"]
    problem = labels_problem(attrs, labels.shape, labels.dtype)
    if problem is not None:
        raise Damaged(name, problem)
    channels = attrs["image_shape"][2]
    if palette.shape != (attrs["colors"], channels) or palette.dtype != np.uint8:
        raise Damaged(
            name,
            f"palette is {palette.shape} {palette.dtype}, the attributes say "
            f"({attrs['colors']}, {channels}) uint8",
        )
    try:
        colours = np.asarray(palette[...])
    except Exception as exc:
        raise Damaged(name, f"palette chunk unreadable ({one_line(exc)})") from None
    return StoredImage(name=name, palette=colours, labels=labels, attrs=attrs)


def has_pyramid(attrs: dict[str, Any]) -> bool:
    """Whether an image with ``attrs`` was written with a pyramid and OME-NGFF metadata.

    Images written before them (format version below :data:`pipeline.store.write.PYRAMID_VERSION`)
    have neither.
    """
    version = attrs.get("format_version")
    return isinstance(version, int) and version >= PYRAMID_VERSION


def open_pyramid(image: StoredImage) -> list[zarr.Array]:
    """The arrays of the pyramid levels of complete ``image`` (level 0 aside), as it must have.

    Images written before pyramids (:func:`has_pyramid`) have none; images of one chunk
    neither, nor, since format version 4, images a viewer shows whole
    (:data:`pipeline.store.ngff.WHOLE_SIDE`).

    Raises
    ------
    Damaged
        When a level's array is missing, unreadable, or not the shape, chunks and dtype of
        every second pixel of the level above.
    """
    if not has_pyramid(image.attrs):
        return []
    labels = image.labels
    shape, chunks = label_grid(labels)
    whole_side = ngff.WHOLE_SIDE if image.attrs["format_version"] >= WHOLE_VERSION else 0
    arrays = []
    for level in range(1, ngff.level_count(shape, chunks, whole_side)):
        path = ngff.level_path(level)
        try:
            array = level_array(labels, level, mode="r")
        except Exception as exc:
            raise Damaged(image.name, f"{path} array unreadable ({one_line(exc)})") from None
        expected = (ngff.level_shape(shape, level), labels.chunks, labels.dtype)
        if (array.shape, array.chunks, array.dtype) != expected:
            raise Damaged(
                image.name,
                f"{path} is {array.shape} {array.dtype} in chunks {array.chunks}, not "
                f"{expected[0]} {expected[2]} in chunks {expected[1]}",
            )
        arrays.append(array)
    return arrays


def read_image(store: Location, name: str) -> StoredImage:
    """Open image ``name`` of ``store``, checked as :func:`open_image` does.

    Raises
    ------
    UsageError
        When ``name`` cannot be an image name.
    PipelineError
        When there is no such image, or it is incomplete or damaged.
    """
    (entry,) = scan(store, [name])
    if entry.attrs is None or entry.problem is not None:
        raise Damaged(name, str(entry.problem))
    return open_image(store, name, entry.attrs)


def reuse_status(store: Location, name: str, wanted: dict[str, Any]) -> str:
    """What a job should do with image ``name`` given the reuse values ``wanted``.

    Reads the image's metadata: for images the listing cannot vouch for (stores written before
    completion markers, or an image whose marker was not written). Returns ``"absent"``,
    ``"incomplete"`` (a group left by an interrupted run, or one whose metadata is damaged:
    redoing it is the repair), or ``"complete"`` when a complete image with the same settings
    exists (see :func:`pipeline.store.write.reuse_values`).

    Raises
    ------
    PipelineError
        When a complete image with other settings exists (the caller decides whether to
        overwrite).
    """
    (entry,) = scan(store, [name])
    if entry.attrs is None:
        return "absent" if entry.problem == NO_SUCH_IMAGE else "incomplete"
    attrs = entry.attrs
    if attrs.get("status") != "complete" or entry.problem is not None:
        return "incomplete"
    stored = {**{key: attrs.get(key) for key in REUSE_KEYS}, "source_path": attrs["source"]["path"]}
    frame = attrs["source"].get("frame", 0)
    if frame:
        stored["source_frame"] = frame
    changed = differences(stored, wanted)
    if changed:
        raise PipelineError(
            f"{name}: already stored with other settings: {changed}; use --overwrite to replace it"
        )
    return "complete"


#: Attributes of an image group that record a setting, by the setting's name (a job file's key).
RECORDED_SETTINGS = {
    "colors": "colors_requested",
    "sample": "sample_size_requested",
    "seed": "seed",
    "chunk": "chunk",
}


def image_settings(attrs: dict[str, Any]) -> dict[str, Any]:
    """The settings an image was made with, as its attributes ``attrs`` record them.

    Keys are the settings' names (those of a job file): ``colors`` (asked for), ``sample``,
    ``seed``, ``chunk``, then every key of ``fit_settings`` (named as settings:
    :func:`pipeline.settings.recorded_settings`), whatever it is, with the settings left out
    because they were at their original value (:data:`pipeline.settings.ORIGINAL`) filled in;
    ``compression``, once recorded; and ``frame`` (from 0), for an image that is one of a
    file's frames or pages. Values of a wrong type are left out, as are attributes that are
    missing (images written before them).
    """
    settings = {
        name: attrs[key]
        for name, key in RECORDED_SETTINGS.items()
        if key in attrs and is_number(attrs[key])
    }
    fit = attrs.get("fit_settings")
    if isinstance(fit, dict):
        settings.update({**ORIGINAL, **recorded_settings(fit)})
    if isinstance(attrs.get("compression"), str):
        settings["compression"] = attrs["compression"]
    source = attrs.get("source")
    if isinstance(source, dict):
        frames, frame = source.get("frames"), source.get("frame")
        if _integer(frames) and frames > 1 and _integer(frame):
            settings["frame"] = frame
    return settings


#: How the settings that decide reuse are named to a user.
SETTING_NAMES = {
    "source_path": "source",
    "source_frame": "frame (from 0)",
    "colors_requested": "colors",
    "sample_size_requested": "sample",
}


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The settings in which ``stored`` and ``wanted`` reuse values differ, with both values.

    ``"colors 128 (asked 64), effort 1 (asked 2)"``; ``fit_settings`` are compared one by one,
    by name (:func:`pipeline.settings.recorded_settings`: older records included), a setting
    left out standing for its original value (:data:`pipeline.settings.ORIGINAL`).
    """

    def flat(values: dict[str, Any]) -> dict[str, Any]:
        fit = values.get("fit_settings")
        out = {k: v for k, v in values.items() if k != "fit_settings"}
        return out | (recorded_settings(fit) if isinstance(fit, dict) else {"fit_settings": fit})

    old, new = flat(stored), flat(wanted)
    keys = list(dict.fromkeys([*old, *new]))
    left_out = {**ORIGINAL, "source_frame": 0}  # a first frame's values leave its frame out
    return ", ".join(
        f"{SETTING_NAMES.get(key, key)} {old.get(key, left_out.get(key))} "
        f"(asked {new.get(key, left_out.get(key))})"
        for key in keys
        if old.get(key, left_out.get(key)) != new.get(key, left_out.get(key))
    )


def one_line(exc: BaseException) -> str:
    """One line for an exception raised while reading a node or chunk."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "checksum" in text.lower():
        return "checksum mismatch"
    return text if len(text) <= 120 else text[:117] + "..."


def rebuild_block(labels: NDArray[np.integer], palette: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(h, w, 3) uint8 pixels of an (h, w) labels block ((h, w, 4) RGBA for an RGBA palette)."""
    return palette[labels]


class UnreadableChunk(Damaged):
    """A labels chunk that cannot be read (its checksum does not match, it does not decode)."""

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, for tasks run on other processes
        return (type(self), (self.name, self.problem))


class CheckedLabels:
    """An image's labels array whose read errors become :class:`UnreadableChunk` naming it."""

    def __init__(self, name: str, labels: Any) -> None:
        self.name = name
        self.labels = labels
        self.shape = labels.shape
        self.dtype = labels.dtype
        self.ndim = labels.ndim

    def __getitem__(self, key: Any) -> NDArray[Any]:
        try:
            return np.asarray(self.labels[key])
        except Exception as exc:
            raise UnreadableChunk(self.name, f"labels chunk unreadable ({one_line(exc)})") from None
