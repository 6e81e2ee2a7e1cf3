"""What a store's bytes hold: no padding around small images, no pyramid a viewer does not need.

Real jobs write real stores on disk from real photos; bytes are deterministic.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import dask.config
import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from pipeline import compress, open_store
from pipeline.cli import main
from pipeline.errors import UsageError
from pipeline.settings import Settings, read_job_file
from pipeline.store import ngff
from pipeline.store.read import open_pyramid
from tests.conftest import sklearn_photo
from tests.test_cli import run


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """china.jpg and flower.jpg (427 x 640), compressed at 64 colours in 1024-pixel chunks."""
    store = tmp_path_factory.mktemp("bytes") / "out.zarr"
    files = [sklearn_photo("china.jpg"), sklearn_photo("flower.jpg")]
    results = compress(files, str(store), colors=64)
    assert {r.status for r in results} == {"done"}, [r.error for r in results]
    return store


def test_an_image_smaller_than_a_chunk_is_one_chunk_of_its_own_shape(photos, tmp_path):
    labels = zarr.open_group(str(photos), mode="r")["china.jpg/labels"]
    assert labels.shape == (427, 640)
    assert labels.chunks == (427, 640)
    # the same labels as when worked on in chunks smaller than the image
    other = tmp_path / "small-chunks.zarr"
    compress([sklearn_photo("china.jpg")], str(other), colors=64, chunk=256)
    chunked = zarr.open_group(str(other), mode="r")["china.jpg/labels"]
    assert chunked.chunks == (256, 256)
    assert np.array_equal(chunked[...], labels[...])


@pytest.fixture
def format3(tmp_path):
    """A store of format version 3 as it wrote it: a 600 x 60 strip in 64-pixel chunks, with
    the four pyramid levels that version gave it (written by the code of 2026-12-05)."""
    store = tmp_path / "format3.zarr"
    shutil.copytree(Path(__file__).parent / "data" / "format3.zarr", store)
    return store


def test_a_format_3_store_is_still_listed_verified_and_rebuilt(format3, tmp_path, capsys):
    assert main(["verify", str(format3)]) == 0
    assert f"{format3}: 1 images, 1 whole, 0 damaged" in capsys.readouterr().out
    (image,) = open_store(str(format3)).values()
    assert [a.path.rpartition("/")[2] for a in open_pyramid(image)] == [
        f"labels_{n}" for n in range(1, 5)
    ]
    assert main(["reconstruct", str(format3), "--out", str(tmp_path / "out")]) == 0
    rebuilt = iio.imread(tmp_path / "out" / "strip.png")
    assert np.array_equal(rebuilt, image.palette[image.labels[...]])


def store_bytes(store: Path) -> int:
    """Bytes of every file of ``store``."""
    return sum(f.stat().st_size for f in store.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def archival(tmp_path_factory):
    """china.jpg and flower.jpg at 64 colours, written by the CLI with --compression archival."""
    folder = tmp_path_factory.mktemp("archival")
    files = [sklearn_photo("china.jpg"), sklearn_photo("flower.jpg")]
    done = run(
        "run", *files, "-o", "out.zarr", "--colors", "64", "--compression", "archival", cwd=folder
    )
    assert done.returncode == 0, done.stderr
    return folder / "out.zarr"


def test_an_archival_store_holds_the_same_image_in_fewer_bytes(photos, archival):
    for name in ("china.jpg", "flower.jpg"):
        portable = zarr.open_group(str(photos / name), mode="r")
        smaller = zarr.open_group(str(archival / name), mode="r")
        assert portable.attrs["compression"] == "portable"
        assert smaller.attrs["compression"] == "archival"
        assert [c.to_dict()["name"] for c in smaller["labels"].metadata.codecs] == [
            "bytes",
            "numcodecs.lzma",
            "crc32c",
        ]
        assert np.array_equal(smaller["palette"][...], portable["palette"][...])
        assert np.array_equal(smaller["labels"][...], portable["labels"][...])
        assert smaller.attrs["digests"] == portable.attrs["digests"]
        # the smallest store holds no colour table for viewers: the palette array has it
        assert len(portable.attrs["ome"]["image-label"]["colors"]) == portable["palette"].shape[0]
        assert smaller.attrs["ome"]["image-label"] == {}
    assert store_bytes(archival) < 0.92 * store_bytes(photos)


def test_plain_zarr_python_rebuilds_an_archival_image(archival, tmp_path):
    script = (
        "import sys, zarr, numpy\n"
        "image = zarr.open_group(sys.argv[1], mode='r')['china.jpg']\n"
        "numpy.save(sys.argv[2], image['palette'][...][image['labels'][...]])\n"
        "assert 'pipeline' not in sys.modules\n"
    )
    out = tmp_path / "pixels.npy"
    done = subprocess.run(
        [sys.executable, "-c", script, str(archival), str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    image = open_store(str(archival))["china.jpg"]
    assert np.array_equal(np.load(out), image.palette[image.labels[...]])


def test_info_verify_reconstruct_and_report_read_an_archival_store(archival, tmp_path):
    for args in (
        ("info", str(archival)),
        ("verify", str(archival)),
        ("reconstruct", str(archival), "--out", str(tmp_path / "png")),
        ("report", str(archival), "--out", str(tmp_path / "report.html")),
    ):
        done = run(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "Warning" not in done.stderr, done.stderr
    image = open_store(str(archival))["china.jpg"]
    assert np.array_equal(
        iio.imread(tmp_path / "png" / "china.png"), image.palette[image.labels[...]]
    )


def test_a_rerun_with_another_compression_skips_the_images_it_finds_complete(photos, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(photos, copy)
    markers = sorted(p.name for p in (copy / ".pipeline/complete").iterdir())
    files = [sklearn_photo("china.jpg"), sklearn_photo("flower.jpg")]
    results = compress(files, str(copy), colors=64, compression="archival")
    assert {r.status for r in results} == {"skipped"}
    assert sorted(p.name for p in (copy / ".pipeline/complete").iterdir()) == markers
    assert zarr.open_group(str(copy / "china.jpg"), mode="r").attrs["compression"] == "portable"


def test_compression_is_a_job_file_key_and_a_dask_setting(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('compression = "archival"\n')
    assert read_job_file(str(job))["compression"] == "archival"
    job.write_text('compression = "smallest"\n')
    with pytest.raises(UsageError, match="compression"):
        read_job_file(str(job))
    with dask.config.set({"pipeline.compression": "archival"}):
        assert Settings.from_config().compression == "archival"
    # never part of what decides reuse
    assert Settings.from_config(compression="archival").fit_settings() == (
        Settings.from_config().fit_settings()
    )


def test_an_image_stored_larger_than_its_source_is_said_so(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "noise.jpg", noise, quality=5)  # 4.8 KB; its labels 45 KB
    flat = np.full((256, 256, 3), 90, dtype=np.uint8)
    iio.imwrite(tmp_path / "flat.png", flat, compress_level=0)  # 197 KB; stored in ~1 KB
    done = run("run", "noise.jpg", "flat.png", "-o", "out.zarr", "--colors", "256", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {
        line.split(": ")[0].split("] ")[1]: line
        for line in (done.stdout + done.stderr).splitlines()
        if ": done" in line
    }
    assert "x source (stored larger than its source);" in lines["noise.jpg"]
    assert "larger than its source" not in lines["flat.png"]
    report = run("report", "out.zarr", "--out", "report.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report.html").read_text()
    assert page.count('title="stored larger than its source">larger</span>') == 1


@pytest.mark.parametrize("k", [16, 64, 128, 256])
def test_an_archival_store_takes_at_most_nine_tenths_of_a_portable_one(tmp_path, k):
    files = [sklearn_photo("china.jpg"), sklearn_photo("flower.jpg")]
    sizes = {}
    for compression in ("portable", "archival"):
        store = tmp_path / f"{compression}.zarr"
        results = compress(files, str(store), colors=k, compression=compression)
        assert {r.status for r in results} == {"done"}
        sizes[compression] = store_bytes(store)
    assert sizes["archival"] <= 0.9 * sizes["portable"], sizes


def test_tensorstore_reads_a_portable_store_and_checks_its_checksums(tmp_path):
    """Another Zarr v3 implementation (tensorstore, C++) rebuilds a default store's image and its
    pyramid, and refuses a chunk whose bytes changed (CRC-32C); an archival store's LZMA it does
    not read, as docs/store-format.md says."""
    ts = pytest.importorskip("tensorstore")
    wide = tmp_path / "wide.png"  # wider than a viewer shows whole: it has a pyramid
    iio.imwrite(wide, np.tile(iio.imread(sklearn_photo("china.jpg")), (1, 4, 1)))
    store = tmp_path / "out.zarr"
    compress([str(wide)], str(store), colors=32, chunk=512)
    (image,) = open_store(str(store)).values()
    levels = open_pyramid(image)
    assert levels

    def read(array: str) -> np.ndarray:
        path = store / "wide.png" / array
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
        return ts.open(spec, open=True, read=True).result().read().result()

    assert np.array_equal(read("palette"), image.palette)
    assert np.array_equal(read("labels"), image.labels[...])
    for level, array in enumerate(levels, start=1):
        assert np.array_equal(read(ngff.level_path(level)), array[...])

    chunk = store / "wide.png" / "labels" / "c" / "0" / "1"
    damaged = bytearray(chunk.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    chunk.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="Digest mismatch"):
        read("labels")

    archival = tmp_path / "archival.zarr"
    compress([sklearn_photo("flower.jpg")], str(archival), colors=32, compression="archival")
    path = archival / "flower.jpg" / "labels"
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    with pytest.raises(ValueError, match=r"numcodecs\.lzma"):
        ts.open(spec, open=True, read=True).result()


@pytest.mark.parametrize("compression", ["portable", "archival"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_labels_written_chunk_by_chunk_are_the_bytes_zarr_writes(tmp_path, compression, dtype):
    # write_labels encodes and writes its chunks itself (the labelling of large images): every
    # file, edge chunks padded as zarr pads them, is the one zarr writes from the same values,
    # on a fenced store and on a plain one
    from pipeline.store.fence import FencedStore
    from pipeline.store.write import create_level, write_labels

    class Open:
        def check(self) -> None:
            return None

    values = np.random.default_rng(0).integers(0, 300 if dtype == "uint16" else 256, (300, 200))
    values = values.astype(dtype)
    stores = {
        "zarr": zarr.storage.LocalStore(tmp_path / "zarr"),
        "fenced": FencedStore(zarr.storage.LocalStore(tmp_path / "fenced"), Open()),
        "plain": zarr.storage.LocalStore(tmp_path / "plain"),
    }
    for kind, store in stores.items():
        group = zarr.open_group(store, mode="w", zarr_format=3)
        array = create_level(group, 0, values.shape, (128, 128), dtype, compression)
        if kind == "zarr":
            array[...] = values
        else:  # in blocks of whole chunks, the last ones cut by the array's edges
            for region in [(slice(0, 256), slice(0, 128)), (slice(0, 256), slice(128, 200)),
                           (slice(256, 300), slice(0, 200))]:  # fmt: skip
                write_labels(array, region, values[region])
    files = sorted(p.relative_to(tmp_path / "zarr") for p in (tmp_path / "zarr").rglob("c/*/*"))
    assert len(files) == 6
    for kind in ("fenced", "plain"):
        found = sorted(p.relative_to(tmp_path / kind) for p in (tmp_path / kind).rglob("c/*/*"))
        assert found == files
        for path in files:
            assert (tmp_path / kind / path).read_bytes() == (tmp_path / "zarr" / path).read_bytes()
        assert np.array_equal(zarr.open_array(tmp_path / kind / "labels")[...], values)
