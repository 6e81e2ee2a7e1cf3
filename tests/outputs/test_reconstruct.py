"""``reconstruct``: outputs never destroy, and one bad image never stops the others.

Real stores made by ``pipeline.compress`` (in this process) from real photo crops written as
files, the real command line (``pipeline.cli.main``), and the real files it writes.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from pipeline import compress, compress_array, reconstruct, write_images
from pipeline.cli import build_parser, main
from pipeline.outputs.files import Outputs, output_names

SMALL = {"colors": 16, "sample": 500, "chunk": 32}  # 120 x 170 crops: 4 x 6 labels chunks
NAMES = ["a.png", "b.png", "c.png", "d.png", "e.png"]


def make_store(folder, china):
    """Five real photo crops as PNG files in ``folder``/photos, compressed into ``folder``/s.zarr:
    every image complete."""
    photos = folder / "photos"
    photos.mkdir()
    for i, name in enumerate(NAMES):
        iio.imwrite(photos / name, np.ascontiguousarray(china[100 + 20 * i :][:120, 150:320]))
    store = str(folder / "s.zarr")
    results = compress([str(photos)], store, **SMALL)
    assert sorted(r.name for r in results) == NAMES
    assert all(r.status == "done" for r in results)
    return photos, store


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, china):
    return make_store(tmp_path_factory.mktemp("pristine"), china)


@pytest.fixture
def made(tmp_path, pristine):
    """A copy of the module's store, to damage at will (its sources are the module's photos)."""
    store = str(tmp_path / "s.zarr")
    shutil.copytree(pristine[1], store)
    return store


@pytest.fixture
def fresh(tmp_path, china):
    """(photos folder, store) of this test's own: for tests that write beside the originals."""
    return make_store(tmp_path, china)


def snapshot(folder):
    """Every file under ``folder`` (relative path -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def expected(store, name):
    group = zarr.open_group(store, mode="r")[name]
    return group["palette"][...][group["labels"][...]]


def cli(capsys, *args):
    code = main(["reconstruct", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines(), err.splitlines()


def errors(err):
    """Image name -> its error line (the lines ``error: NAME: ...``)."""
    lines = {}
    for line in err:
        if line.startswith("error: "):
            name = line.removeprefix("error: ").split(": ", 1)[0]
            assert name not in lines, err
            lines[name] = line
    return lines


def hidden(folder):
    """Hidden entries (temporaries) anywhere under ``folder``."""
    return list(Path(folder).rglob(".*"))


def test_default_refuses_the_sources_folder_and_keeps_originals_byte_identical(
    capsys, monkeypatch, tmp_path, fresh
):
    photos, made = fresh
    before = snapshot(photos)
    monkeypatch.chdir(photos)  # --out defaults to "." : the folder holding the originals
    code, out, err = cli(capsys, made)
    assert code == 1
    assert out == []
    lines = errors(err)
    assert sorted(lines) == NAMES
    for name, line in lines.items():
        assert f"is the folder of its source {photos / name}" in line
        assert "--allow-source-folder" in line
    assert err[-1] == "5 of 5 images left out, 0 written"
    # through a symbolic link to the folder, too: real paths are compared
    os.symlink(photos, tmp_path / "link")
    assert cli(capsys, made, "--out", tmp_path / "link")[0] == 1
    assert snapshot(photos) == before

    # allowed: writes there, but still replaces nothing without --overwrite
    code, out, err = cli(capsys, made, "--out", photos, "--allow-source-folder")
    assert code == 1
    assert all("exists; --overwrite replaces it" in line for line in errors(err).values())
    assert snapshot(photos) == before
    code, out, err = cli(capsys, made, "-o", photos, "--allow-source-folder", "--format", "tif")
    assert code == 0, err
    assert len(out) == 5
    for name in NAMES:
        assert (photos / name).read_bytes() == before[name]
        assert np.array_equal(
            tifffile.imread(photos / name.replace(".png", ".tif")), expected(made, name)
        )

    # both flags: the user asked for the originals to be replaced by their rebuilds
    code, out, err = cli(capsys, made, "-o", photos, "--allow-source-folder", "--overwrite")
    assert code == 0, err
    assert np.array_equal(iio.imread(photos / "a.png"), expected(made, "a.png"))
    assert (photos / "a.png").read_bytes() != before["a.png"]
    assert hidden(photos) == []


def test_sources_behind_urls_never_match_a_local_folder(capsys, fresh):
    photos, made = fresh
    group = zarr.open_group(made, mode="a")
    for name, path in (("a.png", "s3://bucket/photos/a.png"), ("b.png", f"file://{photos}/b.png")):
        group[name].attrs["source"] = {**group[name].attrs["source"], "path": path}
    code, out, err = cli(capsys, made, "--out", photos, "--format", "bmp")
    assert code == 1
    assert out == [f"a.png -> {photos / 'a.bmp'}"]
    assert sorted(errors(err)) == ["b.png", "c.png", "d.png", "e.png"]  # file:// is local


@pytest.mark.parametrize("form", ["png", "zarr"])
def test_existing_outputs_are_kept_without_overwrite_and_replaced_with_it(
    capsys, tmp_path, made, form
):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if form == "zarr":
        old = out_dir / "a.zarr"
        old.mkdir()
        (old / "keep.txt").write_text("mine")
    else:
        old = out_dir / "a.png"
        old.write_bytes(b"mine")
    before = snapshot(out_dir)

    code, out, err = cli(capsys, made, "-o", out_dir, "--format", form)
    assert code == 1
    assert errors(err) == {
        "a.png": f"error: a.png: not written: {old} exists; --overwrite replaces it"
    }
    assert err[-1] == "1 of 5 images left out, 4 written"
    assert len(out) == 4
    assert {k: v for k, v in snapshot(out_dir).items() if k.startswith("a.")} == before

    code, out, err = cli(capsys, made, "-o", out_dir, "--format", form, "--overwrite")
    assert code == 0, err
    assert len(out) == 5
    for name in NAMES:
        target = out_dir / name.replace(".png", f".{form}")
        got = zarr.open_array(target, mode="r")[...] if form == "zarr" else iio.imread(target)
        assert np.array_equal(got, expected(made, name))
    assert not (out_dir / "a.zarr" / "keep.txt").exists()
    assert hidden(out_dir) == []


def test_overwrite_never_replaces_a_file_by_a_folder_or_the_reverse(capsys, tmp_path, made):
    out_dir = tmp_path / "out"
    (out_dir / "a.png").mkdir(parents=True)
    (out_dir / "b.zarr").write_text("mine")
    assert cli(capsys, made, "-o", out_dir, "--overwrite")[0] == 1
    code, _, err = cli(capsys, made, "-o", out_dir, "--overwrite", "--format", "zarr")
    assert code == 1
    assert "exists and is not a folder; not replaced" in errors(err)["b.png"]
    assert (out_dir / "a.png").is_dir()
    assert (out_dir / "b.zarr").read_text() == "mine"


def damage(store):
    """Make images a to d of ``store`` bad in four ways; e stays whole."""
    zarr.open_group(store, mode="a")["a.png"].attrs["status"] = "writing"
    chunk = Path(store, "b.png", "labels", "c", "3", "5")  # the last chunk: written last
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    os.remove(Path(store, "c.png", "labels", "c", "1", "2"))
    Path(store, "d.png", "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')


@pytest.mark.parametrize("form", ["png", "tif", "zarr"])
def test_bad_images_are_named_and_every_other_one_is_written(capsys, tmp_path, made, form):
    damage(made)
    out_dir = tmp_path / "out"
    code, out, err = cli(capsys, made, "--out", out_dir, "--format", form)
    assert code == 1
    assert out == [f"e.png -> {out_dir / ('e.' + form)}"]
    lines = errors(err)
    assert lines.pop("d.png").startswith("error: d.png: metadata is not valid JSON (")
    assert lines == {
        "a.png": "error: a.png: incomplete (status 'writing'); run the job again",
        "b.png": "error: b.png: labels chunk unreadable (checksum mismatch)",
        "c.png": "error: c.png: 1 of 24 labels chunks missing",
    }
    assert err[-1] == (
        f"4 of 5 images left out, 1 written; python -m pipeline verify {made} --repair redoes "
        "damaged ones"
    )
    assert sorted(os.listdir(out_dir)) == [f"e.{form}"]  # no temporary, no half-written file
    target = out_dir / f"e.{form}"
    got = zarr.open_array(target, mode="r")[...] if form == "zarr" else iio.imread(target)
    assert np.array_equal(got, expected(made, "e.png"))


def test_a_failed_rewrite_keeps_the_old_output(capsys, tmp_path, made):
    damage(made)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "b.tif").write_bytes(b"the old one")
    (out_dir / "b.zarr").mkdir()
    for form in ("tif", "zarr"):
        code, _, err = cli(capsys, made, "-o", out_dir, "--format", form, "--overwrite")
        assert code == 1
        assert "checksum mismatch" in errors(err)["b.png"]
    assert (out_dir / "b.tif").read_bytes() == b"the old one"
    assert os.listdir(out_dir / "b.zarr") == []
    assert hidden(out_dir) == []


def test_write_images_reports_written_and_left_out(tmp_path, made):
    damage(made)
    done = write_images(made, str(tmp_path / "out"), extension=".bmp")
    assert isinstance(done, Outputs)
    assert done.written == {"e.png": str(tmp_path / "out" / "e.bmp")}
    assert sorted(done.left_out) == ["a.png", "b.png", "c.png", "d.png"]
    assert done.left_out["c.png"] == "1 of 24 labels chunks missing"
    again = write_images(made, str(tmp_path / "out"), ["e.png"], ".bmp")
    assert again.written == {}
    assert again.left_out == {"e.png": f"not written: {tmp_path / 'out' / 'e.bmp'} exists; "
                              "--overwrite replaces it"}  # fmt: skip


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".pipeline", "a\\b", ""])
def test_a_name_that_cannot_be_an_image_is_a_usage_error(capsys, tmp_path, made, name):
    code, out, err = cli(capsys, made, "-o", tmp_path / "out", "--name", "e.png", "--name", name)
    assert code == 2
    assert out == []
    assert len(err) == 1
    assert "not an image name" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_name_not_in_the_store_is_one_line(capsys, tmp_path, made):
    code, out, err = cli(
        capsys, made, "-o", tmp_path / "out", "--name", "nope.png", "--name", "e.png"
    )
    assert code == 1
    assert out == [f"e.png -> {tmp_path / 'out' / 'e.png'}"]
    assert err == [
        "error: nope.png: no such image in the store",
        "1 of 2 images left out, 1 written",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "../../x"], "not an image format"),
        (["--format", "txt/"], "not an image format"),
        (["--out", "s3://bucket/out"], "must be a local folder"),
    ],
)
def test_bad_format_or_out_is_a_usage_error(capsys, tmp_path, made, args, message):
    code, _, err = cli(capsys, made, *args)
    assert code == 2
    assert len(err) == 1
    assert message in err[0]
    assert not any(Path(tmp_path).rglob("*.tmp-*"))


def test_out_that_is_a_file_is_a_usage_error(capsys, tmp_path, made):
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, made, "--out", tmp_path / "file")
    assert code == 2
    assert err == [f"error: {tmp_path / 'file'}: not a folder"]


def test_output_names_are_distinct_plain_file_names():
    names = ["x.png", "x.jpg", "x.png.png", "Y.png", "y.png", "z.tif", "no-extension"]
    files = output_names(names, ".png")
    assert files["z.tif"] == "z.png"
    assert files["no-extension"] == "no-extension.png"
    assert files["x.jpg"] == "x.jpg.png"
    # x.png's whole name plus .png is x.png.png's stem plus .png; Y.png.png and y.png.png clash
    # on a case-insensitive file system: those get ~ and a hash of their name
    for name in ("x.png", "x.png.png", "Y.png", "y.png"):
        assert re.fullmatch(re.escape(name) + r"~[0-9a-f]{8}\.png", files[name])
    assert len({f.casefold() for f in files.values()}) == len(names)
    assert all("/" not in f and "\\" not in f and not f.startswith(".") for f in files.values())
    assert output_names(names, ".png") == files  # the same every time


def test_help_documents_overwrite_and_source_folder():
    parser = build_parser()
    text = parser._subparsers._group_actions[0].choices["reconstruct"].format_help()
    for words in (
        "--overwrite",
        "--allow-source-folder",
        "temporary",
        "error: NAME",
        "incomplete",
        "damaged",
        "exit status",
    ):
        assert words in text


@pytest.mark.parametrize("extension", [".tif", ".zarr", ".webp", ".bmp"])
def test_reconstruct_writes_files_any_format_streamed_for_tiff_and_zarr(
    store, tmp_path, china, extension
):
    compress_array(china, store, "china.jpg", chunk=200, colors=32, sample=2000)
    done = write_images(store, str(tmp_path / "out"), extension=extension)
    assert done.left_out == {}
    target = done.written["china.jpg"]
    assert target.endswith("china" + extension)
    rebuilt = reconstruct(store, "china.jpg").compute()
    if extension == ".zarr":
        got = zarr.open_array(target, mode="r")[...]
    elif extension == ".tif":
        with tifffile.TiffFile(target) as tif:
            assert tif.pages[0].is_tiled
            got = tif.asarray()
    else:
        got = iio.imread(target)
    assert np.array_equal(got, rebuilt)  # WebP is written lossless
    assert oct(os.stat(target).st_mode & 0o777) == oct(
        0o777 & ~_umask() & (0o777 if extension == ".zarr" else 0o666)
    )


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_reconstruct_names_the_image_of_an_unreadable_chunk(made):
    from pipeline.store.read import Damaged

    damage(made)
    rebuilt = reconstruct(made, "b.png")
    with pytest.raises(Damaged, match=r"^b\.png: labels chunk unreadable \(checksum mismatch\)$"):
        rebuilt.compute()


@pytest.fixture
def small_disk(tmp_path, request):
    """A tmpfs of ``request.param`` bytes mounted for one test (root only: skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield path
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize(
    ("form", "small_disk"),
    [("png", "24k"), ("tif", "32k"), ("zarr", "160k")],  # room for one to three images
    indirect=["small_disk"],
)
def test_a_full_disk_stops_with_one_line_and_leaves_no_partial_file(capsys, made, small_disk, form):
    out_dir = small_disk / "out"
    code, out, err = cli(capsys, made, "--out", out_dir, "--format", form)
    assert code == 1
    assert 0 < len(out) < 5
    left = 5 - len(out)
    assert err == [
        f"error: {out_dir}: cannot be written: [Errno 28] No space left on device; stopped, "
        f"{left} {'image' if left == 1 else 'images'} not written"
    ]
    written = [line.split(" -> ")[0] for line in out]
    assert sorted(os.listdir(out_dir)) == [n.replace(".png", f".{form}") for n in written]
    for name in written:
        target = out_dir / name.replace(".png", f".{form}")
        got = zarr.open_array(target, mode="r")[...] if form == "zarr" else iio.imread(target)
        assert np.array_equal(got, expected(made, name))


def test_overwrite_replaces_a_link_never_the_file_it_points_to(capsys, tmp_path, made):
    precious = tmp_path / "precious.png"
    precious.write_bytes(b"original")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    os.symlink(precious, out_dir / "a.png")
    code, _, err = cli(capsys, made, "-o", out_dir, "--name", "a.png")
    assert code == 1
    assert "exists; --overwrite replaces it" in errors(err)["a.png"]
    code, _, err = cli(capsys, made, "-o", out_dir, "--name", "a.png", "--overwrite")
    assert code == 0, err
    assert not (out_dir / "a.png").is_symlink()
    assert np.array_equal(iio.imread(out_dir / "a.png"), expected(made, "a.png"))
    assert precious.read_bytes() == b"original"
