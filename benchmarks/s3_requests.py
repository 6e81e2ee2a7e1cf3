"""HTTP requests to S3 made by the job's client, apart from its workers', on a real S3 server.

A moto S3 server runs on 127.0.0.1, with ``--count`` 64x64 PNG crops (``streaming.make_inputs``,
posterized so that ``-k 256`` stores them losslessly, quickly) uploaded straight to it under
``s3://bench/in/``. Two counting reverse proxies in this process stand in front of it: the job's
client (``python -m pipeline run s3://bench/in/ -o s3://bench/out.zarr --scheduler ADDRESS -k
256`` in a subprocess) reaches S3 through one (its ``AWS_ENDPOINT_URL``), the workers of a
``dask scheduler`` + 2 ``dask worker --preload pipeline.job.preload`` (subprocesses) through the
other. Each proxy forwards method, path and query, headers and body unchanged (a chunked request
body is de-chunked and sent on with its length) and counts requests by method and by kind: list
(a GET with ``list-type``, ``delimiter`` or ``prefix`` in its query, or on a bucket), get, head,
put, delete, post. The job runs twice: a first run, then a rerun that skips every image.

Reported for each run: the client's requests in all, per image and by kind; the workers'
requests in all and per image; wall seconds and exit status. Target: the client makes under
0.05 requests per image (it only lists the inputs and the store; workers open and read images).

Usage: python benchmarks/s3_requests.py [--count 1000] [--work DIR] [--log]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from streaming import make_inputs

from tests.conftest import start_moto
from tests.job.test_cluster import DaskCluster

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Seconds a job may take before the benchmark gives up.
TIMEOUT = 1800
#: Request headers not forwarded as they came: framing of the body the proxy has read itself.
HOP_BY_HOP = {"transfer-encoding", "trailer", "expect"}


class Cluster(DaskCluster):
    """``tests.job.test_cluster.DaskCluster`` with its scheduler on a free port, not dask's 8786."""

    def _start(self, command: list[str], env: dict[str, str] | None = None) -> None:
        super()._start([*command, "--port", "0"] if "scheduler" in command else command, env)


def kind(method: str, target: str) -> str:
    """What an S3 request does: list, get, head, put, delete or post."""
    split = urlsplit(target)
    query = parse_qs(split.query, keep_blank_values=True)
    on_bucket = "/" not in split.path.strip("/")
    if method == "GET" and ({"list-type", "delimiter", "prefix"} & query.keys() or on_bucket):
        return "list"
    return method.lower()


class Forward(BaseHTTPRequestHandler):
    """One client connection: each request sent on to the upstream server, its answer back."""

    protocol_version = "HTTP/1.1"
    timeout = 300
    server: CountingProxy
    upstream: http.client.HTTPConnection | None = None

    def body(self) -> tuple[bytes, list[tuple[str, str]], bool]:
        """The request's body, trailer fields of a chunked one, and whether it was chunked."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length", 0))), [], False
        parts = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        trailers = []
        while (line := self.rfile.readline().strip()) and b":" in line:
            name, value = line.decode("latin-1").split(":", 1)
            trailers.append((name.strip(), value.strip()))
        return b"".join(parts), trailers, True

    def forward(self) -> None:
        body, trailers, chunked = self.body()
        self.server.record(self.command, self.path, chunked)
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        if chunked:
            headers += [*trailers, ("Content-Length", str(len(body)))]
        response = self.send_upstream(headers, body)
        self.send_response_only(response.status, response.reason)
        if response.length is None:  # chunked or ended by closing: sent on with its length
            data = response.read()
            for k, v in response.getheaders():
                if k.lower() != "transfer-encoding":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        for k, v in response.getheaders():
            self.send_header(k, v)
        self.end_headers()
        while block := response.read(65536):
            self.wfile.write(block)

    def send_upstream(
        self, headers: list[tuple[str, str]], body: bytes
    ) -> http.client.HTTPResponse:
        """The upstream's response, on this connection's kept-alive upstream connection."""
        try:
            return self.request_upstream(headers, body)
        except ConnectionError:  # the upstream closed the kept-alive connection: open again
            self.close_upstream()
            return self.request_upstream(headers, body)

    def request_upstream(
        self, headers: list[tuple[str, str]], body: bytes
    ) -> http.client.HTTPResponse:
        if self.upstream is None:
            self.upstream = http.client.HTTPConnection(
                "127.0.0.1", self.server.upstream_port, timeout=self.timeout
            )
        self.upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            self.upstream.putheader(name, value)
        self.upstream.endheaders(body)
        return self.upstream.getresponse()

    def close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

    def finish(self) -> None:
        super().finish()
        self.close_upstream()

    def log_message(self, format: str, *args: object) -> None:
        pass


class CountingProxy(ThreadingHTTPServer):
    """A reverse proxy on a free port of 127.0.0.1 to ``upstream_port``, counting requests."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), Forward)
        self.upstream_port = upstream_port
        self.url = f"http://127.0.0.1:{self.server_port}"
        self._lock = threading.Lock()
        self.methods: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.chunked = 0
        self.log: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def record(self, method: str, target: str, chunked: bool) -> None:
        with self._lock:
            self.methods[method] += 1
            self.kinds[kind(method, target)] += 1
            self.chunked += chunked
            self.log.append(f"{method} {target}")

    def take(self) -> dict[str, object]:
        """The counts so far, which start again from zero."""
        with self._lock:
            counts = {
                "methods": self.methods,
                "kinds": self.kinds,
                "chunked": self.chunked,
                "log": self.log,
            }
            self.methods, self.kinds, self.chunked, self.log = Counter(), Counter(), 0, []
        return counts

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def upload(inputs: Path, endpoint: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(
        key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=endpoint,
    )
    fs.mkdir("bench")
    files = sorted(inputs.iterdir())
    fs.put([str(p) for p in files], [f"bench/in/{p.name}" for p in files])
    assert len(fs.ls("bench/in/")) == len(files)


def job(address: str, client: CountingProxy, workers: CountingProxy) -> dict[str, object]:
    """One run of the job, with the requests its client and the workers made."""
    client.take()
    workers.take()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "s3://bench/in/", "-o", "s3://bench/out.zarr",
         "--scheduler", address, "-k", "256"],
        env={**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": client.url},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    seconds = time.monotonic() - started
    summary = re.search(r"\d+ done, \d+ skipped, \d+ failed", done.stdout)
    return {
        "exit": done.returncode,
        "seconds": seconds,
        "result": summary[0] if summary else done.stderr.strip().splitlines()[-1],
        "client": client.take(),
        "workers": workers.take(),
    }


def by_kind(kinds: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="images (default: 1000)")
    parser.add_argument("--work", default=None, help="folder for generated inputs (kept)")
    parser.add_argument(
        "--log", action="store_true", help="also print every request of each side, in order"
    )
    args = parser.parse_args()
    folder = Path(args.work or tempfile.mkdtemp(prefix="pipeline-s3-requests-"))
    folder.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(folder, args.count, "lossless")
    with open(folder / "moto.log", "w") as log:
        moto, endpoint = start_moto(log)
    proxies: list[CountingProxy] = []
    cluster = None
    try:
        upload(inputs, endpoint)
        port = int(endpoint.rsplit(":", 1)[1])
        client, workers = proxies = [CountingProxy(port), CountingProxy(port)]
        worker_env = {**CREDENTIALS, "AWS_ENDPOINT_URL": workers.url}
        cluster = Cluster(folder, 2, worker_env=worker_env)
        runs = {label: job(cluster.address, client, workers) for label in ("first run", "rerun")}
    finally:
        if cluster is not None:
            cluster.close()
        for proxy in proxies:
            proxy.close()
        moto.terminate()
        moto.wait(timeout=30)
    n = args.count
    print(f"\n## {n:,} 64x64 PNGs on moto S3, -k 256 (lossless); dask scheduler + 2 workers x 1")
    print(
        "| run | exit | wall s | result | client requests | client / image | client by kind "
        "| workers' requests | workers / image | workers by kind |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, row in runs.items():
        mine, theirs = row["client"], row["workers"]
        total, worked = mine["kinds"].total(), theirs["kinds"].total()
        print(
            f"| {label} | {row['exit']} | {row['seconds']:.1f} | {row['result']} | {total:,} "
            f"| {total / n:.3f} | {by_kind(mine['kinds'])} | {worked:,} | {worked / n:.2f} "
            f"| {by_kind(theirs['kinds'])} |"
        )
    worst = max(row["client"]["kinds"].total() for row in runs.values()) / n
    print(f"\nclient target < 0.05 requests per image: {'met' if worst < 0.05 else 'NOT met'}")
    for label, row in runs.items():
        methods = {side: dict(row[side]["methods"]) for side in ("client", "workers")}
        chunked = {side: row[side]["chunked"] for side in ("client", "workers")}
        print(f"{label}: by method {methods}; chunked request bodies {chunked}")
    if args.log:
        for label, row in runs.items():
            for side in ("client", "workers"):
                print(f"\n{label}, requests of the {side} in order:")
                print("\n".join(row[side]["log"]))


if __name__ == "__main__":
    main()
