"""Pictures stored as a viewer shows them: whole jobs on real files, checked against Pillow.

Files carry EXIF orientation (JPEG, PNG ``eXIf``, TIFF Orientation tag), ICC profiles (built
Display P3 and Adobe RGB, Debian's packaged Adobe RGB) and 16-bit samples; they go through
:func:`pipeline.compress` (or ``python -m pipeline``) into real stores, and come back through
:func:`pipeline.reconstruct`. The oracle is Pillow: ``ImageOps.exif_transpose`` and
``ImageCms.profileToProfile`` (perceptual) of the file (:func:`tests.viewing.shown`). Two checks
recur: the PSNR of the rebuilt image against the oracle equals the PSNR the job recorded (so the
job compressed exactly the oracle's picture), and an image of few colours, which the palette
holds exactly, comes back as the oracle's very values.
"""

import base64
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline import compress, open_store, reconstruct
from pipeline.inputs.orientation import describe, orient
from pipeline.inputs.sources import probe, read_file
from pipeline.job.graph import open_file
from tests.oracles import photo_psnr
from tests.test_cli import run
from tests.viewing import (
    ADOBE,
    ADOBE_FILE,
    P3,
    converted,
    exif_after_pixels,
    packaged,
    save,
    shown,
    write_tiff,
)

FAST = {"colors": 32, "sample": 2000}
#: How near the PSNR measured against the oracle must be to the recorded one.
NEAR_DB = 0.05


def stored(store, path):
    """(attributes, rebuilt pixels) of the image compressed from ``path``."""
    name = os.path.basename(path)
    return open_store(store)[name].attrs, reconstruct(store, name).compute()


def done(results):
    assert {r.status for r in results} == {"done"}, [r.error for r in results]
    return results


def few_colours(shape, count=12, seed=0):
    """An RGB image of ``count`` colours in patches: the palette holds it exactly."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (count, 3), dtype=np.uint8)
    patches = rng.integers(0, count, (-(-shape[0] // 8), -(-shape[1] // 8)))
    index = np.kron(patches, np.ones((8, 8), int))[: shape[0], : shape[1]]
    return np.ascontiguousarray(colours[index])


# --- orientation -------------------------------------------------------------------------------


def write_oriented(folder, kind, pixels, orientation):
    if kind == "jpeg":
        return save(folder / f"o{orientation}.jpg", pixels, orientation, quality=90)
    if kind == "png-exif-after":
        path = Path(save(folder / f"o{orientation}.png", pixels, orientation))
        if orientation != 1:
            path.write_bytes(exif_after_pixels(path.read_bytes()))
        return str(path)
    if kind == "png":
        return save(folder / f"o{orientation}.png", pixels, orientation)
    return write_tiff(folder / f"o{orientation}.tif", pixels, orientation)


@pytest.mark.parametrize("kind", ["jpeg", "png", "png-exif-after", "tiff"])
def test_eight_orientations_are_stored_upright(tmp_path, small_photo, kind):
    folder = tmp_path / "in"
    folder.mkdir()
    paths = {o: write_oriented(folder, kind, small_photo, o) for o in range(1, 9)}
    store = str(tmp_path / "s.zarr")
    done(compress(list(paths.values()), store, **FAST))
    for orientation, path in paths.items():
        picture = shown(path)  # Pillow: decoded, then exif_transpose
        assert np.array_equal(read_file(path), picture), path  # libjpeg-turbo == Pillow's
        attrs, rebuilt = stored(store, path)
        assert rebuilt.shape == picture.shape, path
        if kind != "jpeg":  # lossless: the picture is the photo, turned
            assert np.array_equal(picture, orient(small_photo, orientation))
        measured = photo_psnr(picture, rebuilt)
        assert measured == pytest.approx(attrs["metrics"]["psnr_db"], abs=NEAR_DB), path
        source = attrs["source"]
        assert source["orientation"] == orientation
        assert source["shape"] == list(small_photo.shape)  # as stored in the file
        steps = source["conversion"].split("+")
        assert (describe(orientation) in steps) == (orientation != 1)


def test_orientation_of_few_colours_is_exact(tmp_path):
    pixels = few_colours((40, 56))
    store = str(tmp_path / "s.zarr")
    paths = [save(tmp_path / f"o{o}.png", pixels, o) for o in (2, 5, 6, 7)]
    done(compress(paths, store, **FAST))
    for path, orientation in zip(paths, (2, 5, 6, 7), strict=True):
        attrs, rebuilt = stored(store, path)
        assert attrs["metrics"]["psnr_db"] is None  # lossless
        assert np.array_equal(rebuilt, orient(pixels, orientation))


# --- colour profiles ---------------------------------------------------------------------------

PROFILES = {"p3": lambda: P3, "adobe-built": lambda: ADOBE, "adobe-packaged": lambda: None}


def profile_bytes(which):
    return packaged(ADOBE_FILE) if which == "adobe-packaged" else PROFILES[which]()


@pytest.mark.parametrize("which", list(PROFILES))
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_profiles_are_converted_to_srgb_as_pillow_converts(tmp_path, small_photo, which, suffix):
    icc = profile_bytes(which)
    path = save(tmp_path / f"photo{suffix}", small_photo, icc=icc, quality=90)
    flat = save(tmp_path / "few.png", few_colours((48, 64)), icc=icc)
    store = str(tmp_path / "s.zarr")
    done(compress([path, flat], store, **FAST))

    attrs, rebuilt = stored(store, path)
    picture = shown(path)  # Pillow's decode, then ImageCms to sRGB, perceptual
    assert not np.array_equal(picture, shown(path, convert=False))
    assert photo_psnr(picture, rebuilt) == pytest.approx(attrs["metrics"]["psnr_db"], abs=NEAR_DB)
    profile = attrs["source"]["profile"]
    description = {"p3": "Display P3", "adobe-built": "Adobe RGB (1998), built"}.get(which)
    assert profile["handling"] == "converted"
    assert profile["intent"] == "perceptual"
    assert profile["origin"] == "ICC"
    assert "icc" not in profile
    if description:
        assert profile["description"] == description
    assert f"{profile['description']} to sRGB (perceptual)" in attrs["source"]["conversion"]

    attrs, rebuilt = stored(store, flat)
    assert attrs["metrics"]["psnr_db"] is None  # every converted colour in the palette
    assert np.array_equal(rebuilt, converted(few_colours((48, 64)), icc))


@pytest.mark.parametrize("which", ["p3", "adobe-packaged"])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_keep_stores_the_source_values_and_the_profile(tmp_path, small_photo, which, suffix):
    icc = profile_bytes(which)
    path = save(tmp_path / f"photo{suffix}", small_photo, 6, icc=icc, quality=90)
    flat_pixels = few_colours((48, 64))
    flat = save(tmp_path / "few.png", flat_pixels, icc=icc)
    store = str(tmp_path / "s.zarr")
    done(compress([path, flat], store, color_profile="keep", **FAST))

    attrs, rebuilt = stored(store, path)
    with_values = shown(path, convert=False)  # Pillow's decode, turned, not converted
    assert np.array_equal(read_file(path, convert=False), with_values)
    assert with_values.shape == rebuilt.shape == (170, 120, 3)  # still turned upright
    if suffix == ".png":
        assert np.array_equal(with_values, orient(small_photo, 6))
    assert photo_psnr(with_values, rebuilt) == pytest.approx(
        attrs["metrics"]["psnr_db"], abs=NEAR_DB
    )
    for record in (attrs["source"], stored(store, flat)[0]["source"]):
        profile = record["profile"]
        assert profile["handling"] == "kept"
        assert base64.b64decode(profile["icc"]) == icc  # the file's profile, byte for byte
        assert "kept (profile stored)" in record["conversion"]

    attrs, rebuilt = stored(store, flat)
    assert attrs["metrics"]["psnr_db"] is None
    assert np.array_equal(rebuilt, flat_pixels)  # the values as stored, not converted


# --- 16 bits -----------------------------------------------------------------------------------


def rounded(values):
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def deep(channels, seed=1):
    """(40, 48[, channels]) uint16 of 10 colours whose 8-bit roundings differ."""
    rng = np.random.default_rng(seed)
    size = 1 if channels == 0 else channels
    colours = rng.integers(0, 65536, (10, size), dtype=np.uint16)
    if channels in (2, 4):
        colours[:, -1] = rng.integers(40_000, 65536, 10)  # alpha: not opaque, never near 0
    patches = rng.permutation(np.arange(30) % 10).reshape(5, 6)  # every colour used
    index = np.kron(patches, np.ones((8, 8), int))
    pixels = colours[index]
    assert len(np.unique(rounded(pixels).reshape(-1, size), axis=0)) == 10
    return pixels[:, :, 0] if channels == 0 else pixels


def write_deep(path, pixels):
    import imagecodecs

    if path.suffix == ".png":
        path.write_bytes(imagecodecs.png_encode(pixels))
    else:
        rgba = pixels.ndim == 3 and pixels.shape[2] == 4
        tifffile.imwrite(
            path,
            pixels,
            photometric="rgb" if pixels.ndim == 3 and pixels.shape[2] >= 3 else "minisblack",
            extrasamples=["unassalpha"] if rgba else None,
        )
    return str(path)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [0, 3, 4], ids=["gray", "rgb", "rgba"])
def test_16_bit_is_stored_rounded(tmp_path, suffix, channels):
    pixels = deep(channels)
    path = write_deep(tmp_path / f"deep{suffix}", pixels)
    store = str(tmp_path / "s.zarr")
    done(compress([path], store, **FAST))
    attrs, rebuilt = stored(store, path)
    assert attrs["source"]["dtype"] == "uint16"
    assert attrs["source"]["shape"] == list(pixels.shape)
    assert "16-bit rounded to 8-bit" in attrs["source"]["conversion"]
    expected = rounded(pixels)
    if channels == 0:
        expected = np.repeat(expected[:, :, None], 3, axis=2)
    assert rebuilt.shape == expected.shape
    assert np.array_equal(rebuilt, expected)  # the palette holds every rounded colour


# --- tiled TIFF --------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [6, 8])
def test_tiled_tiff_is_converted_and_turned_chunk_by_chunk(tmp_path, china, client, orientation):
    pixels = np.ascontiguousarray(china[:200, :300])
    tiled = write_tiff(tmp_path / "tiled.tif", pixels, orientation, P3, tile=(64, 64))
    whole = write_tiff(tmp_path / "whole.tif", pixels, orientation, P3)
    found = probe(tiled)
    assert (found.kind, found.tile, found.shown) == ("tiff", (64, 64), (300, 200))
    source = open_file(tiled, "tiled.tif", 64)
    assert source.image.numblocks[:2] == (5, 4)  # 64-pixel chunks, read tile by tile
    assert source.image.chunks[0][0] == 64
    lazy = source.image.compute()
    picture = shown(whole)  # Pillow turns a TIFF as it loads it, then converts
    assert np.array_equal(read_file(whole), picture)
    assert np.array_equal(lazy, picture)  # converted per tile == converted whole

    store = str(tmp_path / "s.zarr")
    done(compress([tiled], store, chunk=64, client=client, **FAST))  # tiles read on workers
    attrs, rebuilt = stored(store, tiled)
    assert rebuilt.shape == (300, 200, 3)
    assert photo_psnr(picture, rebuilt) == pytest.approx(attrs["metrics"]["psnr_db"], abs=NEAR_DB)
    assert attrs["source"]["orientation"] == orientation
    assert attrs["source"]["profile"]["handling"] == "converted"


# --- a phone's photo through the command line --------------------------------------------------


def test_phone_photo_through_run_reconstruct_and_report(tmp_path):
    import re

    import skimage.data
    from PIL import Image

    from tests.outputs.test_htmlreport import Page, decode

    photo = skimage.data.coffee()  # 400 x 600, landscape as stored
    phone = save(tmp_path / "phone.jpg", photo, 6, P3, quality=92)
    picture = shown(phone)
    assert picture.shape == (600, 400, 3)  # portrait, as a viewer shows it

    ran = run("run", phone, "--out", "s.zarr", "--workers", "1", "-k", "32", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    attrs = open_store(str(tmp_path / "s.zarr"))["phone.jpg"].attrs
    assert attrs["source"]["conversion"] == (
        "Display P3 to sRGB (perceptual)+EXIF orientation 6 (rotated 90 clockwise)"
    )
    rebuilt = reconstruct(str(tmp_path / "s.zarr"), "phone.jpg").compute()
    assert photo_psnr(picture, rebuilt) == pytest.approx(attrs["metrics"]["psnr_db"], abs=NEAR_DB)

    out = run("reconstruct", "s.zarr", "--out", "rebuilt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (written,) = (tmp_path / "rebuilt").iterdir()
    with Image.open(written) as image:
        assert image.size == (400, 600)  # upright, no orientation tag left to apply
        assert image.getexif().get(0x0112, 1) == 1
        assert np.array_equal(np.asarray(image.convert("RGB")), rebuilt)

    report = run("report", "s.zarr", "--out", "report.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    pictures = {a["alt"]: decode(a["src"]) for a in page.images()}
    thumbnails = [name for name in pictures if "block means" in name]
    assert len(thumbnails) == 2  # the original's and the rebuilt one's
    for name in thumbnails:
        width, height = pictures[name].size
        assert height > width, name  # upright: portrait
    assert pictures[thumbnails[0]].size == pictures[thumbnails[1]].size
    text = " ".join(page.text(s) for s in page.sections)
    assert "original not shown" not in text
    found = re.search(r"1:1 crops of x ([\d,]+)-([\d,]+), y ([\d,]+)-([\d,]+), where", text)
    left, right, top, bottom = (int(n.replace(",", "")) for n in found.groups())
    region = (slice(top, bottom), slice(left, right))
    original = np.asarray(pictures["original, 1:1"].convert("RGB"))
    assert np.array_equal(original, picture[region])  # converted and turned, as compressed
    assert np.array_equal(np.asarray(pictures["rebuilt, 1:1"].convert("RGB")), rebuilt[region])


def test_report_compares_a_kept_profile_with_the_values_kept(tmp_path):
    import skimage.data

    from pipeline.outputs.report import write_report
    from pipeline.store.location import Location
    from tests.outputs.test_htmlreport import Page, decode

    path = save(tmp_path / "kept.jpg", skimage.data.coffee()[:200, :300], 6, P3, quality=90)
    store = str(tmp_path / "s.zarr")
    done(compress([path], store, color_profile="keep", **FAST))
    out = tmp_path / "report.html"
    (outcome,) = write_report(Location.at(store), str(out))
    assert outcome.note is None  # the original read as compressed: values kept, not converted
    page = Page(out.read_text(encoding="utf-8"))
    pictures = {a["alt"]: decode(a["src"]) for a in page.images()}
    assert "original, 1:1, the whole image" in pictures
    original = np.asarray(pictures["original, 1:1, the whole image"].convert("RGB"))
    assert np.array_equal(original, shown(path, convert=False))
