"""A file's frames as images of their own: names, counts, and how lazily headers are read."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator

import numpy as np
import tifffile
from PIL import Image as PILImage

from pipeline.inputs.discover import Entry
from pipeline.inputs.frames import (
    Image,
    count_frames,
    expand,
    frame_of,
    may_hold_frames,
    named_frame,
    plain,
    suffix,
)
from pipeline.inputs.names import MAX_BYTES, unique_names
from tests.inputs.test_names import is_node_name


def entry(path: str, size: int = 100) -> Entry:
    return Entry(path, size, "1")


def counted(frames: dict[str, tuple[int, bool]]):
    """A frame counter from a table (1 frame for others), and the paths it was asked about."""
    asked: list[str] = []

    def count(path: str) -> tuple[int, bool]:
        asked.append(path)
        return frames.get(path, (1, False))

    return count, asked


def test_frames_are_named_after_their_file_padded_to_the_count():
    entries = [entry("a/anim.gif"), entry("a/photo.jpg"), entry("a/scan.tif"), entry("a/one.png")]
    count, asked = counted({"a/anim.gif": (12, False), "a/scan.tif": (3, True)})
    more: list[int] = []
    images = list(
        expand(entries, unique_names([e.path for e in entries]), count=count, on_more=more.append)
    )
    names = [image.name for image in images]
    assert names == [
        *(f"anim.gif.frame-{i:02d}" for i in range(1, 13)),
        "photo.jpg",
        "scan.tif.page-1",
        "scan.tif.page-2",
        "scan.tif.page-3",
        "one.png",
    ]
    assert [image.frame for image in images[:12]] == list(range(12))
    assert images[12] == Image(entries[1], "photo.jpg")  # a JPEG is never opened
    assert images[-1] == Image(entries[3], "one.png")  # one frame: its plain name, no frame
    assert asked == ["a/anim.gif", "a/scan.tif", "a/one.png"]
    assert more == [11, 2]
    assert all(is_node_name(name) for name in names)


def test_frames_first_reads_nothing():
    entries = [entry("anim.gif"), entry("b.png")]
    assert list(plain(entries, ["anim.gif", "b.png"])) == [
        Image(entries[0], "anim.gif"),
        Image(entries[1], "b.png"),
    ]


def test_which_files_are_opened():
    assert may_hold_frames(entry("x/a.GIF"))
    assert may_hold_frames(entry("s3://bucket/a.tiff"))
    assert may_hold_frames(entry("a.apng"))
    assert may_hold_frames(entry("no-extension"))  # its signature decides
    assert not may_hold_frames(entry("a.jpeg"))
    assert not may_hold_frames(entry("a.bmp"))
    assert not may_hold_frames(Entry("a.zarr", None, "", zarr=True))


def test_a_frames_share_of_the_file_adds_up_to_its_size():
    shares = [Image(entry("a.gif", 100), "n", i, 3).size for i in range(3)]
    assert shares == [34, 33, 33]
    assert Image(entry("a.gif", 100), "a.gif").size == 100


def test_a_frame_name_that_is_another_files_name_is_tagged():
    paths = ["d/anim.gif", "d/anim.gif.frame-2", "d/other.gif"]
    count, _ = counted({"d/anim.gif": (3, False), "d/other.gif": (2, False)})
    names = [
        image.name for image in expand([entry(p) for p in paths], unique_names(paths), count=count)
    ]
    assert names[0] == "anim.gif.frame-1"
    assert re.fullmatch(r"anim\.gif~[0-9a-f]{8}\.frame-2", names[1])
    assert names[2:] == [
        "anim.gif.frame-3",
        "anim.gif.frame-2",
        "other.gif.frame-1",
        "other.gif.frame-2",
    ]
    assert len({name.casefold() for name in names}) == len(names)
    assert frame_of(names[1], {"anim.gif"})
    assert frame_of("other.gif.frame-1", {"other.gif"})
    assert not frame_of("anim.gif", {"anim.gif"})
    assert not frame_of("x.frame-1", {"anim.gif"})


def test_a_long_name_keeps_its_frame_suffix_and_fits():
    path = "x" * 195 + ".gif"
    count, _ = counted({path: (10, False)})
    names = [image.name for image in expand([entry(path)], unique_names([path]), count=count)]
    assert len(set(names)) == 10
    assert all(len(name.encode()) <= MAX_BYTES and is_node_name(name) for name in names)
    assert names[9].endswith(".frame-10")


def test_a_recorded_frame_tells_a_frame_image_from_a_first_frame():
    assert suffix(0, 12) == ".frame-01"
    assert suffix(8, 9, paged=True) == ".page-9"
    assert named_frame("a.gif.frame-2", 1, 3)
    assert named_frame("a.tif.page-02", 1, 10)
    assert not named_frame("a.gif", 0, 3)  # frames: first
    assert not named_frame("a.gif.frame-2", 1, 1)


class Listed:
    """Entries as a sequence that records how far it has been read."""

    def __init__(self, n: int) -> None:
        self.n, self.read = n, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Entry]:
        for i in range(self.n):
            self.read = i + 1
            yield entry(f"{i}.gif")


def test_headers_are_read_lazily_a_bounded_window_ahead():
    entries = Listed(1_000_000)
    names = [f"{i}.gif" for i in range(entries.n)]
    release = threading.Event()

    def count(path: str) -> tuple[int, bool]:
        if path == "0.gif":
            release.wait(10)
        return (2, False) if path == "1.gif" else (1, False)

    images = expand(entries, names, count=count, threads=2, window=8)  # type: ignore[arg-type]
    assert entries.read == 0  # nothing before it is asked
    first: list[Image] = []
    waiting = threading.Thread(target=lambda: first.append(next(images)))
    waiting.start()
    time.sleep(0.3)
    assert not first
    assert entries.read <= 8
    release.set()
    waiting.join(10)
    assert first[0].name == "0.gif"
    following = [image.name for image in itertools.islice(images, 3)]
    assert following == ["1.gif.frame-1", "1.gif.frame-2", "2.gif"]  # in input order
    assert entries.read <= 4 + 8
    images.close()


def test_count_frames_reads_real_headers(tmp_path):
    pictures = [PILImage.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 120, 240)]
    pictures[0].save(tmp_path / "a.gif", save_all=True, append_images=pictures[1:])
    pictures[0].save(tmp_path / "a.png", save_all=True, append_images=pictures[1:])
    pictures[0].save(tmp_path / "a.webp", save_all=True, append_images=pictures[1:], lossless=True)
    pictures[0].save(tmp_path / "one.png")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 8, 8), np.uint8), photometric="minisblack")
    (tmp_path / "bad.gif").write_bytes(b"GIF89a not really")
    assert count_frames(str(tmp_path / "a.gif")) == (3, False)
    assert count_frames(str(tmp_path / "a.png")) == (3, False)
    assert count_frames(str(tmp_path / "a.webp")) == (3, False)
    assert count_frames(str(tmp_path / "a.tif")) == (4, True)
    assert count_frames(str(tmp_path / "one.png")) == (1, False)
    assert count_frames(str(tmp_path / "bad.gif")) == (1, False)  # its job reports it
    assert count_frames(str(tmp_path / "missing.gif")) == (1, False)
