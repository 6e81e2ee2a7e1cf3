r"""Group names of input images in the output store: safe Zarr v3 node names, unique per job.

Each input image becomes one group of the store, named after its file. A name must be a valid
Zarr v3 node name and a valid single path component on every store: local POSIX file systems,
Windows and macOS file systems (case-insensitive, with reserved characters) and S3 keys.

Escaping one file-name component (:func:`node_name`)
    Plain names are kept as they are (``china.jpg``, spaces and unicode letters included).
    ``%XX`` (the UTF-8 bytes, uppercase hex) replaces exactly what is unsafe:

    * ``%`` itself, so that escaping is injective: two different file names never give one name;
    * ``/`` and ``\`` (path separators; zarr-python turns ``\`` into ``/``, a nested group);
    * control characters (below U+0020, and U+007F) and lone surrogates (undecodable bytes of a
      POSIX file name, which no store can hold);
    * the characters Windows reserves, ``< > : " | ? *``;
    * a leading ``.`` (``.``, ``..``, ``.zarray``, hidden files) and a trailing ``.`` or space
      (Windows drops them);
    * the first character of a name starting with ``__`` (reserved by the Zarr v3 spec) or equal to
      ``zarr.json`` ignoring case (the metadata file of the parent group).

    Names longer than 200 UTF-8 bytes after escaping are shortened: the stem is cut (never inside
    a ``%XX`` escape or a character) and ``~`` and 8 hex digits of the SHA-1 of the whole original
    component are added before the extension, which is kept if it is at most 16 bytes long.

Naming the images of a job (:func:`unique_names`)
    A path's components are the parts of a local path (``..`` resolved against the current folder)
    or of a URL after its protocol (``s3://bucket/a/x.png``: ``bucket``, ``a``, ``x.png``). Its
    name is its escaped file name. Names that clash get their parent folders prefixed, joined with
    ``__`` (``a/x.png``, ``b/x.png`` -> ``a__x.png``, ``b__x.png``), one more folder at a time and
    only for the names that still clash. Each component is escaped, then the rules on how a name
    starts and ends, and on its length, apply to the joined name (``_/x.png`` -> ``%5F__x.png``;
    the hash of a long one is of its components joined by ``/``). Clashes are decided ignoring
    case and Unicode normalization (NFC), because case-insensitive file systems would merge such
    names. Names that still clash with every folder prefixed (``A.png`` and ``a.png`` in one
    folder) get ``~`` and 8 hex digits of the SHA-1 of their whole path before the extension
    (more digits, or a counter for a path given twice, if that is not enough). Every input gets
    its own name, and the same list of paths always gets the same names.

Naming the frames of a file (:func:`with_suffix`, :func:`tagged`)
    With ``frames: all`` (:mod:`pipeline.inputs.frames`), each frame or page of a file that
    holds several is an image named after the file's name, with ``.frame-<i>`` or ``.page-<i>``
    added. A frame's name that clashes with a file's name of the same job gets the tag of a
    hash before that suffix, so the file keeps its name.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence

from pipeline.paths import is_url

#: Longest name, in UTF-8 bytes: well below the 255 bytes file systems allow, leaving room for
#: the arrays' keys below the group on S3 (1024 bytes per key).
MAX_BYTES = 200

#: Longest extension kept when a long name is shortened.
MAX_EXTENSION_BYTES = 16

_UNSAFE = re.compile('[\x00-\x1f\x7f%/\\\\<>:"|?*\ud800-\udfff]')

_SEPARATOR = "__"


def node_name(component: str) -> str:
    r"""The escaped form of one file-name component: a valid Zarr v3 node name on every store.

    Parameters
    ----------
    component : str
        A file or folder name (no path separator is interpreted: ``a\b`` is one name).

    Returns
    -------
    str
        ``component`` itself if it is safe, else escaped as the module docstring describes.

    Raises
    ------
    ValueError
        If ``component`` is empty.
    """
    if not component:
        raise ValueError("an empty name cannot be a node name")
    return _fit(_guard(_escape(component)), component)


def with_suffix(name: str, suffix: str, original: str) -> str:
    """``name`` (a node name) with ``suffix`` (such as ``.frame-01``) added, and still valid.

    Parameters
    ----------
    name : str
        A node name (:func:`node_name`, :func:`unique_names`).
    suffix : str
        Safe text to add, starting with ``.`` and not ending with ``.`` or a space.
    original : str
        What the result names, hashed when it is too long (as :func:`node_name` does).

    Returns
    -------
    str
        ``name + suffix``, or, when longer than :data:`MAX_BYTES`, shortened before ``suffix``
        with ``~`` and 8 hex digits of the SHA-1 of ``original``.
    """
    return _fit(name + suffix, original)


def tagged(name: str, seed: str) -> str:
    """``name`` with ``~`` and 8 hex digits of the SHA-1 of ``seed`` before its extension.

    What :func:`unique_names` does to names that clash with every folder prefixed; the result
    is at most :data:`MAX_BYTES` long.
    """
    return _with_tag(name, _sha1(seed)[:8])


def name_key(name: str) -> str:
    """What a case-insensitive, normalization-insensitive file system sees of ``name``.

    Two names clash when their keys are equal.
    """
    return _key(name)


def unique_names(paths: Sequence[str]) -> list[str]:
    """One group name per path, unique within the job (see the module docstring).

    Parameters
    ----------
    paths : sequence of str
        Local paths or URLs of the inputs.

    Returns
    -------
    list of str
        The names, in the order of ``paths``.

    Raises
    ------
    ValueError
        If a path has no file name at all (``/``).
    """
    namer = _Namer(paths)
    pending = list(namer.groups)
    while pending:
        pending = namer.grow(pending)
    namer.tell_apart()
    return namer.names


class _Namer:
    """The names of a job's paths while their clashes are resolved, in O(paths x depth).

    ``owners`` maps the key (:func:`_key`) of every name in use to one path holding it;
    ``groups`` maps the keys held by more than one path, or that once were, to all their
    holders. Paths are split into folders again when needed rather than kept split: a million
    lists would cost more in garbage collection than the naming itself.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = paths
        self.names = [node_name(_file_name(path)) for path in paths]
        self.depth: dict[int, int] = {}
        self.owners: dict[str, int] = {}
        self.groups: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            self._arrive(i, _key(name))

    def grow(self, pending: list[str]) -> list[str]:
        """Prefix one more folder to every name of the ``pending`` groups that has one.

        All of them move at once, as the clashes stood before the round; returns the groups
        that clash after it. Names that cannot grow stay in their group.
        """
        movers: list[int] = []
        grown: list[str] = []
        for key in pending:
            stay: list[int] = []
            for i in self.groups[key]:
                parts = _components(self.paths[i])
                depth = self.depth.get(i, 1) + 1
                if depth > len(parts):
                    stay.append(i)
                else:
                    movers.append(i)
                    grown.append(_name(parts, depth))
            self._leave(key, stay)
        touched = set()
        for i, name in zip(movers, grown, strict=True):
            self.depth[i] = self.depth.get(i, 1) + 1
            self.names[i] = name
            key = _key(name)
            self._arrive(i, key)
            touched.add(key)
        return [key for key in touched if len(self.groups.get(key, ())) > 1]

    def tell_apart(self) -> None:
        """Add a hash of the whole path to names that clash with every folder prefixed."""
        for key in [key for key, members in self.groups.items() if len(members) > 1]:
            members = self.groups.pop(key)
            del self.owners[key]
            for i in members:
                self._tag(i)

    def _tag(self, i: int) -> None:
        full = _joined(_components(self.paths[i]), self.depth.get(i, 1))
        for seed in _seeds(self.paths[i]):
            name = _with_tag(full, seed)
            key = _key(name)
            if key not in self.owners:
                break
        self.names[i] = name
        self.owners[key] = i

    def _arrive(self, i: int, key: str) -> None:
        if key in self.groups:
            self.groups[key].append(i)
        elif key in self.owners:
            self.groups[key] = [self.owners[key], i]
        else:
            self.owners[key] = i

    def _leave(self, key: str, stay: list[int]) -> None:
        if stay:
            self.groups[key] = stay
            self.owners[key] = stay[0]
        else:
            del self.groups[key]
            del self.owners[key]


def _seeds(path: str) -> Iterator[str]:
    """Tags to try, shortest first: the path's hash, longer, then with a counter (a path twice)."""
    digest = _sha1(path)
    yield from (digest[:8], digest[:16], digest)
    for n in itertools.count(1):
        yield _sha1(f"{path}\0{n}")[:8]


def _file_name(path: str) -> str:
    """The last component of ``path``, without splitting all of it in the common case."""
    tail = path.rpartition("/" if is_url(path) else os.sep)[2]
    return tail if tail not in ("", ".", "..") else _components(path)[-1]


def _components(path: str) -> list[str]:
    """The non-empty components of a local path or of a URL after its protocol."""
    if is_url(path):
        parts = [part for part in path.split("://", 1)[1].split("/") if part and part != "."]
    else:
        parts = [part for part in path.split(os.sep) if part and part != "."]
        if not parts or ".." in parts:
            parts = [part for part in os.path.abspath(path).split(os.sep) if part]
    if not parts:
        raise ValueError(f"{path!r} has no file name")
    return parts


def _name(parts: list[str], depth: int) -> str:
    """The group name of a path with its ``depth - 1`` innermost folders prefixed."""
    return _fit(_joined(parts, depth), "/".join(parts[-depth:]))


def _joined(parts: list[str], depth: int) -> str:
    """The ``depth`` innermost components, escaped and joined, not yet shortened."""
    return _guard(_SEPARATOR.join(_escape(part) for part in parts[-depth:]))


def _escape(text: str) -> str:
    """``text`` with every unsafe character percent-encoded."""
    return _UNSAFE.sub(lambda match: _percent(match.group()), text)


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def _guard(name: str) -> str:
    """``name`` with the characters escaped that make a whole name unsafe (leading, trailing)."""
    if name.startswith((".", _SEPARATOR)) or name.casefold() == "zarr.json":
        name = _percent(name[0]) + name[1:]
    if name.endswith((".", " ")):
        name = name[:-1] + _percent(name[-1])
    return name


def _fit(name: str, original: str) -> str:
    """``name`` if it is short enough, else shortened with a hash of ``original``."""
    if len(name.encode()) <= MAX_BYTES:
        return name
    return _with_tag(name, _sha1(original)[:8])


def _with_tag(name: str, tag: str) -> str:
    """``name`` with ``~tag`` before its extension, the stem cut to fit ``MAX_BYTES``."""
    stem, extension = _split_extension(name)
    budget = MAX_BYTES - len(extension.encode()) - len(tag) - 1
    cut = stem.encode()[:budget].decode(errors="ignore")
    # A '%' is always the start of an escape: never leave one cut short.
    percent = cut.find("%", max(0, len(cut) - 2))
    if percent >= 0:
        cut = cut[:percent]
    return f"{cut}~{tag}{extension}"


def _split_extension(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot > 0 and len(name[dot:].encode()) <= MAX_EXTENSION_BYTES:
        return name[:dot], name[dot:]
    return name, ""


def _key(name: str) -> str:
    """What a case-insensitive, normalization-insensitive file system sees of ``name``."""
    return unicodedata.normalize("NFC", name.casefold())


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()
