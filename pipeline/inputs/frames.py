"""The images of a job's inputs: a file's frames or pages as images of their own, lazily.

With ``frames: first`` (the default), every input is one image named after its file
(:func:`plain`), and no header is read on the client. With ``frames: all`` (:func:`expand`),
every frame of an animated GIF, WebP or PNG (APNG) and every page of a multi-page TIFF is an
image of its own, named after the file with ``.frame-<i>`` or ``.page-<i>`` added: ``i`` from
1, zero-padded to the width of the count (``anim.gif.frame-01`` .. ``anim.gif.frame-12``). A
file of one frame keeps its plain name.

Counting frames reads a file's header on the client (:func:`count_frames`, through
:func:`~pipeline.inputs.looks.read_looks`: a PNG's chunks up to its pixels, a TIFF's page
directories, Pillow's ``n_frames`` of a GIF or WebP). Only files whose format can hold several
frames are opened: those named ``.gif``, ``.webp``, ``.png``, ``.apng``, ``.tif`` or
``.tiff``, and files without a known image extension (given by name: their signature decides).
A local file is read where it lies; a file behind a URL is fetched whole, except a PNG whose
first :data:`~pipeline.inputs.sources.HEADER_BYTES` reach its pixels (APNG's frame count comes
before them). Headers are read by a few threads, a bounded window of files ahead of the one
being yielded, so a million inputs cost a million header reads but never a million pending
tasks. A file whose header cannot be read is one image (its problem is then reported when the
job reads it, as for any file).

A frame's name that clashes with the name of another input of the job (a file really named
``anim.gif.frame-1``) gets a hash of the file's path and the frame before its suffix
(``anim.gif~1a2b3c4d.frame-1``); the file keeps its name (:mod:`pipeline.inputs.names`).
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Container, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.inputs.discover import IMAGE_EXTENSIONS, Entry
from pipeline.inputs.looks import PNG_SIGNATURE, read_looks
from pipeline.inputs.names import name_key, tagged, with_suffix
from pipeline.inputs.sources import HEADER_BYTES
from pipeline.paths import is_url, read_bytes

#: Extensions of the formats that can hold several frames or pages.
MULTI_FRAME_EXTENSIONS = frozenset({".gif", ".webp", ".png", ".apng", ".tif", ".tiff"})
#: Extensions of image formats that hold one picture: such files are never opened here.
SINGLE_FRAME_EXTENSIONS = IMAGE_EXTENSIONS - MULTI_FRAME_EXTENSIONS

#: Threads reading headers, and files planned ahead of the one being yielded.
THREADS = 8
WINDOW = 64

#: How a frame image's name ends: ``.frame-<i>`` or ``.page-<i>``.
FRAME_SUFFIX = re.compile(r"\.(frame|page)-[0-9]+\Z")
#: The tag of a frame's name told apart from another input's name.
TAG = re.compile(r"~[0-9a-f]{8}\Z")


@dataclass(frozen=True, slots=True)
class Image:
    """One image of a job: a file, or one frame or page of a file.

    Attributes
    ----------
    entry : Entry
        The input file (or Zarr array) it is read from.
    name : str
        Its group name in the store.
    frame : int or None
        The frame or page (0-based) it is, for a file of several whose frames are images of
        their own; None for a file taken as one image (its first frame).
    frames : int
        How many images its file gives (1 unless ``frame`` is given).
    """

    entry: Entry
    name: str
    frame: int | None = None
    frames: int = 1

    @property
    def size(self) -> int:
        """Its share of the file's bytes (0 when unknown): the file's size split evenly.

        The shares of a file's frames add up to its size, so that a job's bytes add up too.
        """
        total = self.entry.size or 0
        if self.frame is None or self.frames <= 1:
            return total
        share, extra = divmod(total, self.frames)
        return share + (1 if self.frame < extra else 0)


def suffix(frame: int, frames: int, paged: bool = False) -> str:
    """``.frame-<i>`` (``.page-<i>`` when ``paged``): ``i = frame + 1``, padded to ``frames``."""
    return f".{'page' if paged else 'frame'}-{frame + 1:0{len(str(frames))}d}"


def frame_of(name: str, files: Container[str]) -> bool:
    """Whether ``name`` is named as a frame or page image of a file named one of ``files``.

    A hash tag added to tell a frame apart (see the module docstring) is looked past.
    """
    match = FRAME_SUFFIX.search(name)
    if match is None:
        return False
    base = name[: match.start()]
    return base in files or TAG.sub("", base) in files


def named_frame(name: str, frame: int, frames: int) -> bool:
    """Whether image ``name``, recorded as ``frame`` of ``frames``, was stored as a frame image.

    (Rather than as its file's first frame, named after the file, under ``frames: first``.)
    """
    return frames > 1 and name.endswith((suffix(frame, frames), suffix(frame, frames, True)))


def may_hold_frames(entry: Entry) -> bool:
    """Whether ``entry``'s header is worth reading for frames (see the module docstring)."""
    if entry.zarr:
        return False
    tail = entry.path.rstrip("/").rsplit("/", 1)[-1]
    dot = tail.rfind(".")
    return dot < 0 or tail[dot:].lower() not in SINGLE_FRAME_EXTENSIONS


def count_frames(path: str) -> tuple[int, bool]:
    """Frames or pages a file holds, by its header, and whether they are pages (TIFF).

    Parameters
    ----------
    path : str
        A local path or a URL.

    Returns
    -------
    frames : int
        At least 1; 1 when the header cannot be read.
    paged : bool
        Whether the frames are a TIFF's pages.
    """
    try:
        looks = read_looks(_header(path))
    except Exception:
        return 1, False
    return max(1, looks.frames), looks.paged


def _header(path: str) -> str | bytes:
    """What :func:`read_looks` reads a file's frames from: its path, or a URL's bytes."""
    if not is_url(path):
        return path
    head = read_bytes(path, HEADER_BYTES)
    if len(head) < HEADER_BYTES or (head.startswith(PNG_SIGNATURE) and b"IDAT" in head):
        return head
    return read_bytes(path)


def plain(entries: Sequence[Entry], names: Sequence[str]) -> Iterator[Image]:
    """Each entry as one image, named ``names`` (``frames: first``): nothing is read."""
    for entry, name in zip(entries, names, strict=True):
        yield Image(entry, name)


def expand(
    entries: Sequence[Entry],
    names: Sequence[str],
    *,
    count: Callable[[str], tuple[int, bool]] = count_frames,
    threads: int = THREADS,
    window: int = WINDOW,
    on_more: Callable[[int], None] | None = None,
) -> Iterator[Image]:
    """The images of ``entries`` (named ``names``) with every frame or page its own image.

    Lazily and in input order; see the module docstring.

    Parameters
    ----------
    entries : sequence of Entry
        The job's inputs.
    names : sequence of str
        Their names (:func:`pipeline.inputs.names.unique_names`), in the same order.
    count : callable, optional
        Frames of a file and whether they are pages, given its path (:func:`count_frames`).
    threads : int
        Headers read at once.
    window : int
        Most entries planned ahead of the image being yielded (each header read at most).
    on_more : callable, optional
        Called with the number of images a file adds to the job (its frames but one) as soon
        as they are known, e.g. to grow a progress count.

    Yields
    ------
    Image
        One per file of one frame, one per frame or page of other files.
    """
    taken = {name_key(name) for name in names}
    tags: set[str] = set()
    pending: deque[tuple[Entry, str, Future[tuple[int, bool]] | None]] = deque()
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="frames")
    try:
        for entry, name in zip(entries, names, strict=True):
            wanted = may_hold_frames(entry)
            pending.append((entry, name, pool.submit(count, entry.path) if wanted else None))
            while pending and (len(pending) >= window or _ready(pending[0][2])):
                yield from _images(*pending.popleft(), taken, tags, on_more)
        while pending:
            yield from _images(*pending.popleft(), taken, tags, on_more)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ready(future: Future[tuple[int, bool]] | None) -> bool:
    return future is None or future.done()


def _images(
    entry: Entry,
    name: str,
    future: Future[tuple[int, bool]] | None,
    taken: set[str],
    tags: set[str],
    on_more: Callable[[int], None] | None,
) -> Iterator[Image]:
    """The images of one entry, once its frames are counted."""
    frames, paged = future.result() if future is not None else (1, False)
    if frames <= 1:
        yield Image(entry, name)
        return
    if on_more is not None:
        on_more(frames - 1)
    for frame in range(frames):
        named = _frame_name(entry.path, name, frame, frames, paged, taken, tags)
        yield Image(entry, named, frame, frames)


def _frame_name(
    path: str, name: str, frame: int, frames: int, paged: bool, taken: set[str], tags: set[str]
) -> str:
    """The name of one frame image: unique among the job's names (see the module docstring).

    ``taken``: the keys of the job's file names; ``tags``: those of the tagged frame names
    given so far. A tagged name must clash neither with them nor with the plain frame names
    of another file (those of a file named as it is without the suffix).
    """
    end = suffix(frame, frames, paged)
    seed = f"{path}\0{end}"
    plain_name = with_suffix(name, end, seed)
    if name_key(plain_name) not in taken:
        return plain_name
    for n in itertools.count(1):
        candidate = tagged(plain_name, seed if n == 1 else f"{seed}\0{n}")
        key = name_key(candidate)
        if key not in taken and key not in tags and name_key(candidate[: -len(end)]) not in taken:
            tags.add(key)
            return candidate
    raise AssertionError("unreachable")
