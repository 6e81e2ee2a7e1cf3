"""The image deploy/Dockerfile builds, built with podman and run.

No registry is needed: the Dockerfile's base (``python:3.11-slim``) is stood in for by a Debian
bookworm made with mmdebstrap from the machine's own apt mirror (Python 3.11 too; ``python`` and
``pip`` on PATH; pip allowed to install system-wide as in the python image), imported into a
private podman storage under the Dockerfile's FROM name, so the Dockerfile builds unchanged. The
made base is cached as a tarball (``~/.cache/pipeline-tests/``); the storage, the image and
every container are the session's own and go when it ends.

The built image then runs

- the sample job by its default command, from a mounted job file, into a mounted folder;
- the DaskJob of deploy/kubernetes/daskjob.yaml as the Dask operator would run it, without
  Kubernetes: its scheduler, workers, init container and job as containers of one podman pod
  (they reach each other on the pod's localhost; the scheduler's Service name is mapped to it),
  with the commands, arguments, environment, job-file volume, users, capabilities and limits
  read from the manifest, and the environment the operator adds. The store is a mounted folder
  in place of S3 (no S3 here), so the manifest's S3 Secret is not used. The scheduler's
  ``/metrics`` is scraped while the cluster runs.

Both check the store on the host with ``python -m pipeline verify``. Skipped, saying why, where
podman or mmdebstrap is missing or a container cannot run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.inputs.discover import sample_images
from tests.conftest import free_port
from tests.test_deploy import (
    DASKJOB_FILE,
    DEPLOY,
    DOCKERFILE,
    ROOT,
    SERVICE_SUFFIX,
    container,
    dockerfile_instructions,
    load,
    of_kind,
    pod_specs,
)

pytestmark = pytest.mark.slow

#: The made stand-in for the Dockerfile's base: what the python image has that the Dockerfile
#: uses (python, pip, useradd), from Debian bookworm, whose Python is 3.11 as the image's.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("ca-certificates", "passwd", "python3", "python3-pip", "python-is-python3")
BASE_HOOKS = (
    # pip installs system-wide in the python image; Debian's refuses (PEP 668) unless told
    'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
)
#: The machine's mirror may be a dated snapshot whose Release files are past their Valid-Until.
BASE_APT_OPTIONS = ('Acquire::Check-Valid-Until "false"',)
#: Where Debian's pip (and OpenSSL) find the trusted CAs.
DEBIAN_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pipeline-tests"
IMAGE = "localhost/pipeline:test"
#: Where the containers see the inputs and the output folder (the store's stand-in for S3).
INPUTS, OUTPUTS = "/data/inputs", "/data/out"
STORE = f"{OUTPUTS}/photos.zarr"
#: What the Dask operator adds (dask-kubernetes' operator controller).
NAMESPACE = "default"
BUILD_TIMEOUT = 20 * 60
JOB_TIMEOUT = 10 * 60


# --- podman, privately -----------------------------------------------------------------------


@dataclass
class Podman:
    """Runs podman on a storage, configuration and state of its own (``env``)."""

    env: dict[str, str]
    home: Path

    def __call__(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"podman {' '.join(args)}: exit {done.returncode}\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return done


def which(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def private_podman(home: Path) -> Podman:
    """podman with everything under ``home``: storage, run state, networks, events.

    runc where installed: crun refuses hosts whose cgroups are mixed v1 and v2 ("hybrid"), as
    some CI machines' are. The default rlimits of root's containers are above what such a
    sandboxed host lets a process set, so they are given, below this process's own.
    """
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 8192)
    runtime = 'runtime = "runc"\n' if which("runc") else ""
    conf = home / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=8192:8192"]\n'
        "[network]\n"
        f'network_config_dir = "{home / "networks"}"\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'  # no systemd needed
        'events_logger = "file"\n'
        f'tmp_dir = "{home / "tmp"}"\n' + runtime
    )
    storage = home / "storage.conf"
    storage.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{home / "storage"}"\n'
        f'runroot = "{home / "run"}"\n'
    )
    # short names are Docker Hub's, as for docker; nothing is pulled (--pull=never)
    registries = home / "registries.conf"
    registries.write_text('unqualified-search-registries = ["docker.io"]\n')
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(conf),
        "CONTAINERS_STORAGE_CONF": str(storage),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
    }
    return Podman(env, home)


# --- the base image --------------------------------------------------------------------------


def debian_sources() -> list[Path]:
    """The machine's apt source files for the base's suite (one-line or deb822 format)."""
    apt = Path("/etc/apt")
    found = []
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        text = path.read_text()
        one_line = re.search(rf"(?m)^deb\s+(\[[^]]*\]\s+)?\S+\s+{BASE_SUITE}\s", text)
        deb822 = re.search(rf"(?m)^Suites:.*\b{BASE_SUITE}(\s|$)", text)
        if one_line or deb822:
            found.append(path)
    return found


def mmdebstrap_command(target: Path) -> list[str]:
    mirrors = [str(p) for p in debian_sources()]  # none: mmdebstrap's default, deb.debian.org
    return [
        "mmdebstrap",
        "--variant=apt",
        f"--include={','.join(BASE_PACKAGES)}",
        *(f"--aptopt={option}" for option in BASE_APT_OPTIONS),
        *(f"--customize-hook={hook}" for hook in BASE_HOOKS),
        BASE_SUITE,
        str(target),
        *mirrors,
    ]


def base_tarball() -> Path:
    """The base as a tarball, made once and cached (named after what makes it)."""
    recipe = mmdebstrap_command(Path("TARGET"))
    recipe += [Path(p).read_text() for p in recipe if p.startswith("/etc/apt/")]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    cached = CACHE / f"base-{BASE_SUITE}-{key}.tar"
    if cached.exists():
        return cached
    if not which("mmdebstrap"):
        pytest.skip("mmdebstrap not installed (Debian: mmdebstrap): no base image to build on")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f".{cached.name}.{os.getpid()}.tar"
    made = subprocess.run(
        mmdebstrap_command(partial), capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )
    if made.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.skip(f"mmdebstrap could not make the base image: {made.stderr[-2000:]}")
    partial.replace(cached)
    return cached


def docker_reference(name: str) -> str:
    """An image name as podman stores it: ``python:3.11-slim`` is Docker Hub's library one."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


# --- the image -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """A private podman holding the image built from deploy/Dockerfile (tagged :data:`IMAGE`)."""
    if not which("podman"):
        pytest.skip("podman not installed (Debian: podman): the image is not built")
    tarball = base_tarball()
    home = Path(tempfile.mkdtemp(prefix="pipeline-podman-"))
    pm = private_podman(home)
    try:
        (base,) = dockerfile_instructions("FROM")
        pm("import", str(tarball), docker_reference(base))
        trial = pm("run", "--rm", "--network", "none", base, "true", check=False)
        if trial.returncode != 0:
            hint = "" if which("runc") else " (crun fails on hybrid cgroups: install runc)"
            pytest.skip(f"podman cannot run a container here{hint}: {trial.stderr.strip()}")
        # The machine's CA bundle, mounted in the RUN steps only: pip trusts what the machine
        # trusts (a proxy's own CA, where one stands between the machine and the index).
        cafile = Path(os.environ.get("SSL_CERT_FILE") or DEBIAN_CA_BUNDLE)
        trust = [f"--volume={cafile}:{DEBIAN_CA_BUNDLE}:ro"] if cafile.is_file() else []
        # podman does not read <Dockerfile>.dockerignore by itself (BuildKit does): name it.
        pm(
            "build",
            *trust,
            "--file", str(DOCKERFILE),
            "--ignorefile", str(DEPLOY / "Dockerfile.dockerignore"),
            "--isolation", "chroot",  # RUN steps need no OCI runtime
            "--network", "host",  # pip reaches the package index
            "--pull=never",
            "--tag", IMAGE,
            str(ROOT),
            timeout=BUILD_TIMEOUT,
        )  # fmt: skip
        yield pm
    finally:
        pm("pod", "rm", "--all", "--force", check=False)
        pm("rm", "--all", "--force", check=False)
        # also unmounts the storage; every path it removes is under `home`
        pm("system", "reset", "--force", check=False, timeout=600)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """Inputs (the bundled sample photos), a job-file folder, and an output folder."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for sample in sample_images():
        shutil.copy(sample, inputs)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the containers run as the image's user
    job = tmp_path / "job"
    job.mkdir()
    return {"inputs": inputs, "out": out, "job": job}


def daskjob() -> dict[str, Any]:
    (doc,) = of_kind(load(DASKJOB_FILE), "DaskJob")
    return doc


def local_job_file(text: str) -> str:
    """A manifest's job file with the inputs and the store in the mounted folders."""
    text, found = re.subn(r"(?m)^inputs = .*$", f"inputs = [{json.dumps(INPUTS)}]", text)
    assert found == 1
    text, found = re.subn(r"(?m)^out = .*$", f"out = {json.dumps(STORE)}", text)
    assert found == 1
    values = tomllib.loads(text)
    assert (values["inputs"], values["out"]) == ([INPUTS], STORE)
    return text


def config_map_files(name: str) -> dict[str, str]:
    (config_map,) = [
        cm for cm in of_kind(load(DASKJOB_FILE), "ConfigMap") if cm["metadata"]["name"] == name
    ]
    return {k: local_job_file(v) if k == "job.toml" else v for k, v in config_map["data"].items()}


def verify_on_host(store: Path) -> str:
    checked = subprocess.run(
        [sys.executable, "-m", "pipeline", "verify", str(store)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return checked.stdout


def image_user() -> int:
    return int(dockerfile_instructions("USER")[-1].split(":")[0])


def test_image_runs_the_sample_job_from_a_mounted_job_file(
    podman: Podman, folders: dict[str, Path]
) -> None:
    """The image's default command, with the DaskJob's job file (folders for S3) mounted where
    the manifest mounts it: a local cluster in the container compresses the sample photos."""
    job = container(pod_specs(daskjob())["job"], "job")
    (mount,) = job["volumeMounts"]
    for key, text in config_map_files("pipeline-job").items():
        (folders["job"] / key).write_text(text)
    ran = podman(
        "run", "--rm", "--network", "none",
        "--volume", f"{folders['job']}:{mount['mountPath']}:ro",
        "--volume", f"{folders['inputs']}:{INPUTS}:ro",
        "--volume", f"{folders['out']}:{OUTPUTS}",
        IMAGE,
        timeout=JOB_TIMEOUT,
    )  # fmt: skip
    count = len(sample_images())
    assert f"{count} done, 0 skipped, 0 failed" in ran.stdout + ran.stderr
    store = folders["out"] / Path(STORE).name
    assert store.stat().st_uid == image_user()  # written as the image's user, not root
    assert f"{count} images, {count} whole, 0 damaged" in verify_on_host(store)


# --- the DaskJob as a pod --------------------------------------------------------------------

QUANTITY = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
UNITS = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity (``2Gi``, ``500m``, ``1``) as a number."""
    match = QUANTITY.match(str(text))
    assert match, text
    return float(match[1]) * UNITS[match[2]]


def expand(word: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references in a command or its arguments (``$$`` escapes)."""
    return re.sub(
        r"\$\$|\$\((\w+)\)",
        lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]),
        word,
    )


def container_env(c: dict[str, Any], added: dict[str, str]) -> dict[str, str]:
    """A container's environment: its ``env`` (values, its own resource limits) plus what the
    operator adds. ``envFrom`` (the S3 Secret) is left out: there is no S3 here."""
    env: dict[str, str] = {}
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        field = item["valueFrom"]["resourceFieldRef"]  # anything else: not mapped here, fail
        assert field.get("containerName", c["name"]) == c["name"]
        kind, _, name = field["resource"].partition(".")
        divisor = quantity(field.get("divisor", 1))
        env[item["name"]] = str(int(-(-quantity(c["resources"][kind][name]) // divisor)))
    return env | added


def run_options(
    pod_spec: dict[str, Any], c: dict[str, Any], env: dict[str, str], volumes: list[str]
) -> list[str]:
    """``podman run`` options for a container of a pod spec, and its image and command."""
    context = pod_spec.get("securityContext", {}) | c.get("securityContext", {})
    user = context.get("runAsUser", image_user())
    if context.get("runAsNonRoot"):
        assert user != 0
    options = ["--user", f"{user}:{context.get('runAsGroup', user)}"]
    capabilities = context.get("capabilities", {})
    options += [f"--cap-drop={name.lower()}" for name in capabilities.get("drop", [])]
    options += [f"--cap-add={name.lower()}" for name in capabilities.get("add", [])]
    if context.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    limits = c.get("resources", {}).get("limits", {})
    if "memory" in limits:
        options += ["--memory", str(int(quantity(limits["memory"])))]
    if "cpu" in limits:
        options += ["--cpus", str(quantity(limits["cpu"]))]
    for name, value in env.items():
        options += ["--env", f"{name}={value}"]
    options += [f"--volume={v}" for v in volumes]
    if "command" in c:  # Kubernetes' command is the entrypoint; without args, no image CMD
        options += ["--entrypoint", json.dumps([expand(w, env) for w in c["command"]])]
    # the one image the manifests name (tests/test_deploy.py checks it) is the one built here
    return [*options, IMAGE, *(expand(w, env) for w in c.get("args", []))]


def config_map_volumes(pod_spec: dict[str, Any], c: dict[str, Any], folder: Path) -> list[str]:
    """The container's volume mounts: each ConfigMap's files, written to a folder."""
    mounts = []
    for mount in c.get("volumeMounts", []):
        (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
        files = config_map_files(volume["configMap"]["name"])  # no other kind used: fail
        where = folder / volume["name"]
        where.mkdir(exist_ok=True)
        for key, text in files.items():
            (where / key).write_text(text)
        mode = "ro" if mount.get("readOnly") else "rw"
        mounts.append(f"{where}:{mount['mountPath']}:{mode}")
    return mounts


def scrape(url: str) -> dict[str, list[Any]]:
    """Prometheus text from ``url``: samples by metric family name."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def running(podman: Podman, name: str) -> bool:
    state = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
    return state.stdout.strip() == "true"


def wait_for(podman: Podman, what: str, names: list[str], check: Any, timeout: float) -> Any:
    """Poll ``check()`` until it returns something true; fail, with the containers' logs,
    if one of ``names`` stops or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (OSError, urllib.error.URLError):
            found = None
        if found:
            return found
        stopped = [n for n in names if not running(podman, n)]
        if stopped or time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {n}\n{podman('logs', n, check=False).stderr[-3000:]}" for n in names
            )
            why = f"stopped: {', '.join(stopped)}" if stopped else "timed out"
            pytest.fail(f"{what}: {why}\n{logs}")
        time.sleep(1)


def test_daskjob_pods_run_the_job_against_their_scheduler_and_workers(
    podman: Podman, folders: dict[str, Path], tmp_path: Path
) -> None:
    """The DaskJob's scheduler, workers and job as containers of one pod, as the manifest
    describes them: the job completes, the store verifies, and the scheduler's /metrics serves
    Dask's metrics and the job's own while the cluster runs."""
    if not which("slirp4netns"):
        pytest.skip("slirp4netns not installed (Debian: slirp4netns): no network for the pod")
    doc = daskjob()
    name = doc["metadata"]["name"]
    specs = pod_specs(doc)
    cluster = doc["spec"]["cluster"]["spec"]
    replicas = cluster["worker"]["replicas"]
    # The scheduler's Service, by its short name and as the operator gives it, is the pod's
    # localhost; its dashboard port is published on the host's 127.0.0.1.
    service = name + SERVICE_SUFFIX
    address = f"tcp://{service}.{NAMESPACE}.svc.cluster.local:8786"
    scheduler = container(specs["scheduler"], "scheduler")
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    dashboard = free_port()
    pod = f"{name}-{uuid.uuid4().hex[:8]}"
    podman(
        "pod", "create", "--name", pod,
        "--network", "slirp4netns",  # a network namespace of its own, no host network changes
        "--add-host", f"{service}:127.0.0.1",
        "--add-host", f"{service}.{NAMESPACE}.svc.cluster.local:127.0.0.1",
        "--publish", f"127.0.0.1:{dashboard}:{ports['http-dashboard']}",
    )  # fmt: skip
    data = [f"{folders['inputs']}:{INPUTS}:ro", f"{folders['out']}:{OUTPUTS}:rw"]
    url = f"http://127.0.0.1:{dashboard}"
    try:
        podman(
            "run", "--detach", "--pod", pod, "--name", f"{name}-scheduler",
            *run_options(specs["scheduler"], scheduler, container_env(scheduler, {}), []),
        )  # fmt: skip
        probe = scheduler["readinessProbe"]["httpGet"]
        assert ports[probe["port"]] == ports["http-dashboard"]
        wait_for(
            podman,
            "scheduler ready",
            [f"{name}-scheduler"],
            lambda: answers(url + probe["path"]),
            timeout=120,
        )

        worker = container(specs["worker"], "worker")
        workers = []
        for _ in range(replicas):
            worker_name = f"{name}-default-worker-{uuid.uuid4().hex[:10]}"
            added = {"DASK_WORKER_NAME": worker_name, "DASK_SCHEDULER_ADDRESS": address}
            podman(
                "run", "--detach", "--pod", pod, "--name", worker_name,
                *run_options(specs["worker"], worker, container_env(worker, added), data),
            )  # fmt: skip
            workers.append(worker_name)

        # the job pod: its init container waits for the scheduler, then the job runs
        (wait,) = specs["job"]["initContainers"]
        podman(
            "run", "--rm", "--pod", pod, "--name", f"{name}-{wait['name']}",
            *run_options(specs["job"], wait, container_env(wait, {}), []),
        )  # fmt: skip

        # every worker joined: Dask's metrics on the scheduler's /metrics (prometheus-client)
        def joined() -> dict[str, list[Any]] | None:
            metrics = scrape(url + "/metrics")
            assert "dask_scheduler_workers" in metrics, f"no Dask metrics: {sorted(metrics)}"
            workers_now = sum(s.value for s in metrics["dask_scheduler_workers"])
            return metrics if workers_now == replicas else None

        metrics = wait_for(
            podman, f"{replicas} workers joined", [f"{name}-scheduler", *workers], joined, 300
        )
        assert "dask_scheduler_tasks" in metrics

        job = container(specs["job"], "job")
        job_volumes = config_map_volumes(specs["job"], job, tmp_path) + data
        job_env = container_env(job, {"DASK_SCHEDULER_ADDRESS": address})
        ran = podman(
            "run", "--rm", "--pod", pod, "--name", f"{name}-runner",
            *run_options(specs["job"], job, job_env, job_volumes),
            check=False,
            timeout=JOB_TIMEOUT,
        )  # fmt: skip
        count = len(sample_images())
        assert ran.returncode == 0, ran.stdout + ran.stderr  # the DaskJob is Successful
        assert f"{count} done, 0 skipped, 0 failed" in ran.stdout + ran.stderr

        # the cluster still runs (the operator deletes it after the job): the job's metrics
        metrics = scrape(url + "/metrics")
        assert sum(s.value for s in metrics["dask_scheduler_workers"]) == replicas
        images = {
            s.labels["status"]: s.value
            for s in metrics["pipeline_images"]
            if s.labels["store"] == STORE and s.name == "pipeline_images_total"
        }
        assert images == {"done": count, "skipped": 0, "failed": 0}
        for worker_name in workers:
            assert running(podman, worker_name)
    finally:
        podman("pod", "rm", "--force", "--time", "10", pod, check=False, timeout=120)
    store = folders["out"] / Path(STORE).name
    assert f"{count} images, {count} whole, 0 damaged" in verify_on_host(store)
