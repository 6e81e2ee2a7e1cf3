"""``reconstruct`` to PNG, GIF and WebP: exact files, indexed where the format allows.

Real stores made by ``pipeline.compress_array`` from real photos (china.jpg and crops of it, or
posterized copies with exactly k of their colours) and by ``pipeline.compress`` from an RGBA
PNG file (transparency), the real command line (``pipeline.cli.main``) and the files it
writes, decoded by Pillow. RGBA palettes are also given to the writer directly, for the cases
a fit does not make.
"""

import io
import struct
import subprocess
import sys
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from pipeline import compress, compress_array, write_images
from pipeline.cli import build_parser, main
from pipeline.outputs.files import format_problem, write_palette_image
from pipeline.quantize.order import palette_order

SMALL = {"sample": 500, "chunk": 32}  # 120 x 170 crops: 4 x 6 labels chunks


def bands(photo, k):
    """(H, W) labels of ``photo``: ``k`` bands of brightness of equal size."""
    brightness = photo.astype(np.int32).sum(axis=2).ravel()
    rank = np.empty(brightness.size, dtype=np.int64)
    rank[np.argsort(brightness, kind="stable")] = np.arange(brightness.size)
    labels = (rank * k // brightness.size).reshape(photo.shape[:2])
    return labels.astype(np.uint8 if k <= 256 else np.uint16)


def colours_of(photo, k):
    """``k`` distinct colours of ``photo``, (k, 3) uint8."""
    colours = np.unique(photo.reshape(-1, 3), axis=0)
    return colours[np.linspace(0, len(colours) - 1, k).astype(int)]


def posterized(photo, k):
    """``photo`` with exactly ``k`` of its own colours."""
    return colours_of(photo, k)[bands(photo, k)]


def stored(store, name):
    group = zarr.open_group(store, mode="r")[name]
    return group["palette"][...], group["labels"][...]


def expected(store, name):
    palette, labels = stored(store, name)
    return palette[labels]


def chunks(data):
    """A PNG file's chunks, type -> data (IDAT: all of them joined), checked against their CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        assert kind == b"IDAT" or kind not in found
        found[kind] = found.get(kind, b"") + body
        at += 12 + length
    return found


def decoded(data, mode="RGB"):
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(mode))


def written(palette, labels, extension):
    file = io.BytesIO()
    write_palette_image(palette, labels, file, extension)
    return file.getvalue()


def in_cooccurrence_order(found, palette, labels):
    """The PNG's PLTE: the stored palette's k entries, colours that touch side by side."""
    in_file = np.frombuffer(found[b"PLTE"], dtype=np.uint8).reshape(-1, 3)
    assert np.array_equal(in_file, palette[palette_order(labels, len(palette)), :3])
    return in_file


def cli(capsys, *args):
    code = main(["reconstruct", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines(), err.splitlines()


def test_png_is_indexed_from_the_stored_palette_and_exact(store, tmp_path, china):
    compress_array(china, store, "china.jpg", colors=128, chunk=200, sample=2000)
    palette, labels = stored(store, "china.jpg")
    done = write_images(store, str(tmp_path / "out"))
    assert done.left_out == {}
    data = (tmp_path / "out" / "china.png").read_bytes()
    found = chunks(data)
    assert found[b"IHDR"][:10] == struct.pack(">IIBB", 640, 427, 8, 3)  # 8-bit palette
    in_file = in_cooccurrence_order(found, palette, labels)  # its k entries only
    assert b"tRNS" not in found
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "P"
        assert np.array_equal(in_file[np.asarray(image)], palette[labels])
    assert np.array_equal(decoded(data), palette[labels])
    assert np.array_equal(iio.imread(tmp_path / "out" / "china.png"), palette[labels])
    # under a third of the RGB PNG of the same pixels that reconstruct wrote before
    assert len(data) < len(iio.imwrite("<bytes>", palette[labels], extension=".png")) / 2.5


@pytest.mark.parametrize(("k", "depth"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 4), (16, 4), (17, 8)])
def test_png_has_the_fewest_bits_per_pixel_the_palette_allows(
    store, tmp_path, small_photo, k, depth
):
    compress_array(posterized(small_photo, k), store, "p.png", colors=32, **SMALL)
    palette, labels = stored(store, "p.png")
    assert len(palette) == k  # an image of k colours stores exactly them
    write_images(store, str(tmp_path / "out"))
    data = (tmp_path / "out" / "p.png").read_bytes()
    found = chunks(data)
    assert found[b"IHDR"][8:10] == bytes([depth, 3])
    in_cooccurrence_order(found, palette, labels)
    assert np.array_equal(decoded(data), palette[labels])


def test_uint16_labels_of_at_most_256_colours_are_indexed_too(store, tmp_path, small_photo):
    compress_array(posterized(small_photo, 200), store, "p.png", colors=300, **SMALL)
    palette, labels = stored(store, "p.png")
    assert (len(palette), labels.dtype) == (200, np.uint16)
    write_images(store, str(tmp_path / "out"))
    data = (tmp_path / "out" / "p.png").read_bytes()
    assert chunks(data)[b"IHDR"][8:10] == bytes([8, 3])
    assert np.array_equal(decoded(data), palette[labels])


def test_above_256_colours_png_is_rgb_as_before_webp_and_jxl_lossless(store, tmp_path, small_photo):
    compress_array(small_photo, store, "p.png", colors=400, **SMALL)
    palette, labels = stored(store, "p.png")
    assert len(palette) > 256
    for extension in (".png", ".webp", ".jxl"):
        write_images(store, str(tmp_path / "out"), extension=extension)
    png = (tmp_path / "out" / "p.png").read_bytes()
    assert chunks(png)[b"IHDR"][8:10] == bytes([8, 2])  # 8-bit RGB
    assert png == iio.imwrite("<bytes>", palette[labels], extension=".png")  # as before
    webp = (tmp_path / "out" / "p.webp").read_bytes()
    assert np.array_equal(decoded(webp), palette[labels])
    jxl = (tmp_path / "out" / "p.jxl").read_bytes()
    assert np.array_equal(jxl_decoded(jxl), palette[labels])


def test_gif_and_webp_are_exact(store, tmp_path, small_photo):
    compress_array(small_photo, store, "p.png", colors=64, **SMALL)
    palette, labels = stored(store, "p.png")
    for extension in (".gif", ".webp"):
        done = write_images(store, str(tmp_path / "out"), extension=extension)
        target = tmp_path / "out" / f"p{extension}"
        assert done.written == {"p.png": str(target)}
        assert np.array_equal(decoded(target.read_bytes()), palette[labels]), extension
    with Image.open(tmp_path / "out" / "p.gif") as gif:
        assert gif.mode == "P"
        assert len(np.unique(np.asarray(gif))) == len(np.unique(labels))  # one index per label
    with Image.open(tmp_path / "out" / "p.webp") as webp:
        assert webp.mode == "RGB"  # no alpha stored


def test_gif_of_too_many_colours_is_one_line_and_the_others_are_written(
    capsys, store, tmp_path, small_photo
):
    compress_array(small_photo, store, "many.png", colors=300, **SMALL)
    compress_array(small_photo, store, "few.png", colors=64, **SMALL)
    colours = len(stored(store, "many.png")[0])
    assert colours > 256
    out_dir = tmp_path / "out"
    code, out, err = cli(capsys, store, "--out", out_dir, "--format", "gif")
    assert code == 1
    assert out == [f"few.png -> {out_dir / 'few.gif'}"]
    assert err == [
        f"error: many.png: not written: GIF holds at most 256 colours and the image has "
        f"{colours}; --format png or webp keeps them all",
        "1 of 2 images left out, 1 written",
    ]
    assert [p.name for p in out_dir.iterdir()] == ["few.gif"]  # no temporary left
    assert np.array_equal(decoded((out_dir / "few.gif").read_bytes()), expected(store, "few.png"))


def test_gif_and_webp_size_limits_are_one_line_and_png_keeps_pillows_own(
    capsys, store, tmp_path, small_photo
):
    strip = np.tile(posterized(small_photo, 8)[:1], (1, 386, 1))[:, :65_536]  # 65,536 x 1
    compress_array(strip, store, "wide.png", colors=8, chunk=4096, sample=500)
    compress_array(small_photo, store, "small.png", colors=16, **SMALL)
    for form, name, limit in (("gif", "GIF", "65,535"), ("webp", "WebP", "16,383")):
        out_dir = tmp_path / form
        code, out, err = cli(capsys, store, "--out", out_dir, "--format", form)
        assert code == 1
        assert out == [f"small.png -> {out_dir / ('small.' + form)}"]
        assert err[0] == (
            f"error: wide.png: not written: {name} holds at most {limit} x {limit} pixels and "
            "the image is 65,536 x 1; --format png or tif holds it"
        )
        assert [p.name for p in out_dir.iterdir()] == [f"small.{form}"]
    code, _, err = cli(capsys, store, "--out", tmp_path / "png")
    assert code == 0, err
    data = (tmp_path / "png" / "wide.png").read_bytes()
    assert chunks(data)[b"IHDR"][:10] == struct.pack(">IIBB", 65_536, 1, 4, 3)
    assert np.array_equal(decoded(data), expected(store, "wide.png"))


@pytest.mark.parametrize("form", ["png", "gif", "webp"])
def test_an_existing_file_is_kept_unless_overwrite_then_replaced_whole(
    capsys, store, tmp_path, small_photo, form
):
    compress_array(small_photo, store, "p.png", colors=32, **SMALL)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    old = out_dir / f"p.{form}"
    old.write_bytes(b"someone's file")
    code, out, err = cli(capsys, store, "--out", out_dir, "--format", form)
    assert (code, out) == (1, [])
    assert err[0] == f"error: p.png: not written: {old} exists; --overwrite replaces it"
    assert old.read_bytes() == b"someone's file"
    code, out, err = cli(capsys, store, "--out", out_dir, "--format", form, "--overwrite")
    assert (code, out, err) == (0, [f"p.png -> {old}"], [])
    assert np.array_equal(decoded(old.read_bytes()), expected(store, "p.png"))
    assert [p.name for p in out_dir.iterdir()] == [old.name]  # no temporary left


@pytest.fixture(scope="module")
def rgba(small_photo):
    """(k, 4) palette of five photo colours, two of them transparent, and real labels."""
    palette = np.column_stack([colours_of(small_photo, 5), [255, 0, 255, 128, 255]])
    return palette.astype(np.uint8), bands(small_photo, 5)


def test_png_of_an_rgba_palette_has_a_short_trns_chunk_and_exact_alpha(rgba):
    palette, labels = rgba
    data = written(palette, labels, ".png")
    found = chunks(data)
    assert found[b"IHDR"][8:10] == bytes([4, 3])
    preferred = palette_order(labels, 5).tolist()
    transparent_first = [i for i in preferred if i in (1, 3)] + [
        i for i in preferred if i not in (1, 3)
    ]
    assert found[b"PLTE"] == palette[transparent_first, :3].tobytes()
    assert found[b"tRNS"] == palette[transparent_first[:2], 3].tobytes()  # the others opaque
    assert np.array_equal(decoded(data, "RGBA"), palette[labels])  # colours under alpha 0 too


def test_an_opaque_rgba_palette_writes_what_its_rgb_does(rgba, small_photo):
    palette, labels = rgba
    opaque = palette.copy()
    opaque[:, 3] = 255
    for extension in (".png", ".gif", ".webp"):
        assert written(opaque, labels, extension) == written(palette[:, :3], labels, extension)
    assert b"tRNS" not in chunks(written(opaque, labels, ".png"))


def test_gif_of_an_rgba_palette_takes_one_fully_transparent_colour_only(rgba):
    palette, labels = rgba
    one = palette.copy()
    one[3, 3] = 255  # only entry 1 transparent, fully
    data = written(one, labels, ".gif")
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.info["transparency"] == 0
    assert np.array_equal(decoded(data, "RGBA"), one[labels])
    two = one.copy()
    two[3, 3] = 0
    for refused in (palette, two):  # partly transparent; two transparent colours
        problem = format_problem(refused, labels.shape, ".gif")
        assert problem == (
            "GIF holds one fully transparent colour at most and no partly transparent one, and "
            "2 of the image's colours are transparent; --format png or webp keeps them"
        )
        with pytest.raises(ValueError, match=r"^GIF holds one fully transparent") as raised:
            written(refused, labels, ".gif")
        assert str(raised.value) == problem


def test_webp_of_an_rgba_palette_is_exact_even_under_full_transparency(rgba):
    palette, labels = rgba
    data = written(palette, labels, ".webp")
    with Image.open(io.BytesIO(data)) as webp:
        assert webp.mode == "RGBA"
    assert np.array_equal(decoded(data, "RGBA"), palette[labels])


def test_png_of_more_than_256_rgba_colours_is_rgba_and_exact(small_photo):
    palette = np.column_stack([colours_of(small_photo, 300), np.arange(300) % 256])
    palette = palette.astype(np.uint8)
    labels = bands(small_photo, 300)
    data = written(palette, labels, ".png")
    assert chunks(data)[b"IHDR"][8:10] == bytes([8, 6])  # 8-bit RGBA
    assert np.array_equal(decoded(data, "RGBA"), palette[labels])


def test_a_store_with_transparency_is_rebuilt_exactly_in_every_format_that_holds_alpha(
    capsys, store, tmp_path, small_photo, write_image
):
    alpha = np.full(small_photo.shape[:2], 255, dtype=np.uint8)
    alpha[:, :40], alpha[:, 40:60] = 0, 128
    compress([write_image("a.png", np.dstack([small_photo, alpha]))], store, colors=16, **SMALL)
    palette, labels = stored(store, "a.png")
    assert palette.shape[1] == 4  # an RGBA palette
    transparent = np.count_nonzero(palette[:, 3] < 255)
    for form in ("png", "webp", "tif", "zarr"):
        code, _, err = cli(capsys, store, "--out", tmp_path / "out", "--format", form)
        assert code == 0, err
        target = tmp_path / "out" / f"a.{form}"
        if form == "zarr":
            got = zarr.open_array(target, mode="r")[...]
        elif form == "tif":
            got = tifffile.imread(target)
        else:
            got = decoded(target.read_bytes(), "RGBA")
        assert np.array_equal(got, palette[labels]), form
    assert b"tRNS" in chunks((tmp_path / "out" / "a.png").read_bytes())
    code, _, err = cli(capsys, store, "--out", tmp_path / "out", "--format", "gif")
    assert code == 1
    assert err[0] == (
        "error: a.png: not written: GIF holds one fully transparent colour at most and no "
        f"partly transparent one, and {transparent} of the image's colours are transparent; "
        "--format png or webp keeps them"
    )


def test_the_writer_refuses_what_it_cannot_write_exactly(rgba):
    palette, labels = rgba
    with pytest.raises(IndexError):  # a label beyond the palette is never written
        written(palette[:4], labels, ".png")
    with pytest.raises(ValueError, match=r"^a palette is \(k, 3\) or \(k, 4\) uint8"):
        written(palette[:, :2], labels, ".png")
    with pytest.raises(ValueError, match=r"^a palette is"):
        written(palette.astype(np.uint16), labels, ".png")
    with pytest.raises(ValueError, match=r"^'\.bmp' is not one of \.png, \.gif, \.webp, \.jxl$"):
        written(palette, labels, ".bmp")


def test_help_says_which_formats_are_indexed_and_exact():
    parser = build_parser()
    text = " ".join(
        parser._subparsers._group_actions[0].choices["reconstruct"].format_help().split()
    )
    for words in (
        "indexed PNG and GIF",
        "above 256 colours",
        "lossless WebP",
        "GIF of over 256",
        "lossless JPEG XL",
        "--effort N",
    ):
        assert words in text


PEAK = """
import resource, sys
from pipeline import write_images
store, out, extension = sys.argv[1:]
write_images(store, out, ["small.png"], extension)  # imports and first calls
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
done = write_images(store, out, ["large.png"], extension)
assert not done.left_out, done.left_out
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.slow
def test_indexed_files_hold_the_labels_in_memory_never_rgb(store, tmp_path, china):
    large = np.tile(posterized(china, 16), (7, 6, 1))  # 2,989 x 3,840: 11.5 megapixels
    compress_array(large, store, "large.png", colors=16, chunk=256, sample=500)
    compress_array(china[:64, :64], store, "small.png", colors=16, chunk=256, sample=500)
    pixels = large.shape[0] * large.shape[1]
    for extension in (".png", ".gif"):
        peak = subprocess.run(
            [sys.executable, "-c", PEAK, store, str(tmp_path / "out"), extension],
            capture_output=True,
            text=True,
            check=True,
        )
        # the labels (1 byte per pixel), a band of chunks and the encoder's buffers; the RGB
        # image alone would be 3 bytes per pixel (the RGB path peaks at 11 or more)
        assert int(peak.stdout) < 2 * pixels, (extension, int(peak.stdout) / pixels)
        target = tmp_path / "out" / f"large{extension}"
        assert np.array_equal(decoded(target.read_bytes()), expected(store, "large.png"))


@pytest.mark.parametrize("colours", [2, 4, 16, 200])
def test_png_rows_in_several_idat_chunks(monkeypatch, colours):
    from pipeline.outputs import png

    monkeypatch.setattr(png, "IDAT_BYTES", 64)  # many chunks
    rng = np.random.default_rng(colours)
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    labels = rng.integers(0, colours, (37, 53)).astype(np.uint8)
    out = io.BytesIO()
    write_palette_image(palette, labels, out, ".png", rows=5)
    data = out.getvalue()
    assert data.count(b"IDAT") > 3
    assert data[24] == png.bit_depth(colours)  # IHDR bit depth
    assert np.array_equal(decoded(data, "RGB"), palette[labels])


def test_a_smooth_image_gets_filtered_rows_and_stays_exact():
    import skimage.data

    from pipeline.outputs import png

    gray = skimage.data.camera()
    palette = np.repeat(np.arange(0, 256, 2, dtype=np.uint8)[:, None], 3, axis=1)[::-1].copy()
    labels = (127 - gray // 2).astype(np.uint8)  # dark entries last: the file reorders them
    data = written(palette, labels, ".png")
    idat = chunks(data)[b"IDAT"]
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(512, 513)
    (kind,) = set(rows[:, 0])  # one filter type for every row, and not none
    assert kind != png.NONE
    assert np.array_equal(decoded(data), palette[labels])
    unfiltered = len(png.deflate(png.scanlines(labels, png.NONE)))
    assert len(idat) < 0.95 * unfiltered


def unfiltered_oracle(rows, kind):
    """PNG's reconstruction of rows of one byte per pixel, byte by byte (the spec's rules)."""
    out = [[0] * len(rows[0]) for _ in rows]
    for y, row in enumerate(rows):
        for x, value in enumerate(row):
            left = out[y][x - 1] if x else 0
            up = out[y - 1][x] if y else 0
            corner = out[y - 1][x - 1] if x and y else 0
            if kind == 0:
                guess = 0
            elif kind == 1:
                guess = left
            elif kind == 2:
                guess = up
            elif kind == 3:
                guess = (left + up) // 2
            else:
                p = left + up - corner
                far = [abs(p - left), abs(p - up), abs(p - corner)]
                guess = (left, up, corner)[far.index(min(far))]
            out[y][x] = (int(value) + guess) % 256
    return np.array(out, dtype=np.uint8)


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_each_png_filter_is_undone_by_pngs_own_reconstruction(kind):
    from pipeline.outputs import png

    rng = np.random.default_rng(kind)
    packed = rng.integers(0, 256, (9, 14), dtype=np.uint8)
    rows = png.scanlines(packed, kind)
    assert set(rows[:, 0]) == {kind}
    assert np.array_equal(unfiltered_oracle(rows[:, 1:], kind), packed)


@pytest.mark.parametrize("colours", [16, 128])
def test_a_photos_png_is_smaller_than_pillows_optimized_one(store, tmp_path, china, colours):
    compress_array(china, store, "china.jpg", colors=colours, chunk=200, sample=2000)
    palette, labels = stored(store, "china.jpg")
    data = written(palette, labels, ".png")
    assert np.array_equal(decoded(data), palette[labels])
    image = Image.fromarray(labels.astype(np.uint8), "P")
    image.putpalette(palette[:, :3].tobytes())
    pillows = io.BytesIO()
    image.save(pillows, format="PNG", optimize=True)
    assert len(data) < len(pillows.getvalue())


def jxl_decoded(data):
    import imagecodecs

    return np.asarray(imagecodecs.jpegxl_decode(data))


def test_jxl_is_exact_and_smaller_than_the_png(store, tmp_path, capsys, china):
    compress_array(china, store, "china.jpg", colors=64, chunk=200, sample=2000)
    out_dir = tmp_path / "out"
    for form in ("jxl", "png"):
        code, _, err = cli(capsys, store, "--out", out_dir, "--format", form)
        assert (code, err) == (0, [])
    data = (out_dir / "china.jxl").read_bytes()
    assert data[:2] == b"\xff\x0a"  # a bare JPEG XL codestream
    assert np.array_equal(jxl_decoded(data), expected(store, "china.jpg"))
    assert len(data) < (out_dir / "china.png").stat().st_size


@pytest.mark.parametrize("effort", [1, 10])
def test_jxl_of_an_rgba_palette_keeps_alpha_and_the_colours_under_it(rgba, effort):
    palette, labels = rgba
    file = io.BytesIO()
    write_palette_image(palette, labels[:40, :50], file, ".jxl", effort=effort)
    assert np.array_equal(jxl_decoded(file.getvalue()), palette[labels[:40, :50]])


def test_jxl_of_a_store_with_a_kept_profile_is_one_line_and_png_embeds_it(tmp_path, small_photo):
    from PIL import ImageCms

    from tests.viewing import save

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = save(tmp_path / "photo.png", small_photo, icc=icc)
    store = str(tmp_path / "s.zarr")
    compress([path], store, color_profile="keep", colors=16, sample=500)
    done = write_images(store, str(tmp_path / "out"), extension=".jxl")
    assert list(done.left_out) == ["photo.png"]
    assert "ICC profile" in done.left_out["photo.png"]
    assert "--format png or webp" in done.left_out["photo.png"]
    assert "\n" not in done.left_out["photo.png"]
    assert not (tmp_path / "out" / "photo.jxl").exists()


def test_webp_effort_is_passed_on_and_stays_exact(store, tmp_path, capsys, small_photo):
    compress_array(small_photo, store, "p.png", colors=32, **SMALL)
    for effort in ("0", "6"):
        out_dir = tmp_path / effort
        code, _, err = cli(capsys, store, "--out", out_dir, "--format", "webp", "--effort", effort)
        assert (code, err) == (0, [])
        assert np.array_equal(decoded((out_dir / "p.webp").read_bytes()), expected(store, "p.png"))


@pytest.mark.parametrize(
    ("form", "effort", "says"),
    [
        ("jxl", "11", "--effort 11: JPEG XL takes 1 to 10"),
        ("webp", "7", "--effort 7: WebP takes 0 to 6"),
        ("png", "3", "--effort 3: only jxl and webp take an effort, not png"),
    ],
)
def test_an_effort_the_format_does_not_take_is_a_usage_error(
    store, tmp_path, capsys, small_photo, form, effort, says
):
    compress_array(small_photo, store, "p.png", colors=8, **SMALL)
    code, out, err = cli(
        capsys, store, "--out", tmp_path / "out", "--format", form, "--effort", effort
    )
    assert (code, out) == (2, [])
    assert len(err) == 1
    assert says in err[0]
    assert not (tmp_path / "out").exists()
