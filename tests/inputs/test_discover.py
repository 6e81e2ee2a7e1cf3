from __future__ import annotations

import glob
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from pipeline.inputs.discover import Entry, discover
from pipeline.store.location import Location


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail, rather than hang, if the block takes longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def touch(path: Path, content: bytes = b"") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def zarr_array(path: Path) -> str:
    zarr.create_array(str(path), shape=(4, 4, 3), dtype="uint8")
    return str(path)


def paths(found: tuple[list[Entry], list[object]]) -> list[str]:
    entries, errors = found
    assert errors == []
    return [entry.path for entry in entries]


def problems(found: tuple[list[Entry], list[object]]) -> list[str]:
    entries, errors = found
    assert entries == []
    return [str(error) for error in errors]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Images, other files, a Zarr array, a Zarr group, a broken link and a subfolder."""
    root = tmp_path / "in"
    touch(root / "a.png", b"png")
    touch(root / "B.JPG", b"jpeg!")
    touch(root / "c.tiff")
    touch(root / "notes.txt", b"not an image")
    touch(root / "sub" / "deep.png")
    zarr_array(root / "array.zarr")
    zarr.open_group(str(root / "group.zarr"), mode="w")
    os.symlink("nowhere.png", root / "broken.png")
    os.symlink("a.png", root / "link.png")
    (root / "folder.png").mkdir()
    return root


def test_a_folder_gives_its_images_and_zarr_arrays(folder):
    found = paths(discover([str(folder)]))
    expected = ["B.JPG", "a.png", "array.zarr", "c.tiff", "link.png"]
    assert found == [str(folder / name) for name in expected]


def test_sizes_and_versions_come_from_stat(folder):
    entries, _ = discover([str(folder)])
    for entry in entries:
        info = os.stat(entry.path)
        assert entry.version == str(info.st_mtime_ns)
        assert entry.size == (None if entry.zarr else info.st_size)
        assert entry.zarr == entry.path.endswith(".zarr")
    globbed, _ = discover([str(folder / "*.png")])
    assert [(e.size, e.version) for e in globbed] == [
        (os.stat(e.path).st_size, str(os.stat(e.path).st_mtime_ns)) for e in globbed
    ]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("in", "in/a.png"),
        ("in/", "in/a.png"),
        ("./in", "in/a.png"),
        ("in//", "in/a.png"),
        ("in/*.png", "in/a.png"),
        ("./in/*.png", "./in/a.png"),
        ("in//*.png", "in/a.png"),
        ("in/../in/*.png", "in/../in/a.png"),
        ("in/a.png", "in/a.png"),
        ("./in/a.png", "./in/a.png"),
    ],
    ids=lambda value: repr(value),
)
def test_paths_are_spelled_as_before(tmp_path, monkeypatch, item, expected):
    touch(tmp_path / "in" / "a.png")
    monkeypatch.chdir(tmp_path)
    assert paths(discover([item])) == [expected]


def test_the_current_folder(tmp_path, monkeypatch):
    touch(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    assert paths(discover(["."])) == ["a.png"]
    assert paths(discover(["*.png"])) == ["a.png"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Files at several depths, hidden ones, upper case, a Zarr array; no links to folders."""
    root = tmp_path / "tree"
    for name in [
        "a.png",
        "b.jpg",
        "C.PNG",
        ".hidden.png",
        "x/a.png",
        "x/y/z.png",
        "x/y/z.txt",
        "x/.h/in-hidden.png",
        ".dot/d.png",
        "[ab].png",
        "sp ace/s.png",
    ]:
        touch(root / name)
    zarr_array(root / "x" / "arr.zarr")
    os.symlink("a.png", root / "x" / "file-link.png")
    return root


@pytest.mark.parametrize(
    "pattern",
    [
        "*.png",
        "*",
        "**",
        "**/*.png",
        "**/*",
        "x/**/*.png",
        "x/**",
        "*/*.png",
        "*/y/*",
        "**/y/*.png",
        ".*",
        "**/.*",
        ".dot/*",
        "x/.h/*",
        "[ab].png",
        "[[]ab].png",
        "?.png",
        "**/**/*.png",
        "x/*/",
        "sp ace/*",
    ],
)
def test_globs_match_like_glob_glob(tree, monkeypatch, pattern):
    monkeypatch.chdir(tree)
    # glob.glob repeats what "**/**" reaches twice: discover lists each file once.
    expected = sorted({p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)})
    found, errors = discover([pattern])
    assert [e.path for e in found] == expected
    nothing = [f"{pattern}: no file matches this pattern"]
    assert [str(e) for e in errors] == ([] if expected else nothing)
    absolute = sorted(
        {p for p in glob.glob(str(tree / pattern), recursive=True) if os.path.isfile(p)}
    )
    assert [e.path for e in discover([str(tree / pattern)])[0]] == absolute


def test_a_recursive_glob_never_follows_a_link_loop(tmp_path):
    root = tmp_path / "tree"
    files = [touch(root / "a.png"), touch(root / "x" / "b.png"), touch(root / "x" / "y" / "c.png")]
    os.symlink("..", root / "x" / "up")
    os.symlink("../..", root / "x" / "y" / "top")
    os.symlink(".", root / "x" / "y" / "self")
    with deadline(20):
        found = paths(discover([str(root / "**" / "*.png")]))
        everything = paths(discover([str(root / "**")]))
    assert found == sorted(files)
    assert everything == sorted(files)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: os.symlink(p.name, p), "symbolic link loop"),
        (lambda p: None, "no such file"),
        (lambda p: os.symlink("nowhere.png", p), "no such file"),
        (os.mkfifo, "not a file"),
    ],
    ids=["loop", "missing", "broken-link", "fifo"],
)
def test_an_explicit_path_that_is_no_file_is_one_error(tmp_path, make, problem):
    path = tmp_path / "input.png"
    make(path)
    assert problems(discover([str(path)])) == [f"{path}: {problem}"]


def test_a_missing_store_name_given_as_an_input_points_to_store_option(tmp_path):
    path = str(tmp_path / "out.zarr")
    assert problems(discover([path])) == [
        f"{path}: no such file (the store to write is named with --out)"
    ]


def test_a_path_below_a_file_is_an_error(tmp_path):
    file = touch(tmp_path / "a.png")
    assert problems(discover([file + "/b.png"])) == [f"{file}/b.png: not a directory"]


def test_a_glob_that_matches_nothing_is_an_error(tmp_path):
    touch(tmp_path / "a.txt")
    pattern = str(tmp_path / "*.png")
    assert problems(discover([pattern])) == [f"{pattern}: no file matches this pattern"]


def test_errors_do_not_stop_the_other_items(folder, tmp_path):
    entries, errors = discover([str(tmp_path / "gone.png"), str(folder / "a.png")])
    assert [e.path for e in entries] == [str(folder / "a.png")]
    assert [e.source for e in errors] == [str(tmp_path / "gone.png")]


def test_explicit_files_and_zarr_arrays(folder):
    entries, errors = discover([str(folder / "notes.txt"), str(folder / "array.zarr")])
    assert errors == []
    assert [(e.path, e.zarr) for e in entries] == [
        (str(folder / "notes.txt"), False),
        (str(folder / "array.zarr"), True),
    ]
    assert entries[0].size == len(b"not an image")
    assert entries[1].size is None


def test_globs_do_not_match_zarr_arrays(folder):
    assert str(folder / "array.zarr") not in paths(discover([str(folder / "*")]))


def test_duplicates_keep_the_first(folder):
    found = paths(discover([str(folder / "c.tiff"), str(folder), str(folder / "*.png")]))
    assert found[0] == str(folder / "c.tiff")
    assert len(found) == len(set(found)) == 5


@pytest.mark.parametrize(
    "spelling",
    ["absolute", "relative", "trailing-slash", "through-a-link"],
)
def test_the_output_store_is_left_out(tmp_path, monkeypatch, spelling):
    touch(tmp_path / "in" / "a.png")
    zarr_array(tmp_path / "in" / "b.zarr")
    group = zarr.open_group(str(tmp_path / "in" / "out.zarr"), mode="w")
    group.create_array("img.png", shape=(2,), dtype="uint8")
    zarr_array(tmp_path / "in" / "out.zarr" / "old.zarr")
    os.symlink("in", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    store = {
        "absolute": str(tmp_path / "in" / "out.zarr"),
        "relative": "in/out.zarr",
        "trailing-slash": "in/out.zarr/",
        "through-a-link": "link/out.zarr",
    }[spelling]
    items = ["in", "in/**", "in/out.zarr", "in/out.zarr/old.zarr", "in/out.zarr/*"]
    entries, errors = discover(items, exclude=Location.at(store))
    assert errors == []
    assert [e.path for e in entries] == ["in/a.png", "in/b.zarr", "in/b.zarr/zarr.json"]
    assert [e.path for e in discover(["in/**"], exclude=Location.at("in/out"))[0]] == [
        p for p in sorted(glob.glob("in/**", recursive=True)) if os.path.isfile(p)
    ]


@pytest.fixture
def bucket() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = "/discover-test"
    for name in ["a.png", "B.JPG", "notes.txt", "sub/c.png"]:
        fs.pipe(f"{root}/{name}", name.encode())
    fs.pipe(f"{root}/arr.zarr/zarr.json", b'{"zarr_format": 3, "node_type": "array"}')
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def test_urls_are_listed_with_fsspec(bucket):
    assert paths(discover([bucket])) == [
        f"{bucket}/B.JPG",
        f"{bucket}/a.png",
        f"{bucket}/arr.zarr",
    ]
    assert paths(discover([f"{bucket}/**/*.png"])) == [f"{bucket}/a.png", f"{bucket}/sub/c.png"]
    assert paths(discover([f"{bucket}/arr.zarr"])) == [f"{bucket}/arr.zarr"]
    entries, _ = discover([f"{bucket}/sub/c.png"])
    assert entries[0].size == len(b"sub/c.png")
    assert problems(discover([f"{bucket}/gone.png"])) == [f"{bucket}/gone.png: no such file"]
    assert problems(discover([f"{bucket}/*.gif"])) == [
        f"{bucket}/*.gif: no file matches this pattern"
    ]
    assert paths(discover([bucket], exclude=Location.at(f"{bucket}/arr.zarr/"))) == [
        f"{bucket}/B.JPG",
        f"{bucket}/a.png",
    ]


def test_a_large_folder_is_listed_quickly(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(20_000):
        os.close(os.open(root / f"img{i:05}.png", os.O_CREAT | os.O_WRONLY))
    start = time.perf_counter()
    entries, errors = discover([str(root)], exclude=Location.at(str(tmp_path / "out.zarr")))
    assert time.perf_counter() - start < 10
    assert len(entries) == 20_000
    assert errors == []
    start = time.perf_counter()
    assert len(discover([str(root / "**" / "*.png")])[0]) == 20_000
    assert time.perf_counter() - start < 10


def test_an_unknown_protocol_is_one_error():
    (message,) = problems(discover(["nope://bucket/x.png"]))
    assert message.startswith("nope://bucket/x.png: ")
    assert "\n" not in message


def test_names_of_dots_and_an_extension_are_found_in_folders(tmp_path):
    root = tmp_path / "dots"
    for name in ["..png", ".png", "...jpg", ".hidden.JPG", "._photo.jpg", "png", "x.png.txt"]:
        touch(root / name)
    expected = ["...jpg", "..png", "._photo.jpg", ".hidden.JPG", ".png"]
    assert paths(discover([str(root)])) == [str(root / name) for name in expected]
    # as given directly, and as a glob spelled to match hidden names
    assert paths(discover([str(root / "..png")])) == [str(root / "..png")]
    assert paths(discover([str(root / ".*png")])) == [str(root / "..png"), str(root / ".png")]
    # a glob's * leaves hidden names out, as glob.glob does
    assert problems(discover([str(root / "*.png")])) == [
        f"{root}/*.png: no file matches this pattern"
    ]


def test_names_of_dots_and_an_extension_are_found_in_buckets():
    fs = fsspec.filesystem("memory")
    root = "/dots-test"
    for name in ["..png", ".png", "x.png.txt"]:
        fs.pipe(f"{root}/{name}", b"x")
    try:
        found = paths(discover([f"memory://{root}"]))
        assert found == [f"memory://{root}/..png", f"memory://{root}/.png"]
        assert paths(discover([f"memory://{root}/..png"])) == [f"memory://{root}/..png"]
    finally:
        fs.rm(root, recursive=True)


def test_names_of_dots_are_stored_under_names_that_are_not_hidden(tmp_path):
    from pipeline import compress, open_store

    root = tmp_path / "dots"
    root.mkdir()
    pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    for name in ["..png", ".png", "%2E.png"]:
        iio.imwrite(root / name, pixels, extension=".png")
    store = tmp_path / "out.zarr"
    results = compress([str(root)], str(store), colors=4, sample=64, chunk=16)
    names = {Path(r.source).name: r.name for r in results if r.status == "done"}
    assert names == {"..png": "%2E.png", ".png": "%2Epng", "%2E.png": "%252E.png"}
    assert sorted(open_store(str(store))) == sorted(names.values())
