"""``report``: one self-contained HTML page, and ``run --report`` rendering offline.

Real stores made by ``pipeline.compress`` from real photos written as files (one source deleted
afterwards, one image damaged by deleting a labels chunk), the real command line as a
subprocess, the page parsed with ``html.parser`` and every picture decoded with Pillow. The pages
are then opened in headless Chromium with the network cut off (a network namespace of its own
where ``unshare`` allows, and a proxy that does not exist in any case): their pictures must
decode, bokeh's views must render, and the screenshots must show something.
"""

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import zarr
from PIL import Image

from pipeline import compress, compress_array
from pipeline.cli import main
from pipeline.outputs.report import TIMES, write_report
from pipeline.store.location import Location
from tests.chromium import CHROMIUM, assert_not_blank, chromium, needs_chromium, screenshot

SETTINGS = {"colors": 16, "sample": 500, "chunk": 64}
#: Image name -> what becomes of it: shown with its original, shown without (its source file is
#: deleted), left out (a labels chunk deleted), shown without (an array: 300 colours, lossless).
WHOLE, GONE, DAMAGED, ARRAY = "astronaut.png", "coffee.jpg", "chelsea.png", "gradient"
#: What the thumbnails of an image between 481 and 960 pixels wide are.
HALF = f"block means of 2{TIMES}2 pixels"


def gradient():
    """A 40 x 600 image of exactly 300 colours (stored losslessly, in uint16 labels)."""
    column = np.arange(600) // 2
    row = np.stack([column % 256, column // 256 * 100, 255 - column % 256], axis=1)
    return np.ascontiguousarray(np.broadcast_to(row, (40, 600, 3)).astype(np.uint8))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(folder, store, photos folder): the store's four images in their final states."""
    folder = tmp_path_factory.mktemp("htmlreport")
    photos = folder / "photos"
    photos.mkdir()
    iio.imwrite(photos / WHOLE, skimage.data.astronaut()[:300])
    iio.imwrite(photos / GONE, skimage.data.coffee()[:200, :330], quality=92)
    iio.imwrite(photos / DAMAGED, skimage.data.chelsea()[:150, :200])
    store = str(folder / "s.zarr")
    results = compress([str(photos)], store, **SETTINGS)
    assert sorted(r.status for r in results) == ["done"] * 3
    assert compress_array(gradient(), store, ARRAY, colors=512, chunk=64).status == "done"
    (photos / GONE).unlink()
    (Path(store) / DAMAGED / "labels" / "c" / "1" / "1").unlink()
    return folder, store, photos


def run(*args, cwd, warnings="error"):
    """``python -m pipeline ARGS``; any warning is an error unless ``warnings`` says otherwise."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": warnings},
    )


@pytest.fixture(scope="module")
def reported(made):
    """(completed process, HTML file) of ``report`` over the store."""
    folder, store, _ = made
    out = folder / "pages" / "report.html"
    return run("report", store, "--out", out, cwd=folder), out


class Page(HTMLParser):
    """Every start tag of a page, with its attributes; texts, by the nearest section."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.section = None
        self.sections = {}
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs, self.section))
        if tag == "section":
            self.section = attrs["id"]
            self.sections[self.section] = []

    def handle_endtag(self, tag):
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.section is not None:
            self.sections[self.section].append(data)

    def images(self, section=None):
        return [a for t, a, s in self.tags if t == "img" and (section is None or s == section)]

    def text(self, section):
        return " ".join("".join(self.sections[section]).split())


class Summary(HTMLParser):
    """The rows of a page's summary table, each as the texts of its cells."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.inside = self.cell = False
        self.rows = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.inside = dict(attrs).get("class") == "summary"
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.rows[-1].append("")
            self.cell = True

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif tag in ("td", "th"):
            self.cell = False

    def handle_data(self, data):
        if self.inside and self.cell:
            self.rows[-1][-1] += data


def decode(uri):
    """The picture of a ``data:image/...;base64,`` URI, decoded whole by Pillow."""
    match = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", uri)
    assert match, uri[:60]
    picture = Image.open(io.BytesIO(base64.b64decode(match.group(2), validate=True)))
    picture.load()
    assert picture.format.lower() == match.group(1)
    return picture


def expected(store, name, region):
    group = zarr.open_group(store, mode="r")[name]
    return group["palette"][...][group["labels"][region]]


def test_report_exit_status_and_lines(made, reported):
    _, store, _ = made
    done, out = reported
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"error: {DAMAGED}: 1 of 12 labels chunks missing",
        f"1 of 4 images left out; python -m pipeline verify {store} --repair redoes damaged ones",
    ]
    gone = str(made[2] / GONE)
    assert f"{GONE}: original not shown: {gone}: no such file" in done.stdout.splitlines()
    assert f"{ARRAY}: original not shown: <array>: compressed from an in-memory array" in (
        done.stdout
    )
    assert done.stdout.splitlines()[-1] == f"report: {out}: 3 of 4 images shown"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temporary left


def test_page_is_self_contained_and_every_picture_decodes(made, reported):
    _, out = reported
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    tags = {tag for tag, _, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "form"}, tags
    assert "url(" not in text
    assert "@import" not in text
    for tag, attrs, _ in page.tags:
        for key in ("src", "href", "srcset", "poster", "data", "action"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:image/", "#")), (tag, key, value[:80])
    policy = next(a["content"] for t, a, _ in page.tags if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in policy
    assert "img-src data:" in policy
    images = page.images()
    assert len(images) == 4 + 2 + 1  # with its original: 2 thumbnails, 2 crops; no crop at 1:1
    for attrs in images:
        picture = decode(attrs["src"])
        assert picture.size == (int(attrs["width"]), int(attrs["height"])), attrs["alt"]
        assert max(picture.size) <= 480


def test_summary_table_has_a_row_per_image_and_totals(made, reported):
    _, store, _ = made
    _, out = reported
    header, *rows, total = Summary(out.read_text(encoding="utf-8")).rows
    assert header[:5] == ["image", "status", f"size (W{TIMES}H)", "colors", "PSNR dB"]
    assert [row[0] for row in rows] == sorted([WHOLE, GONE, DAMAGED, ARRAY])
    assert all(len(row) == len(header) for row in rows if row[0] != DAMAGED)
    by_name = {row[0]: row for row in rows}
    assert by_name[DAMAGED] == [DAMAGED, "damaged", "1 of 12 labels chunks missing"]
    metrics = zarr.open_group(store, mode="r")[WHOLE].attrs["metrics"]
    assert by_name[WHOLE][:4] == [WHOLE, "complete", f"512{TIMES}300", "16"]
    assert f"{metrics['psnr_db']:.2f}" in by_name[WHOLE]
    assert f"{metrics['ratio']:.1f}x" in by_name[WHOLE]
    assert "lossless" in by_name[ARRAY]
    assert total[0] == "total: 3 of 4 images"


def test_sections_show_palettes_pictures_and_why_an_original_is_missing(made, reported):
    _, store, photos = made
    _, out = reported
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert sorted(page.sections) == ["image-0", "image-2", "image-3"]  # 1 is the damaged one
    sections = {page.text(s).split(" ", 1)[0]: s for s in page.sections}

    whole = sections[WHOLE]
    pictures = {a["alt"]: decode(a["src"]) for a in page.images(whole)}
    assert sorted(pictures) == [
        "original, 1:1",
        f"original, {HALF}",
        "rebuilt, 1:1",
        f"rebuilt, {HALF}",
    ]
    assert pictures[f"original, {HALF}"].format == "JPEG"
    found = re.search(
        r"1:1 crops of x ([\d,]+)-([\d,]+), y ([\d,]+)-([\d,]+), where", page.text(whole)
    )
    left, right, top, bottom = (int(n.replace(",", "")) for n in found.groups())
    assert (right - left, bottom - top) == (256, 256)
    region = (slice(top, bottom), slice(left, right))
    rebuilt = np.asarray(pictures["rebuilt, 1:1"].convert("RGB"))
    assert np.array_equal(rebuilt, expected(store, WHOLE, region))  # lossless, exact pixels
    original = np.asarray(pictures["original, 1:1"].convert("RGB"))
    assert np.array_equal(original, iio.imread(photos / WHOLE)[region])
    swatches = [a for t, a, s in page.tags if t == "span" and s == whole and "title" in a]
    assert len(swatches) == 16
    shares = [float(re.search(r"([\d.]+)% of pixels", a["title"]).group(1)) for a in swatches]
    assert shares == sorted(shares, reverse=True)  # most used first

    gone = sections[GONE]
    assert [a["alt"] for a in page.images(gone)] == ["rebuilt, 1:1, the whole image"]
    assert f"original not shown: {photos / GONE}: no such file" in page.text(gone)

    array = sections[ARRAY]
    assert "Palette: 300 colours, the 256 most used shown" in page.text(array)
    assert "and 44 more colours" in page.text(array)
    assert "1:1 crop of x 172-428, y 0-40, the centre" in page.text(array)
    crop = next(a for a in page.images(array) if a["alt"] == "rebuilt, 1:1")
    picture = decode(crop["src"])
    assert picture.size == (256, 40)
    assert np.array_equal(
        np.asarray(picture.convert("RGB")), expected(store, ARRAY, (slice(0, 40), slice(172, 428)))
    )


def test_existing_report_is_kept_unless_overwrite(made, tmp_path):
    _, store, _ = made
    out = tmp_path / "report.html"
    out.write_text("mine")
    kept = run("report", store, "--out", out, "--name", WHOLE, cwd=tmp_path)
    assert kept.returncode == 2
    assert kept.stderr.strip() == f"error: {out} exists; --overwrite replaces it"
    assert out.read_text() == "mine"
    done = run("report", store, "--out", out, "--name", WHOLE, "--overwrite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(Page(out.read_text(encoding="utf-8")).images()) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_report_stopped_early_writes_nothing(made, tmp_path):
    outcomes = write_report(Location.at(made[1]), str(tmp_path / "report.html"))
    assert next(outcomes).name == WHOLE
    outcomes.close()  # as the command does when a signal stops it
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message", "status"),
    [
        (["nowhere.zarr", "--out", "r.html"], "error: nowhere.zarr: no such store", 1),
        (["STORE", "--out", "r.html", "--name", "../x"], "not an image name", 2),
        (["STORE", "--out", "s3://bucket/r.html"], "the report must be a local file", 2),
        (["STORE", "--out", ".", "--overwrite"], "exists and is a folder; not replaced", 2),
    ],
)
def test_errors_before_writing_write_nothing(
    made, tmp_path, monkeypatch, capsys, args, message, status
):
    monkeypatch.chdir(tmp_path)
    code = main(["report", *(made[1] if a == "STORE" else a for a in args)])
    out, err = capsys.readouterr()
    assert code == status, err
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: ")
    assert message in line
    assert list(tmp_path.iterdir()) == []


# --- headless Chromium, offline ---------------------------------------------------------------


#: Loads a page in a frame, then writes what its script found into #result: ``dump-dom`` prints
#: that. ``PROBE`` is a JavaScript expression over the framed page's ``doc`` and ``win`` that
#: gives a string once the page is ready, or null to look again 50 ms (virtual time) later.
CHECKER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body>
<pre id="result">pending</pre>
<iframe id="page" src="PAGE" width="1200" height="1600"></iframe>
<script>
const frame = document.getElementById("page");
const result = document.getElementById("result");
let polls = 0;
function probe(doc, win) { return PROBE; }
function check() {
  let found = null;
  try {
    const doc = frame.contentDocument;
    if (doc && doc.URL.endsWith("PAGE") && doc.readyState === "complete") {
      found = probe(doc, frame.contentWindow);
    }
  } catch (error) {
    result.textContent = "error: " + error;
    return;
  }
  if (found !== null) {
    result.textContent = "done: " + found;
  } else if (++polls < 400) {
    setTimeout(check, 50);
  } else {
    result.textContent = "timeout";
  }
}
check();
</script></body></html>
"""


def checked(tmp_path, page, probe):
    """What ``probe`` found in ``page``, opened in a frame by headless Chromium offline."""
    checker = page.with_name(f"check-{page.name}")
    checker.write_text(CHECKER.replace("PAGE", page.name).replace("PROBE", probe))
    done = chromium(tmp_path, checker.as_uri(), "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, done.stdout[-2000:]
    return found.group(1)


#: How many of the page's pictures loaded with a size (once the page has loaded, each one has
#: loaded or failed), and how many decode: drawn on a canvas (which decodes them there and
#: then), every one of their pixels is opaque.
PICTURES = """(() => {
  const pictures = Array.from(doc.images);
  const loaded = pictures.filter(p => p.complete && p.naturalWidth > 0 && p.naturalHeight > 0);
  let decoded = 0;
  for (const picture of loaded) {
    const canvas = document.createElement("canvas");
    canvas.width = picture.naturalWidth;
    canvas.height = picture.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(picture, 0, 0);
    const values = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let opaque = true;
    for (let i = 3; i < values.length && opaque; i += 4) opaque = values[i] === 255;
    decoded += opaque;
  }
  return `pictures ${pictures.length} loaded ${loaded.length} decoded ${decoded}`;
})()"""


@needs_chromium
def test_report_renders_offline_in_chromium(reported, tmp_path):
    _, out = reported
    page = tmp_path / "report.html"
    shutil.copy(out, page)
    assert checked(tmp_path, page, PICTURES) == "done: pictures 7 loaded 7 decoded 7"
    assert_not_blank(screenshot(tmp_path, page), spread=20, colours=2000)  # photographs


#: bokeh's JavaScript ran, and drew its views into the page's root element.
BOKEH = """(() => {
  const root = doc.querySelector("[data-root-id]");
  const views = win.Bokeh && win.Bokeh.index ? Object.keys(win.Bokeh.index).length : 0;
  if ((views === 0 || !root || root.childElementCount === 0) && polls < 300) return null;
  return `bokeh ${win.Bokeh ? win.Bokeh.version : "missing"} views ${views} root ${
    root ? root.childElementCount : "missing"}`;
})()"""


class Loads(HTMLParser):
    """What a page loads from elsewhere: script sources, stylesheets, frames, pictures."""

    def __init__(self, text):
        super().__init__()
        self.external = []
        self.scripts = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        address = attrs.get("src") or (attrs.get("href") if tag == "link" else None)
        if address and not address.startswith(("data:", "#")):
            self.external.append((tag, address))


@pytest.mark.slow
def test_run_performance_report_is_self_contained_and_renders_offline(tmp_path):
    photo = tmp_path / "photo.png"
    iio.imwrite(photo, skimage.data.coffee()[:120, :160])
    options = ["--workers", "1", "--colors", "8", "--sample", "200", "--report", "perf.html"]
    done = run("run", photo, "--out", "s.zarr", *options, cwd=tmp_path, warnings="default")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "perf.html").read_text(encoding="utf-8")
    loads = Loads(text)
    assert loads.external == []  # bokeh's JavaScript is inline: no <script src=https://cdn...>
    assert loads.scripts >= 2
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed: the report's offline rendering is not checked")
    found = checked(tmp_path, tmp_path / "perf.html", BOKEH)
    assert re.fullmatch(r"done: bokeh \d\S* views [1-9]\d* root [1-9]\d*", found), found
    assert_not_blank(screenshot(tmp_path, tmp_path / "perf.html"), spread=5, colours=16)
