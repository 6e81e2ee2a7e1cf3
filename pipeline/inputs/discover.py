"""Find the input images of a job by listing folders, globs and buckets, never reading an image.

Each input item is, in this order:

* a URL (``s3://...``, any fsspec protocol): a glob is one ``glob`` request, a folder one
  (paged) ``ls``, an image file one ``info``; the Zarr arrays directly in a folder are inputs
  (a folder holding a ``zarr.json`` or ``.zarray`` is read to tell an array from a group);
* an existing local folder: its image files (by extension, see :func:`is_image_name`) and the
  Zarr arrays directly inside it, not recursively; a Zarr array's own folder is an input;
* a glob pattern: the files it matches (``**`` is zero or more folders and never follows a
  symbolic link to a folder, so a link loop cannot make it hang; names starting with ``.`` are
  only matched by pattern components starting with ``.``, as with :func:`glob.glob`);
* an explicit path: a file or a Zarr array.

Sizes and versions come from the listings themselves: the client lists, workers read. Results
are sorted within each item; a path found again by a later item is dropped; paths inside the
job's output store are left out. Problems (a missing file, a pattern matching nothing, a symbolic
link loop) are returned as one-line :class:`~pipeline.errors.InputError` s, never raised.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import importlib.util
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError, UsageError
from pipeline.inputs.tiled import is_zarr_array
from pipeline.paths import filesystem, is_url

if TYPE_CHECKING:
    from pipeline.store.location import Location

#: File extensions picked up when a folder is given as input.
IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
)


def is_image_name(name: str) -> bool:
    """Whether a file named ``name`` (no folder) is taken as an image where a folder is listed.

    Its extension is the text from its last dot, whatever comes before: ``.png``, ``..png`` and
    ``...jpg`` are images, as they are when given directly (:func:`os.path.splitext` would give
    them none). Hidden names are no exception, as a listed folder takes every name: macOS's
    AppleDouble files (``._photo.jpg``, which hold no image) are found as well, and each then
    fails with one line naming it; a glob such as ``*.jpg`` leaves hidden names out, as
    :func:`glob.glob` does.

    Parameters
    ----------
    name : str
        A file name, without its folder.

    Returns
    -------
    bool
        Whether its extension, ignoring case, is one of ``IMAGE_EXTENSIONS``.
    """
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


#: Keys of an fsspec listing's info that tell one version of an object from another, best first.
VERSION_KEYS = ("ETag", "etag", "LastModified", "mtime")


@dataclass(frozen=True, slots=True)
class Entry:
    """One input found by :func:`discover`.

    Attributes
    ----------
    path : str
        A local path as found (spelled like the input item it came from), or a full URL.
    size : int or None
        Size in bytes from the listing; None for a Zarr array.
    version : str
        What changes when the content does, from the listing: ``st_mtime_ns`` for a local path;
        for a URL, the ETag, else the modification time ("" if the listing has neither).
    zarr : bool
        Whether this is a Zarr array (a folder read chunk by chunk) rather than an image file.
    """

    path: str
    size: int | None
    version: str
    zarr: bool = False


def discover(
    inputs: Sequence[str], exclude: Location | None = None
) -> tuple[list[Entry], list[InputError]]:
    """Expand files, folders, glob patterns and URLs into the inputs of a job.

    Parameters
    ----------
    inputs : sequence of str
        Files, folders, glob patterns and URLs, as given to the job.
    exclude : Location, optional
        The job's output store: nothing inside it is an input.

    Returns
    -------
    entries : list of Entry
        Every input found, each item's sorted, without duplicates.
    errors : list of InputError
        One per item that gave nothing usable (never raised).
    """
    outside = _Outside(exclude)
    found: dict[str, Entry] = {}
    errors: list[InputError] = []
    for item in inputs:
        try:
            entries = _url(item) if is_url(item) else _local(item)
        except InputError as exc:
            errors.append(exc)
            continue
        for entry in entries:
            if outside(entry.path):
                found.setdefault(entry.path, entry)
    return list(found.values()), errors


def input_folders(inputs: Sequence[str]) -> list[str]:
    """The local folders whose contents the inputs take: folders given, heads of ``**`` globs.

    Resolved paths, for telling whether a job's output store lies among its inputs (URLs are
    not looked up: that would cost requests, and their folders are listed one level only).
    """
    folders = []
    for item in inputs:
        if is_url(item):
            continue
        if glob.has_magic(item):
            head, parts = _split_pattern(item)
            if "**" in parts:
                folders.append(str(Path(head or ".").resolve()))
        elif os.path.isdir(item) and not is_zarr_array(item):
            folders.append(str(Path(item).resolve()))
    return folders


def _local(item: str) -> list[Entry]:
    """The entries of a local folder, glob pattern or explicit path."""
    try:
        info: os.stat_result | OSError = os.stat(item)
    except OSError as exc:
        info = exc
    if isinstance(info, os.stat_result) and stat.S_ISDIR(info.st_mode) and not is_zarr_array(item):
        return _folder(item)
    if glob.has_magic(item):
        return _pattern(item)
    return [_explicit(item, info)]


def _explicit(path: str, info: os.stat_result | OSError) -> Entry:
    """The entry of an explicit path from its ``os.stat``, or the error that stat raised."""
    if isinstance(info, OSError):
        problem = _problem(info)
        if info.errno == errno.ENOENT and path.rstrip("/").endswith(".zarr"):
            problem += " (the store to write is named with --out)"
        raise InputError(path, problem)
    if stat.S_ISDIR(info.st_mode):  # folders that are not Zarr arrays were listed instead
        return Entry(path, None, str(info.st_mtime_ns), zarr=True)
    if not stat.S_ISREG(info.st_mode):
        raise InputError(path, "not a file")
    return Entry(path, info.st_size, str(info.st_mtime_ns))


def _problem(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return (exc.strerror or str(exc)).lower()


def _folder(folder: str) -> list[Entry]:
    """Image files and Zarr arrays directly inside ``folder``: one stat each, no reads of images."""
    base = Path(folder)
    # Spelled as pathlib spells ``base / name`` (no "./", no doubled or trailing "/").
    prefix = "" if base == Path() else os.path.join(str(base), "")
    entries = []
    try:
        with os.scandir(folder) as scan:
            for item in scan:
                entry = _folder_entry(item, prefix + item.name)
                if entry is not None:
                    entries.append(entry)
    except OSError as exc:
        raise InputError(folder, _problem(exc)) from None
    return sorted(entries, key=lambda entry: entry.path)


def _folder_entry(item: os.DirEntry[str], path: str) -> Entry | None:
    """The entry for one name in a folder, None for what is no input (or a broken link)."""
    image = is_image_name(item.name)
    try:
        # The file type from the folder listing spares a stat of every other file.
        if not image and not item.is_dir():
            return None
        info = item.stat()
        if image and stat.S_ISREG(info.st_mode):
            return Entry(path, info.st_size, str(info.st_mtime_ns))
        if stat.S_ISDIR(info.st_mode) and is_zarr_array(path):
            return Entry(path, None, str(info.st_mtime_ns), zarr=True)
    except OSError:
        pass
    return None


def _pattern(pattern: str) -> list[Entry]:
    """The files matching a glob pattern, found without following links to folders for ``**``."""
    head, parts = _split_pattern(pattern)
    # "**/**" reaches a file along several ways: each is listed once.
    found = {entry.path: entry for entry in _match(head, parts)}
    if not found:
        raise InputError(pattern, "no file matches this pattern")
    return [found[path] for path in sorted(found)]


def _split_pattern(pattern: str) -> tuple[str, list[str]]:
    """The folder before the first component with a wildcard, and the components from there.

    The folder is spelled as :func:`glob.glob` spells it (as given, without trailing slashes).
    """
    parts = pattern.split("/")
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    prefix = "/".join(parts[:first]) + ("/" if first else "")
    head = prefix.rstrip("/") or prefix
    rest = [part for part in parts[first:] if part]
    # A trailing "/" matches folders only, never files.
    if pattern.endswith("/"):
        return head, []
    if rest[-1] == "**":
        rest.append("*")
    return head, rest


def _match(folder: str, parts: list[str]) -> Iterator[Entry]:
    """The regular files below ``folder`` that match the pattern components ``parts``."""
    if not parts:
        return
    part, rest = parts[0], parts[1:]
    if part == "**":
        for sub in _tree(folder):
            yield from _match(sub, rest)
        return
    prefix = os.path.join(folder, "")
    if glob.has_magic(part):
        wanted = re.compile(fnmatch.translate(part)).match
        hidden = part.startswith(".")
        names = [n for n in _names(folder) if wanted(n) and (hidden or not n.startswith("."))]
    else:
        names = [part]
    if not rest:
        yield from _files(prefix, names)
        return
    for name in names:
        yield from _match(prefix + name, rest)


def _files(prefix: str, names: list[str]) -> Iterator[Entry]:
    """The entries of the regular files among ``prefix + name``: one stat each."""
    for name in names:
        try:
            info = os.stat(prefix + name)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            yield Entry(prefix + name, info.st_size, str(info.st_mtime_ns))


def _names(folder: str) -> list[str]:
    try:
        with os.scandir(folder or ".") as scan:
            return [item.name for item in scan]
    except OSError:
        return []


def _tree(top: str) -> Iterator[str]:
    """``top`` and every folder below it, not hidden, never through a symbolic link."""
    stack = [top]
    while stack:
        folder = stack.pop()
        yield folder
        try:
            with os.scandir(folder or ".") as scan:
                subs = [
                    os.path.join(folder, item.name)
                    for item in scan
                    if item.is_dir(follow_symlinks=False) and not item.name.startswith(".")
                ]
        except OSError:
            continue
        stack.extend(subs)


def _url(item: str) -> list[Entry]:
    """The entries of a URL: a glob, a folder (image files and Zarr arrays in it) or a file."""
    try:
        fs, inner = filesystem(item)
        if glob.has_magic(inner):
            infos = list(fs.glob(inner, detail=True).values())
            files = [info for info in infos if info.get("type") == "file"]
            if not files:
                raise InputError(item, "no file matches this pattern")
            urls = sorted(((fs.unstrip_protocol(i["name"]), i) for i in files), key=lambda u: u[0])
            return [_url_entry(url, info) for url, info in urls]
        if is_image_name(inner.rsplit("/", 1)[-1]):  # a file, most likely
            info = fs.info(inner)
            if info.get("type") != "directory":
                return [_url_entry(item, info)]
        # One (paged) listing says the rest: a folder lists its entries, a file itself (on
        # object stores by listing its parent).
        listed = fs.ls(inner, detail=True)
        if len(listed) == 1 and _same(listed[0]["name"], inner) and listed[0]["type"] == "file":
            return [_url_entry(item, listed[0])]
        return _url_folder(fs, item, listed)
    except FileNotFoundError:
        raise InputError(item, "no such file") from None
    except InputError:
        raise
    except Exception as exc:  # object stores raise their own errors (credentials, network)
        raise InputError(item, _one_line(exc)) from None


def _url_folder(fs: Any, item: str, listed: list[dict[str, Any]]) -> list[Entry]:
    """The inputs of folder ``item`` from its listing: ``item`` itself if it is a Zarr array."""
    names = {info["name"].rstrip("/").rsplit("/", 1)[-1]: info for info in listed}
    if {"zarr.json", ".zarray"} & names.keys() and is_zarr_array(item):
        marker = names.get("zarr.json") or names[".zarray"]
        return [Entry(item, None, _version(marker), zarr=True)]
    entries = []
    for info in listed:
        if info.get("type") == "file":
            if is_image_name(info["name"].rsplit("/", 1)[-1]):
                entries.append(_url_entry(fs.unstrip_protocol(info["name"]), info))
        elif is_zarr_array(url := fs.unstrip_protocol(info["name"])):
            entries.append(Entry(url, None, _version(info), zarr=True))
    return sorted(entries, key=lambda entry: entry.path)


def _same(name: str, inner: str) -> bool:
    """Whether a listed name is ``inner`` itself (spelled with or without its protocol)."""
    return name.rstrip("/").split("://")[-1] == inner.rstrip("/").split("://")[-1]


def _url_entry(url: str, info: dict[str, Any]) -> Entry:
    size = info.get("size")
    return Entry(url, None if size is None else int(size), _version(info))


def _version(info: dict[str, Any]) -> str:
    return next((str(info[key]) for key in VERSION_KEYS if info.get(key) is not None), "")


def _one_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _Outside:
    """Tells whether a path lies outside the job's output store, without a system call per path.

    The store is resolved once, and so is each folder holding inputs; a path is then decided by
    the spelling of its resolved folder and its name (a URL by its own spelling).
    """

    def __init__(self, store: Location | None) -> None:
        if store is None:
            self.store = None
        elif not store.local:
            self.store = store.url.rstrip("/") + "/"
        else:
            self.store = os.path.join(str(Path(store.root).resolve()), "")
        self.folders: dict[str, str] = {}

    def __call__(self, path: str) -> bool:
        if self.store is None:
            return True
        if not is_url(path):
            folder, name = os.path.split(path)
            if folder not in self.folders:
                self.folders[folder] = str(Path(folder).resolve())
            path = os.path.join(self.folders[folder], name)
        return not (path + "/").startswith(self.store)


@dataclass(frozen=True)
class Inputs:
    """The inputs of a job, found by listing (:func:`find_inputs`).

    Attributes
    ----------
    entries : list of Entry
        What to compress, in input order.
    errors : list of InputError
        Input items that gave nothing usable (each becomes a failed result).
    """

    entries: list[Entry]
    errors: list[InputError]


def find_inputs(inputs: Sequence[str] | str, store: Location) -> Inputs:
    """List the inputs of a job writing ``store``: files, folders, globs or URLs.

    Raises
    ------
    UsageError
        When nothing at all can be compressed (a missing path or an empty folder given alone,
        a pattern matching nothing), with one line naming what was looked at.
    """
    paths = [inputs] if isinstance(inputs, str) else list(inputs)
    _check_store(store, paths)
    entries, errors = discover(paths, exclude=store)
    if entries:
        return Inputs(entries, errors)
    if errors:
        problems = "; ".join(str(e) for e in errors[:3])
        more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
        raise UsageError(f"no inputs found: {problems}{more}")
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    raise UsageError(f"no inputs found: no image files in {shown}")


def _check_store(store: Location, paths: Sequence[str]) -> None:
    """Refuse an output store that is an input folder or inside one, or a folder of other files."""
    if not store.local:
        return
    resolved = str(Path(store.root).resolve())
    for folder in input_folders(paths):
        if resolved == folder or resolved.startswith(os.path.join(folder, "")):
            where = "is the input folder" if resolved == folder else f"is inside input {folder}"
            raise UsageError(f"{store}: the output store {where}; choose a path outside the inputs")
    root = Path(store.root)
    if root.is_dir() and not (root / "zarr.json").exists() and any(root.iterdir()):
        raise UsageError(
            f"{store}: a folder that is not a store (no zarr.json, and it holds files);"
            " choose a new path for the output store"
        )


def sample_images() -> list[str]:
    """Paths of the two photos that ship with scikit-learn (``china.jpg``, ``flower.jpg``).

    Found without importing scikit-learn (0.7 s), which a job with nothing to do never needs.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "no inputs given, and scikit-learn, whose sample photos are the default, is missing"
        )
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "images"
    return [str(folder / "china.jpg"), str(folder / "flower.jpg")]
