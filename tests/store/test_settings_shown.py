"""The settings each image was made with, as ``info`` and ``report`` show them.

One real store written by ``pipeline.compress`` (no cluster) from real files, with images made
with different settings: a photo dithered in OKLab, a photo with the defaults but colours and
sample, and the three frames of an animated GIF. ``info`` runs as the command line
(:func:`tests.test_cli.run`); the report's page is parsed as in
:mod:`tests.outputs.test_htmlreport`.
"""

import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data

from pipeline import compress
from pipeline.job.summary import settings_line, settings_text
from tests.outputs.test_htmlreport import Page, Summary
from tests.test_cli import run

#: The dithered photo's settings, as given to ``compress``.
DITHERED = {
    "colors": 12,
    "sample": 800,
    "seed": 7,
    "chunk": 64,
    "effort": 2,
    "space": "oklab",
    "dither": "blue-noise",
    "dither_strength": 1.5,
}
#: The plain photo's and the GIF's frames' settings.
PLAIN = {"colors": 8, "sample": 500, "chunk": 64}
ANIMATION = "anim.gif"
FRAMES = [f"{ANIMATION}.frame-{i}" for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(folder, store) holding ``dithered.png``, ``plain.png`` and the GIF's three frames."""
    folder = tmp_path_factory.mktemp("settings")
    photo = skimage.data.astronaut()[:96, :128]
    iio.imwrite(folder / "dithered.png", photo)
    iio.imwrite(folder / "plain.png", skimage.data.coffee()[:80, :120])
    frames = np.stack([np.roll(photo, 8 * i, axis=1) for i in range(3)])
    iio.imwrite(folder / ANIMATION, frames, extension=".gif", loop=0)
    store = str(folder / "s.zarr")
    for inputs, settings in [
        (["dithered.png"], DITHERED),
        (["plain.png"], PLAIN),
        ([ANIMATION], {**PLAIN, "frames": "all"}),
    ]:
        results = compress([str(folder / name) for name in inputs], store, **settings)
        assert {r.status for r in results} == {"done"}, results
    return folder, store


def test_info_json_gives_each_images_settings_as_recorded(made):
    folder, store = made
    done = run("info", store, "--json", cwd=folder)
    assert done.returncode == 0, done.stderr
    images = json.loads(done.stdout)["images"]
    assert sorted(images) == sorted(["dithered.png", "plain.png", *FRAMES])
    dithered = images["dithered.png"]["settings"]
    assert dithered.items() >= {**DITHERED, "color_profile": "convert", "max_iter": 1}.items()
    assert dithered["tol"] == pytest.approx(1e-4)
    assert "frame" not in dithered
    plain = images["plain.png"]["settings"]
    # the settings left out of fit_settings at their original values are filled in
    assert "space" not in images["plain.png"]["fit_settings"]
    assert plain.items() >= {**PLAIN, "seed": 0, "effort": 1, "space": "rgb"}.items()
    assert plain["dither"] == "none"
    assert "dither_strength" not in plain
    for index, name in enumerate(FRAMES):
        assert images[name]["settings"]["frame"] == index
        assert images[name]["settings"].items() >= PLAIN.items()


def test_info_text_gives_a_settings_line_per_image_when_they_differ(made):
    folder, store = made
    done = run("info", store, cwd=folder)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("settings:")
    shown = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines[start + 1 :]}
    assert shown["dithered.png"] == (
        "colours asked 12, sample 800, seed 7, effort 2, space oklab, dither blue-noise, "
        "strength 1.5, chunk 64"
    )
    assert shown["plain.png"] == (
        "colours asked 8, sample 500, seed 0, effort 1, space rgb, dither none, chunk 64"
    )
    assert shown[FRAMES[2]] == (
        "colours asked 8, sample 500, seed 0, effort 1, space rgb, dither none, chunk 64, "
        "frame (from 0) 2"
    )
    assert len(shown) == 5


def test_info_text_gives_one_line_for_images_made_alike(made, tmp_path):
    folder, _ = made
    store = str(tmp_path / "alike.zarr")
    results = compress([str(folder / "plain.png"), str(folder / "dithered.png")], store, **PLAIN)
    assert {r.status for r in results} == {"done"}
    done = run("info", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "settings (every image): colours asked 8, sample 500, seed 0, effort 1, space rgb, "
        "dither none, chunk 64"
    )


def test_report_shows_settings_and_marks_dithered_images(made):
    folder, store = made
    out = folder / "report.html"
    done = run("report", store, "--out", out, cwd=folder)
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    sections = dict(re.findall(r"<h2>(.*?)</h2>.*?<th>settings</th><td>(.*?)</td>", text, re.S))
    mark = ' <span class="mark" title="dithered: blue-noise 1.5">dithered</span>'
    assert sections[f"dithered.png{mark}"] == (
        "colours asked 12, sample 800, seed 7, effort 2, space oklab, dither blue-noise, "
        "strength 1.5, chunk 64"
    )
    assert sections["plain.png"] == (
        "colours asked 8, sample 500, seed 0, effort 1, space rgb, dither none, chunk 64"
    )
    assert sections[FRAMES[1]].endswith(", frame (from 0) 1")
    assert len(sections) == 5
    marks = [a.get("title") for t, a, _ in Page(text).tags if a.get("class") == "mark"]
    assert marks == [None, "dithered: blue-noise 1.5", "dithered: blue-noise 1.5"]
    _, *rows, _ = Summary(text).rows
    assert [row[0] for row in rows] == sorted(["dithered.png dithered", "plain.png", *FRAMES])
    overview = re.sub(r"<[^>]+>", "", text.split('<table class="summary">')[0])
    assert "5 images, 1 dithered." in overview
    assert "Settings differ between the images" in overview


def test_settings_of_any_name_are_shown_generically():
    settings = {
        "colors": 64,
        "sample": 5_000,
        "seed": 0,
        "effort": 1,
        "space": "rgb",
        "dither": "none",
        "psnr": "30-40",  # the PSNR target under its new name, and pngquant's quality scale
        "quality": 80,
        "count_pixels": 4_194_304,  # at the package's default: left out
        "tol": 0.001,
        "palette_order": "luma",  # a setting this version does not know
    }
    assert settings_line(settings) == (
        "colours asked 64, sample 5,000, seed 0, effort 1, space rgb, dither none, "
        "PSNR target dB 30-40, quality 80, tolerance 0.001, palette_order luma"
    )
    assert "quality" not in settings_line({**settings, "quality": None})  # off by default
    assert settings_text([]) == ""


def test_targets_are_shown_under_their_option_names_old_stores_included(tmp_path):
    from pipeline.store.read import image_settings

    iio.imwrite(tmp_path / "p.png", skimage.data.coffee()[:80, :120])
    store = str(tmp_path / "q.zarr")
    (result,) = compress([str(tmp_path / "p.png")], store, colors=64, quality="20-40")
    assert result.status == "done", result
    done = run("info", store, cwd=tmp_path)
    assert "quality 20-40" in done.stdout
    assert "pngquant_quality" not in done.stdout
    # a store written before --psnr recorded a PSNR target as "quality"
    old = image_settings({"fit_settings": {"quality": "30-40", "max_iter": 1}})
    assert (old["psnr"], old["quality"]) == ("30-40", None)
    assert "PSNR target dB 30-40" in settings_line(old)


def test_an_archival_images_settings_say_its_compression(tmp_path):
    iio.imwrite(tmp_path / "p.png", skimage.data.coffee()[:80, :120])
    store = str(tmp_path / "a.zarr")
    (result,) = compress([str(tmp_path / "p.png")], store, colors=16, compression="archival")
    assert result.status == "done", result
    done = run("info", store, "--json", cwd=tmp_path)
    assert json.loads(done.stdout)["images"]["p.png"]["settings"]["compression"] == "archival"
    assert "compression archival" in run("info", store, cwd=tmp_path).stdout
