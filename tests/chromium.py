"""Headless Chromium for the tests of pages: offline, a screenshot, the DOM after scripts ran.

Every request goes to a proxy that is not there, so a page that needs anything from the network
shows it; a page served on loopback (the scheduler's ``/pipeline``) is reached directly, and
only at the address given (``reach``). Where it works, Chromium also gets a network namespace
of its own (``unshare -rn``), unless it must reach such a page.
"""

import functools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
#: Chromium's window (and so the screenshots'), width by height.
WINDOW = (1200, 1600)

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} not installed (Debian's chromium package; .ci/run installs it as root)",
)


@functools.cache
def offline_prefix():
    """``unshare -rn`` (a network namespace of its own, with a loopback that is down) where it
    works here; else nothing (the proxy below still blocks every request)."""
    if shutil.which("unshare") is None:
        return ()
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=60)
    return ("unshare", "-rn") if probe.returncode == 0 else ()


def chromium(tmp_path, url, *options, reach=None):
    """Run headless Chromium on ``url`` with no network (twice at most, for a loaded machine).

    ``reach``: a ``host:port`` on loopback that Chromium may reach (nothing else).
    """
    options = [
        *(offline_prefix() if reach is None else ()),
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--allow-file-access-from-files",  # lets the checking page read the page it frames
        # every request goes to a proxy that is not there: nothing can be fetched from anywhere
        "--proxy-server=127.0.0.1:9",
        f"--proxy-bypass-list={reach or '<-loopback>'}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=30000",
        *options,
    ]
    for attempt in range(2):
        profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
        try:
            done = subprocess.run(
                [*options, f"--user-data-dir={profile}", url],
                capture_output=True,
                text=True,
                timeout=180,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            if attempt:
                raise
            continue
        if done.returncode == 0 or attempt:
            return done
    raise AssertionError("unreachable")


def screenshot(tmp_path, page, reach=None):
    """The pixels of ``page`` (a file, or a URL on ``reach``) as Chromium draws it."""
    url, stem = (page.as_uri(), page.stem) if isinstance(page, Path) else (page, "page")
    shot = tmp_path / f"{stem}.png"
    done = chromium(tmp_path, url, f"--screenshot={shot}", reach=reach)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.exists(), done.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB"))


def assert_not_blank(pixels, spread, colours):
    """Something is drawn: the pixels vary (standard deviation above ``spread``), in at least
    ``colours`` distinct colours. A page that failed to render is one colour."""
    assert pixels.shape == (WINDOW[1], WINDOW[0], 3)
    assert pixels.std() > spread, pixels.std()
    distinct = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert distinct >= colours, distinct
