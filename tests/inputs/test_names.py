from __future__ import annotations

import re
import tempfile
import time
import unicodedata

import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.inputs.names import MAX_BYTES, node_name, unique_names

HASH = "[0-9a-f]{8}"


def is_node_name(name: str) -> bool:
    """The Zarr v3 spec's rules, plus what zarr-python and case-insensitive stores need."""
    return (
        name != ""
        and "/" not in name
        and "\\" not in name
        and name.strip(".") != ""
        and not name.startswith("__")
        and name.casefold() != "zarr.json"
        and not name.startswith(".")
        and not name.endswith((".", " "))
        and len(name.encode()) <= MAX_BYTES
    )


def well_cut(name: str) -> bool:
    """Every '%' starts a whole escape: shortening never cut one."""
    return all(
        re.fullmatch("%[0-9A-F]{2}", name[i : i + 3]) for i, c in enumerate(name) if c == "%"
    )


def stored_names(names: list[str]) -> set[str]:
    """Create every name as a group of one fresh store; the names the store lists back."""
    with tempfile.TemporaryDirectory() as folder:
        root = zarr.open_group(f"{folder}/s.zarr", mode="w")
        for name in names:
            root.create_group(name)
        return set(zarr.open_group(f"{folder}/s.zarr", mode="r").group_keys())


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        ("china.jpg", "china.jpg"),
        ("my photo 2.png", "my photo 2.png"),
        ("été_北京.tif", "été_北京.tif"),
        ("a~b-c_d.png", "a~b-c_d.png"),
        ("_x.png", "_x.png"),
        ("%41.png", "%2541.png"),
        ("a/b.png", "a%2Fb.png"),
        ("back\\slash.png", "back%5Cslash.png"),
        ("..\\x.png", "%2E.%5Cx.png"),
        ("\\dup.png", "%5Cdup.png"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        (".zarray", "%2Ezarray"),
        (".hidden.png", "%2Ehidden.png"),
        ("x.", "x%2E"),
        ("x ", "x%20"),
        (" x", " x"),
        ("__x.png", "%5F_x.png"),
        ("zarr.json", "%7Aarr.json"),
        ("Zarr.JSON", "%5Aarr.JSON"),
        ("zarr.json.png", "zarr.json.png"),
        ("tab\there.png", "tab%09here.png"),
        ("nl\n\r.png", "nl%0A%0D.png"),
        ("del\x7f.png", "del%7F.png"),
        ("nul\x00.png", "nul%00.png"),
        ('w<>:"|?*.png', "w%3C%3E%3A%22%7C%3F%2A.png"),
        ("bad\udcff.png", "bad%ED%B3%BF.png"),
    ],
    ids=lambda value: repr(value),
)
def test_node_name(component, expected):
    assert node_name(component) == expected
    assert is_node_name(expected)


def test_node_name_rejects_an_empty_name():
    with pytest.raises(ValueError, match="empty"):
        node_name("")


@pytest.mark.parametrize(
    "component",
    [
        "x" * 251 + ".jpg",
        "é" * 150 + ".png",
        "北" * 100 + ".tiff",
        "%" * 100 + ".png",
        "a" * 197 + "%" * 10,
        "😀" * 60,
        "." + "y" * 300,
        "z" * 300 + ".averyveryverylongextension",
    ],
    ids=["ascii", "2-byte", "3-byte", "escapes", "escape-at-cut", "4-byte", "hidden", "long-ext"],
)
def test_long_names_are_cut_with_a_hash(component):
    name = node_name(component)
    assert len(name.encode()) <= MAX_BYTES
    assert is_node_name(name)
    assert well_cut(name)
    assert re.search(f"~{HASH}(\\.[a-z]+)?$", name)
    if len(component) - component.rfind(".") <= 16:
        assert name.endswith(component[component.rfind(".") :])
    assert node_name(component[:-1] + "!") != name  # the hash is of the whole name


def test_names_of_exactly_the_limit_are_kept():
    assert node_name("x" * MAX_BYTES) == "x" * MAX_BYTES
    assert node_name("x" * (MAX_BYTES + 1)) != "x" * (MAX_BYTES + 1)


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["a/x.png", "b/x.png", "c/y.png"], ["a__x.png", "b__x.png", "y.png"]),
        (["/data/china.jpg"], ["china.jpg"]),
        (["p/a/x.png", "p/b/x.png", "q/a/x.png"], ["p__a__x.png", "b__x.png", "q__a__x.png"]),
        (["x.png", "a/x.png"], ["x.png", "a__x.png"]),
        (["a/x.png", "b/x.png", "c/a__x.png"], ["a__x.png", "b__x.png", "c__a__x.png"]),
        (["s3://bucket/a/x.png", "s3://bucket/b/x.png"], ["a__x.png", "b__x.png"]),
        (["s3://one/x.png", "s3://two/x.png"], ["one__x.png", "two__x.png"]),
        (["a/x.png", "b/X.PNG"], ["a__x.png", "b__X.PNG"]),
        (["dup.png", "\\dup.png"], ["dup.png", "%5Cdup.png"]),
        (["back\\slash.png"], ["back%5Cslash.png"]),
        (["..\\x.png"], ["%2E.%5Cx.png"]),
        (["in/zarr.json"], ["%7Aarr.json"]),
        (["_/x.png", "b/x.png"], ["%5F__x.png", "b__x.png"]),
        (["a./x.png", "b/x.png"], ["a.__x.png", "b__x.png"]),
        (["in/ctl\x01.png", "in/.x.png"], ["ctl%01.png", "%2Ex.png"]),
        (["a/./x.png", "a//y.png"], ["x.png", "y.png"]),
    ],
    ids=lambda value: repr(value),
)
def test_unique_names(paths, expected):
    assert unique_names(paths) == expected


@pytest.mark.parametrize(
    "paths",
    [
        ["A.png", "a.png"],
        ["in/A.png", "in/a.png"],
        ["a/x.png", "A/X.PNG"],
        ["x.png", "x.png"],
        ["x.png", "x.png", "x.png"],
        ["a/x.png", "./a/x.png"],
        ["a/x.png", "a//x.png", "a/./x.png"],
        ["a_/x.png", "b/x.png", "a/_x.png", "c/_x.png"],
        ["in/e\u0301.png", "in/\u00e9.png"],
        ["in/" + "L" * 251, "in/" + "l" * 251],
    ],
    ids=[
        "case",
        "case-in-folder",
        "case-of-folders",
        "twice",
        "three-times",
        "dot",
        "spellings",
        "separator",
        "nfc",
        "long",
    ],
)
def test_names_that_clash_are_told_apart(paths):
    names = unique_names(paths)
    assert len({unicodedata.normalize("NFC", n.casefold()) for n in names}) == len(paths)
    assert all(is_node_name(n) for n in names)
    assert stored_names(names) == set(names)


def test_a_hash_goes_before_the_extension():
    names = unique_names(["in/A.png", "in/a.png"])
    assert re.fullmatch(f"in__A~{HASH}.png", names[0])
    assert re.fullmatch(f"in__a~{HASH}.png", names[1])


def test_long_names_that_clash_get_their_folders():
    long = "L" * 251 + ".png"
    names = unique_names([f"a/{long}", f"b/{long}"])
    assert names[0].startswith("a__LLL")
    assert names[1].startswith("b__LLL")
    assert all(len(n.encode()) <= MAX_BYTES and n.endswith(".png") for n in names)
    assert names[0] != names[1]


def test_names_are_deterministic():
    paths = [f"d{i % 7}/x{i % 13}.png" for i in range(200)] + ["X0.png", "x0.png"]
    assert unique_names(paths) == unique_names(list(paths))
    assert len(set(unique_names(paths))) == len(paths)


def test_a_path_without_a_file_name_is_refused():
    with pytest.raises(ValueError, match="no file name"):
        unique_names(["/"])


def test_zarr_python_nests_a_backslash_which_is_why_it_is_escaped(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    root.create_group("a\\b")
    assert list(root.group_keys()) == ["a"]
    with pytest.raises(ValueError, match="invalid"):
        root.create_group("..")


def test_every_name_of_the_issue_is_a_group_of_its_own():
    paths = [
        "in/..\\x.png",
        "in/zarr.json",
        "in/back\\slash.png",
        "in/dup.png",
        "in/\\dup.png",
        "in/A.png",
        "in/a.png",
        "in/ctl\x07.png",
        "in/.hidden.png",
        "in/__init__.png",
        "a/" + "n" * 251,
        "b/" + "n" * 251,
    ]
    names = unique_names(paths)
    assert stored_names(names) == set(names)
    assert len(names) == len(paths)


def test_names_scale_linearly():
    paths = [f"/bucket/batch{i // 1000}/img{i if i % 100 else i + 7}.jpg" for i in range(100_000)]
    start = time.perf_counter()
    names = unique_names(paths)
    assert time.perf_counter() - start < 10
    assert len(set(names)) == len(paths)


components = st.one_of(
    st.sampled_from([".", "..", "x.png", "X.PNG", "zarr.json", "__x", "_", "a\\b", "%41", " "]),
    st.text(st.sampled_from("aA.%/\\_ :~é\x01"), min_size=1, max_size=6),
    st.text(min_size=1, max_size=4),
    st.builds(lambda c, n: c * n, st.sampled_from("xé北%."), st.integers(190, 260)),
)
path_lists = st.lists(
    st.builds(
        lambda parts, url: ("s3://" if url else "") + "/".join(parts),
        st.lists(components, min_size=1, max_size=4),
        st.booleans(),
    ),
    max_size=12,
)


def named(path: str) -> bool:
    try:
        unique_names([path])
    except ValueError:
        return False
    return True


@settings(max_examples=60, deadline=None)
@given(path_lists)
def test_names_are_unique_valid_node_names(paths):
    paths = [p for p in paths if named(p)]
    names = unique_names(paths)
    assert len(names) == len(paths)
    assert len({n.casefold() for n in names}) == len(names)
    assert all(is_node_name(n) for n in names)
    assert all(well_cut(n) for n in names)
    assert stored_names(names) == set(names)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_safe_names_are_kept_and_others_escaped(component):
    name = node_name(component)
    assert is_node_name(name)
    if is_node_name(component) and not re.search('[\x00-\x1f\x7f%<>:"|?*]', component):
        assert name == component
