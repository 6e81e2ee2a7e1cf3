"""Shared fixtures.

Images
    ``photo`` (parametrized over real photos), ``china``, ``small_photo``: real RGB uint8 photos
    from scikit-learn and scikit-image, never downloaded.
Stores and files
    ``store``: a fresh store path under pytest's tmp_path; ``write_image``: writes an array as an
    image file in any imageio format.
Clusters and servers
    ``client``: a real two-process distributed LocalCluster on 127.0.0.1, shared by the session;
    ``s3``: a real S3 server (moto) on 127.0.0.1, reached through the environment;
    ``free_port()``: a free TCP port on 127.0.0.1.
Configuration
    an autouse fixture restores dask's configuration after each test.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pytest
from numpy.typing import NDArray

SKIMAGE_PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png"]


def sklearn_photo(name: str) -> str:
    import sklearn.datasets

    return str(Path(sklearn.datasets.__file__).parent / "images" / name)


def skimage_photo(name: str) -> str:
    import skimage

    return str(Path(skimage.__file__).parent / "data" / name)


def read(path: str) -> NDArray[np.uint8]:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


@pytest.fixture(autouse=True)
def _reset_dask_config() -> Iterator[None]:
    import distributed  # noqa: F401  (registers its defaults before the snapshot)

    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


@pytest.fixture(scope="session")
def china() -> NDArray[np.uint8]:
    return read(sklearn_photo("china.jpg"))


@pytest.fixture(scope="session")
def small_photo(china: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A 120 x 170 crop of china.jpg: real colours, fast to fit."""
    return np.ascontiguousarray(china[150:270, 200:370])


@pytest.fixture(
    scope="session",
    params=["china.jpg", "flower.jpg", *SKIMAGE_PHOTOS],
    ids=lambda n: n.split(".")[0],
)
def photo(request: pytest.FixtureRequest) -> NDArray[np.uint8]:
    name = request.param
    return read(sklearn_photo(name) if name in ("china.jpg", "flower.jpg") else skimage_photo(name))


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "out.zarr")


@pytest.fixture
def write_image(tmp_path: Path) -> Callable[..., str]:
    import imageio.v3 as iio

    def write(name: str, array: NDArray[np.generic], **kwargs: object) -> str:
        path = tmp_path / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        iio.imwrite(path, array, **kwargs)
        return str(path)

    return write


# module scope: the client is dask's default while it lives, so any later test's compute would
# run on its worker processes (where a monkeypatch of the test's own process does not reach)
@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    from pipeline.job.cluster import connect

    with connect(None, workers=2, dashboard_address="127.0.0.1:0") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SECRET = "pipeline-test-secret-key"


def start_moto(log: Any) -> tuple[subprocess.Popen[bytes], str]:
    """A moto S3 server on a free port of 127.0.0.1 (output to ``log``), and its URL once it
    answers (also used by benchmarks/s3_requests.py)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            return server, endpoint
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1; yields the environment that reaches it."""
    server, endpoint = start_moto(subprocess.DEVNULL)
    env = {
        "AWS_ACCESS_KEY_ID": "pipeline-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches filesystems: none for old servers
    yield env
    server.terminate()
    server.wait(timeout=30)


def store_files(root: Path, metadata: bool = False) -> dict[str, object]:
    """Every chunk file of a store by path, the job's bookkeeping (``.pipeline``) left out.

    With ``metadata``, also every ``zarr.json`` document, without the attributes that name
    the job that wrote it (its id, when it ended).
    """
    files: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root)
        if path.is_dir() or key.parts[0] == ".pipeline":
            continue
        if path.name != "zarr.json":
            files[str(key)] = path.read_bytes()
        elif metadata:
            document = json.loads(path.read_text())
            for name in ("run", "completed"):
                document.get("attributes", {}).pop(name, None)
            files[str(key)] = document
    return files
