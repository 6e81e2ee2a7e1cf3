"""The deployment files in deploy/: image, Kubernetes manifests, Slurm launcher and script.

Kubernetes documents are checked against the API's own schemas: core kinds with
kubernetes-validate (the Kubernetes OpenAPI schemas it ships, strict: unknown fields fail, as
they do for ``kubectl apply`` since server-side field validation became the default), DaskJob
documents against the ``openAPIV3Schema`` of the Dask operator's CRD (dask-kubernetes' rendered
Helm CRD, vendored in tests/data), made strict the same way. The pod specs the Dask operator
turns into Pods are also checked as core Pods. Commands are parsed by the real command-line
parsers (distributed's ``dask worker`` / ``dask scheduler``, bash), the Slurm job script is
rendered by dask-jobqueue, and the init container's wait runs against a real scheduler.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import dask.config
import jsonschema
import kubernetes_validate
import pytest
import yaml
from distributed.cli.dask_scheduler import main as scheduler_cli
from distributed.cli.dask_worker import main as worker_cli
from packaging.specifiers import SpecifierSet

from pipeline.cli import build_parser
from pipeline.job.cluster import WORKER_MALLOC
from pipeline.settings import JOB_KEYS, Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASKJOB_FILE = DEPLOY / "kubernetes" / "daskjob.yaml"
CRONJOB_FILE = DEPLOY / "kubernetes" / "cronjob.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
LAUNCHER = DEPLOY / "slurm" / "launch.py"
SBATCH = DEPLOY / "slurm" / "pipeline.sbatch"

YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
K8S_FILES = [path for path in YAML_FILES if path.parent == DEPLOY / "kubernetes"]
#: Oldest Kubernetes minor version the manifests must work on, and the newest the schemas know.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
DASK_GROUP = "kubernetes.dask.org"
#: Stands for the run's name in the CronJob's DaskJob template (its pod substitutes it).
PLACEHOLDER = "DASKJOB_NAME"
#: The Dask operator's names for a DaskJob's parts.
SERVICE_SUFFIX, RUNNER_SUFFIX = "-scheduler", "-runner"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035 label: Service names
MALLOC_VARIABLE = "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON"


# --- loading -------------------------------------------------------------------------------


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def cron_run_name() -> str:
    """The longest name a CronJob's Job gets: <cronjob>-<scheduled time in minutes, 8 digits>."""
    (cronjob,) = of_kind(load(CRONJOB_FILE), "CronJob")
    return f"{cronjob['metadata']['name']}-29999999"


def templates(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Manifests held in ConfigMaps (keys ending .yaml), rendered as the CronJob's pod does."""
    for config_map in of_kind(load(path), "ConfigMap"):
        for key, text in config_map.get("data", {}).items():
            if key.endswith((".yaml", ".yml")):
                rendered = text.replace(PLACEHOLDER, cron_run_name())
                for doc in yaml.safe_load_all(rendered):
                    yield f"{config_map['metadata']['name']}/{key}", doc


def daskjobs() -> list[tuple[str, dict[str, Any]]]:
    """Every DaskJob, named ``file`` or ``file:configmap/key`` for a template."""
    found = [(DASKJOB_FILE.name, doc) for doc in of_kind(load(DASKJOB_FILE), "DaskJob")]
    found += [
        (f"{CRONJOB_FILE.name}:{where}", doc)
        for where, doc in templates(CRONJOB_FILE)
        if doc["kind"] == "DaskJob"
    ]
    return found


def source(where: str) -> Path:
    return DEPLOY / "kubernetes" / where.split(":")[0]


def core_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in K8S_FILES
        for doc in load(path)
        if not doc["apiVersion"].startswith(DASK_GROUP + "/")
    ]


def pod_specs(daskjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = daskjob["spec"]
    return {
        "job": spec["job"]["spec"],
        "worker": spec["cluster"]["spec"]["worker"]["spec"],
        "scheduler": spec["cluster"]["spec"]["scheduler"]["spec"],
    }


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod_spec["containers"] if c["name"] == name]
    return found


def argv(c: dict[str, Any]) -> list[str]:
    """A container's command line, with the image's entrypoint when it has no command."""
    entrypoint = dockerfile_json("ENTRYPOINT")
    return [*c.get("command", entrypoint), *c.get("args", [])]


def cron_script() -> str:
    (cronjob,) = of_kind(load(CRONJOB_FILE), "CronJob")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:2] == ["bash", "-c"]
    return command[2]


def job_files() -> list[tuple[str, str]]:
    return [
        (f"{path.name}:{cm['metadata']['name']}", cm["data"]["job.toml"])
        for path in K8S_FILES
        for cm in of_kind(load(path), "ConfigMap")
        if "job.toml" in cm.get("data", {})
    ]


def load_launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pipeline_slurm_launch", LAUNCHER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pre_spawn_environ(name: str, value: str) -> dict[str, str]:
    """What the nanny's pre-spawn environment becomes with this environment variable set."""
    config = dask.config.collect_env({name: value})
    return {k: str(v) for k, v in config["distributed"]["nanny"]["pre_spawn_environ"].items()}


def worker_malloc() -> dict[str, str]:
    return dict(WORKER_MALLOC)


# --- the DaskJob CRD -----------------------------------------------------------------------


@cache
def daskjob_crd() -> dict[str, Any]:
    """The DaskJob CRD of the Dask operator (dask-kubernetes 2026.3.0's rendered Helm CRD)."""
    return yaml.safe_load((Path(__file__).parent / "data" / "daskjob-crd.yaml").read_text())


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 (structural) schema as JSON Schema that rejects unknown fields.

    The API server prunes or, with field validation Strict (kubectl's default), rejects fields a
    structural schema does not declare; ``nullable`` allows null.
    """
    out = dict(schema)
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict(s) for s in out[key]]
    return out


@cache
def daskjob_validator() -> jsonschema.Draft7Validator:
    crd = daskjob_crd()
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    # apiVersion, kind and metadata are the API server's, not the CRD's (metadata: see below)
    schema["properties"] |= {
        "apiVersion": {"const": f"{crd['spec']['group']}/v1"},
        "kind": {"const": crd["spec"]["names"]["kind"]},
        "metadata": {"type": "object"},
    }
    schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def check_daskjob(doc: dict[str, Any]) -> None:
    errors = sorted(daskjob_validator().iter_errors(doc), key=lambda e: str(list(e.absolute_path)))
    assert not errors, "\n".join(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


# --- every YAML file -----------------------------------------------------------------------


def test_deploy_has_the_expected_files() -> None:
    for path in (DOCKERFILE, DASKJOB_FILE, CRONJOB_FILE, LAUNCHER, SBATCH, DEPLOY / "README.md"):
        assert path.is_file(), path
    assert {p.name for p in K8S_FILES} == {"daskjob.yaml", "cronjob.yaml"}


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert load(path)


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_kubernetes_yaml_holds_kubernetes_objects(path: Path) -> None:
    for doc in load(path):
        assert isinstance(doc, dict)
        assert doc.keys() >= {"apiVersion", "kind", "metadata"}
        assert doc["metadata"].get("name") or doc["metadata"].get("generateName")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("where", "doc"), core_documents(), ids=[w for w, _ in core_documents()])
def test_core_objects_validate_against_kubernetes_schemas(
    where: str, doc: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validation_rejects_unknown_fields() -> None:
    (cronjob,) = of_kind(load(CRONJOB_FILE), "CronJob")
    typo = copy.deepcopy(cronjob)
    typo["spec"]["concurrencypolicy"] = typo["spec"].pop("concurrencyPolicy")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSIONS[0], strict=True)


def test_no_secret_is_defined_in_the_manifests() -> None:
    credential = re.compile(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)")
    for path in K8S_FILES:
        docs = load(path) + [doc for _, doc in templates(path)]
        assert not of_kind(docs, "Secret"), path
        for doc in docs:
            for name, _value in _env_values(doc):
                assert not credential.fullmatch(name), f"{path}: {name} given in clear text"


def _env_values(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        if "env" in node and isinstance(node["env"], list):
            for item in node["env"]:
                if "value" in item:
                    yield item["name"], item["value"]
        for value in node.values():
            yield from _env_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _env_values(value)


# --- DaskJob -------------------------------------------------------------------------------


def test_the_crd_is_the_daskjob_crd() -> None:
    crd = daskjob_crd()
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["group"] == DASK_GROUP
    assert crd["spec"]["names"]["kind"] == "DaskJob"
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1"]
    assert "$ref" not in json.dumps(crd)  # rendered: the pod spec schema is inline


def test_every_daskjob_is_found() -> None:
    assert [where for where, _ in daskjobs()] == [
        "daskjob.yaml",
        "cronjob.yaml:pipeline-cron-template/daskjob.yaml",
    ]


@pytest.mark.parametrize(("where", "doc"), daskjobs(), ids=[w for w, _ in daskjobs()])
def test_daskjob_validates_against_the_operator_crd(where: str, doc: dict[str, Any]) -> None:
    check_daskjob(doc)
    # metadata: as the API server checks any object's
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
    kubernetes_validate.validate(config_map, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"]["cluster"]["spec"]["worker"].update(replica=2),  # typo
        lambda d: container(pod_specs(d)["worker"], "worker")["resources"]["limits"].update(
            cpu=1  # the CRD's quantities are strings
        ),
        lambda d: d["spec"].pop("job"),
        lambda d: d["spec"]["cluster"]["spec"]["scheduler"]["service"]["ports"][0].update(
            port="8786"
        ),
    ],
    ids=["unknown-field", "integer-quantity", "missing-job", "string-port"],
)
def test_crd_validation_rejects_broken_daskjobs(mutate: Any) -> None:
    (doc,) = of_kind(load(DASKJOB_FILE), "DaskJob")
    broken = copy.deepcopy(doc)
    mutate(broken)
    with pytest.raises(AssertionError):
        check_daskjob(broken)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("where", "doc"), daskjobs(), ids=[w for w, _ in daskjobs()])
def test_daskjob_pod_specs_are_valid_pods(where: str, doc: dict[str, Any], version: str) -> None:
    """The operator creates Pods from these specs: they must pass the core Pod schema too."""
    for part, spec in pod_specs(doc).items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": part}, "spec": spec}
        kubernetes_validate.validate(pod, version, strict=True)


@pytest.mark.parametrize(("where", "doc"), daskjobs(), ids=[w for w, _ in daskjobs()])
def test_daskjob_names_and_wiring(where: str, doc: dict[str, Any]) -> None:
    name = doc["metadata"]["name"]
    service_name = name + SERVICE_SUFFIX
    assert DNS_LABEL.match(service_name), service_name
    assert len(service_name) <= 63, service_name
    assert len(name + RUNNER_SUFFIX) <= 63
    cluster = doc["spec"]["cluster"]["spec"]
    service = cluster["scheduler"]["service"]
    # the operator labels the scheduler pod with the cluster's name, which is the DaskJob's
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    ports = {p["name"]: p for p in service["ports"]}
    assert ports["tcp-comm"]["port"] == 8786
    assert ports["http-dashboard"]["port"] == 8787
    scheduler = container(pod_specs(doc)["scheduler"], "scheduler")
    named = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    for port in ports.values():
        assert port["targetPort"] in named
    assert named == {"tcp-comm": 8786, "http-dashboard": 8787}

    job = pod_specs(doc)["job"]
    # a failed pipeline fails the DaskJob instead of restarting forever
    assert job["restartPolicy"] == "Never"
    (wait,) = job["initContainers"]
    assert wait["command"][3] == f"tcp://{service_name}:8786"


@pytest.mark.parametrize(("where", "doc"), daskjobs(), ids=[w for w, _ in daskjobs()])
def test_daskjob_pods_tell_prometheus_where_their_metrics_are(where: str, doc: dict[str, Any]):
    cluster = doc["spec"]["cluster"]["spec"]
    specs = pod_specs(doc)
    for part in ("scheduler", "worker"):
        annotations = cluster[part]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        ports = {p["name"]: p["containerPort"] for p in container(specs[part], part)["ports"]}
        assert int(annotations["prometheus.io/port"]) == ports["http-dashboard"]


@pytest.mark.parametrize(("where", "doc"), daskjobs(), ids=[w for w, _ in daskjobs()])
def test_daskjob_commands_parse(where: str, doc: dict[str, Any]) -> None:
    specs = pod_specs(doc)
    worker = container(specs["worker"], "worker")
    command = argv(worker)
    assert command[:2] == ["dask", "worker"]
    params = worker_cli.make_context("dask worker", command[2:]).params
    assert params["preload"] == ("pipeline.job.preload",)
    assert params["nthreads"] == 1
    assert params["name"] == "$(DASK_WORKER_NAME)"
    assert params["dashboard_address"] == "8788"
    # --memory-limit: the container's own memory limit, through the downward API
    variable = re.fullmatch(r"\$\((\w+)\)", params["memory_limit"])
    assert variable
    (env,) = [e for e in worker["env"] if e["name"] == variable[1]]
    assert env["valueFrom"]["resourceFieldRef"] == {
        "containerName": "worker",
        "resource": "limits.memory",
    }
    assert worker["resources"]["requests"]["memory"] == worker["resources"]["limits"]["memory"]

    command = argv(container(specs["scheduler"], "scheduler"))
    assert command[:2] == ["dask", "scheduler"]
    scheduled = scheduler_cli.make_context("dask scheduler", command[2:]).params
    assert scheduled["preload"] == ("pipeline.job.preload",)  # the /pipeline page from the start

    job = container(specs["job"], "job")
    assert argv(job)[:3] == ["python", "-m", "pipeline"]
    run = argv(job)[3:]
    assert run[0] == "run"
    assert "--scheduler" not in run
    try:
        build_parser().parse_args(run)
    except SystemExit:  # until `run --config` is merged
        pytest.skip("python -m pipeline run has no --config option yet")


@pytest.mark.parametrize(("where", "doc"), daskjobs(), ids=[w for w, _ in daskjobs()])
def test_daskjob_job_file_and_credentials_are_mounted(where: str, doc: dict[str, Any]) -> None:
    config_maps = {cm["metadata"]["name"]: cm for cm in of_kind(load(source(where)), "ConfigMap")}
    specs = pod_specs(doc)
    job_pod = specs["job"]
    job = container(job_pod, "job")
    config = argv(job)[argv(job).index("--config") + 1]
    (mount,) = [m for m in job["volumeMounts"] if config.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in job_pod["volumes"] if v["name"] == mount["name"]]
    key = config[len(mount["mountPath"]) + 1 :]
    assert key in config_maps[volume["configMap"]["name"]]["data"]
    # the job pod and the workers read and write the store: both get the credentials
    for part, name in (("job", "job"), ("worker", "worker")):
        refs = [e["secretRef"]["name"] for e in container(specs[part], name).get("envFrom", [])]
        assert refs == ["pipeline-s3"], part


@pytest.mark.parametrize(("where", "doc"), daskjobs(), ids=[w for w, _ in daskjobs()])
def test_daskjob_runs_the_dockerfile_image_as_its_user(where: str, doc: dict[str, Any]) -> None:
    user = dockerfile_instructions("USER")[-1].split(":")[0]
    images = set()
    for spec in pod_specs(doc).values():
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert str(spec["securityContext"]["runAsUser"]) == user
        images |= {c["image"] for c in [*spec["containers"], *spec.get("initContainers", [])]}
    assert len(images) == 1  # one image, as deploy/Dockerfile builds it


def test_init_container_waits_for_a_real_scheduler() -> None:
    from distributed import LocalCluster

    (doc,) = of_kind(load(DASKJOB_FILE), "DaskJob")
    (wait,) = pod_specs(doc)["job"]["initContainers"]
    assert wait["command"][:2] == ["python", "-c"]
    code = wait["command"][2]
    with LocalCluster(
        n_workers=0,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        up = subprocess.run(
            [sys.executable, "-c", code, cluster.scheduler_address, "30"],
            capture_output=True,
            timeout=60,
        )
    assert up.returncode == 0, up.stderr.decode()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = subprocess.run(
        [sys.executable, "-c", code, f"tcp://127.0.0.1:{port}", "1"],
        capture_output=True,
        timeout=60,
    )
    assert down.returncode != 0


# --- CronJob -------------------------------------------------------------------------------


def test_cronjob_runs_one_daskjob_at_a_time() -> None:
    docs = load(CRONJOB_FILE)
    (cronjob,) = of_kind(docs, "CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["metadata"]["name"]) <= 52  # Kubernetes' limit for CronJob names
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (creator,) = pod["containers"]
    # the run's name is the CronJob's Job's: a retried pod finds its DaskJob again
    env = {e["name"]: e for e in creator["env"]}
    assert env["RUN_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/job-name']"
    )
    # exit 3 (the run failed, or another one is going) is final
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"] == {
        "containerName": creator["name"],
        "operator": "In",
        "values": [3],
    }
    assert "exit 3" in cron_script()
    # the template it creates, from the ConfigMap it mounts
    (mount,) = creator["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [
        cm
        for cm in of_kind(docs, "ConfigMap")
        if cm["metadata"]["name"] == volume["configMap"]["name"]
    ]
    (key,) = [k for k in config_map["data"] if f"{mount['mountPath']}/{k}" in cron_script()]
    assert f'sed "s/{PLACEHOLDER}/$name/g" {mount["mountPath"]}/{key}' in cron_script()
    template = config_map["data"][key]
    assert yaml.safe_load(template)["metadata"]["name"] == PLACEHOLDER
    selector = env["RUN_SELECTOR"]["value"].split("=")
    assert yaml.safe_load(template)["metadata"]["labels"][selector[0]] == selector[1]


def test_cronjob_script_is_valid_bash() -> None:
    checked = subprocess.run(["bash", "-n"], input=cron_script().encode(), capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()


def test_cronjob_rbac_allows_what_the_script_does() -> None:
    docs = load(CRONJOB_FILE)
    (cronjob,) = of_kind(docs, "CronJob")
    account = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
    assert [sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")] == [account]
    (binding,) = of_kind(docs, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    (role,) = of_kind(docs, "Role")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (rule,) = role["rules"]
    assert rule["apiGroups"] == [DASK_GROUP]
    assert rule["resources"] == ["daskjobs"]
    commands = re.sub(r'echo "[^"]*"', "", cron_script())  # not the hints it prints
    used = set(re.findall(r"\bkubectl ([a-z-]+)", commands))
    assert used == {"get", "delete", "create"}
    assert used | {"list", "watch"} <= set(rule["verbs"])


# --- job files -----------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "text"), job_files(), ids=[w for w, _ in job_files()])
def test_job_files_hold_valid_settings(where: str, text: str) -> None:
    values = tomllib.loads(text)
    settings = {k: v for k, v in values.items() if k not in JOB_KEYS}
    Settings.from_config(**settings)  # raises UsageError naming a bad or unknown setting
    assert isinstance(values["inputs"], list)
    assert all(isinstance(p, str) for p in values["inputs"])
    assert values["out"].startswith("s3://")
    # no scheduler: the operator gives the job pod DASK_SCHEDULER_ADDRESS
    assert "scheduler" not in values
    assert "workers" not in values


@pytest.mark.parametrize(("where", "text"), job_files(), ids=[w for w, _ in job_files()])
def test_job_files_read_as_the_pipeline_reads_them(where: str, text: str, tmp_path: Path) -> None:
    from pipeline.settings import read_job_file

    path = tmp_path / "job.toml"
    path.write_text(text)
    values = read_job_file(str(path))
    assert values["out"] == tomllib.loads(text)["out"]


# --- Dockerfile ----------------------------------------------------------------------------


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_instructions(word: str) -> list[str]:
    return [rest for w, rest in dockerfile() if w == word]


def dockerfile_json(word: str) -> list[str]:
    (text,) = dockerfile_instructions(word)
    return json.loads(text)


def pip_installs() -> list[list[str]]:
    found = []
    for run in dockerfile_instructions("RUN"):
        lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for word in lexer:  # split at && ; || | outside quotes
            if word in ("&&", ";", "||", "|"):
                commands.append([])
            else:
                commands[-1].append(word)
        for words in commands:
            if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                found.append(words[words.index("install") + 1 :])
    return found


def test_dockerfile_installs_the_package_as_the_readme_does() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "pip install ." in readme
    (install,) = pip_installs()
    # the README's `pip install .`, not editable, with the s3 extra (s3fs) and the deploy extra
    # (prometheus-client: the scheduler's and workers' /metrics)
    assert install == [".[s3,deploy]"]
    (base,) = dockerfile_instructions("FROM")
    assert base == "python:3.11-slim"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains("3.11")
    extras = pyproject["project"]["optional-dependencies"]
    assert any(r.startswith("prometheus-client") for r in extras["deploy"])


def test_dockerfile_copies_what_the_install_needs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        needed |= {p.name for p in ROOT.glob(pattern) if (p / "__init__.py").is_file()}
    assert "pipeline" in needed
    copied = set()
    for copy_args in dockerfile_instructions("COPY"):
        *sources, _ = shlex.split(copy_args)
        copied |= {s.rstrip("/") for s in sources if not s.startswith("--")}
    assert copied == needed
    for source in copied:
        assert (ROOT / source).exists()
        assert not dockerignored(source), f"{source} is left out of the build context"


def dockerignored(path: str) -> bool:
    """Whether deploy/Dockerfile.dockerignore leaves a top-level path out (last match wins)."""
    import fnmatch

    ignored = False
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_local_clutter_out() -> None:
    for clutter in (".git", ".venv", "compressed.zarr", "benchmarks", "tests"):
        assert dockerignored(clutter)


def test_dockerfile_runs_the_pipeline_as_a_non_root_user() -> None:
    user = dockerfile_instructions("USER")[-1].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert dockerfile_json("ENTRYPOINT") == ["python", "-m", "pipeline"]
    assert dockerfile_json("CMD") == ["run", "--config", "/etc/pipeline/job.toml"]
    # the default command reads the job file where the DaskJob mounts it
    (doc,) = of_kind(load(DASKJOB_FILE), "DaskJob")
    assert argv(container(pod_specs(doc)["job"], "job")) == [
        *dockerfile_json("ENTRYPOINT"),
        *dockerfile_json("CMD"),
    ]


def test_dockerfile_compiles_the_kernels_as_the_user_at_build_time() -> None:
    """Importing pipeline.job.preload compiles nothing (its warm-up runs as a worker starts): the
    build runs the warm-up, as the image's user, so the kernels land in its NUMBA_CACHE_DIR."""
    steps = dockerfile()
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    warm_ups = [
        i
        for i, (word, rest) in enumerate(steps)
        if word == "RUN" and "pipeline.job.preload" in rest and "warm_up()" in rest
    ]
    assert warm_ups
    assert min(warm_ups) > last_user
    env = dict(
        word.split("=", 1) for rest in dockerfile_instructions("ENV") for word in shlex.split(rest)
    )
    assert env["NUMBA_CACHE_DIR"].startswith("/home/pipeline/")


def test_dockerfile_gives_workers_the_pipeline_malloc_settings() -> None:
    env = dict(
        word.split("=", 1) for rest in dockerfile_instructions("ENV") for word in shlex.split(rest)
    )
    assert pre_spawn_environ(MALLOC_VARIABLE, env[MALLOC_VARIABLE]) == worker_malloc()


# --- Slurm ---------------------------------------------------------------------------------


def test_launcher_builds_slurm_cluster_kwargs() -> None:
    launch = load_launcher()
    args = launch.build_parser().parse_args(
        [
            "--jobs", "3", "--cores", "8", "--memory", "32GiB", "--walltime", "02:00:00",
            "--partition", "cpu", "--account", "proj", "--job-extra=--qos=normal",
        ]
    )  # fmt: skip
    kwargs = launch.cluster_kwargs(args)
    assert kwargs["cores"] == 8
    assert kwargs["processes"] == 8
    assert kwargs["memory"] == "32GiB"
    assert kwargs["walltime"] == "02:00:00"
    assert kwargs["queue"] == "cpu"
    assert kwargs["account"] == "proj"
    assert kwargs["job_extra_directives"] == ["--qos=normal"]
    assert kwargs["worker_extra_args"] == ["--preload", "pipeline.job.preload"]
    (export,) = kwargs["job_script_prologue"]
    word, assignment = shlex.split(export)
    assert word == "export"
    assert pre_spawn_environ(*assignment.split("=", 1)) == worker_malloc()
    for bad in (["--processes", "9"], ["--jobs", "0"], ["--cores", "0"]):
        with pytest.raises(ValueError, match="must be"):
            launch.cluster_kwargs(launch.build_parser().parse_args(["--cores", "8", *bad]))


def test_launcher_splits_its_args_from_the_pipeline_args() -> None:
    launch = load_launcher()
    ours, theirs = launch.split_argv(["--jobs", "2", "--", "photos/", "--", "--colors", "8"])
    assert ours == ["--jobs", "2"]
    assert theirs == ["photos/", "--", "--colors", "8"]
    assert launch.pipeline_argv(["--config", "j.toml"], "tcp://h:1") == [
        "run", "--config", "j.toml", "--scheduler", "tcp://h:1",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        launch.main(["--", "--scheduler", "tcp://elsewhere:8786"])
    assert stopped.value.code == 2


def test_launcher_dry_run_renders_the_worker_job_script_without_a_scheduler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real launcher, up to submission: dask-jobqueue renders the workers' Slurm script,
    and nothing is started (no scheduler, so no port taken), since nothing will connect."""
    from distributed import Scheduler

    launch = load_launcher()
    schedulers = set(Scheduler._instances)
    status = launch.main(
        [
            "--dry-run", "--jobs", "2", "--cores", "4", "--memory", "8GiB",
            "--walltime", "00:30:00", "--partition", "cpu", "--account", "proj",
            "--interface", "lo", "--local-directory", "$TMPDIR",
            "--dashboard-address", "127.0.0.1:0", "--", "--colors", "8",
        ]
    )  # fmt: skip
    assert status == 0
    assert set(Scheduler._instances) == schedulers
    script = capsys.readouterr().out
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    directives = [line for line in lines if line.startswith("#SBATCH")]
    for expected in ("-p cpu", "-A proj", "-t 00:30:00", "--cpus-per-task=4", "-J pipeline-worker"):
        assert f"#SBATCH {expected}" in directives
    assert any(re.fullmatch(r"#SBATCH --mem=\d+G", d) for d in directives)
    (command,) = [line for line in lines if "distributed.cli.dask_worker" in line]
    words = shlex.split(command)
    assert words[1:3] == ["-m", "distributed.cli.dask_worker"]
    params = worker_cli.make_context("dask worker", words[3:]).params
    assert params["preload"] == ("pipeline.job.preload",)
    assert params["nthreads"] == 1
    assert params["n_workers"] == "4"
    assert params["interface"] == "lo"
    assert params["scheduler"] == launch.PLACEHOLDER_ADDRESS
    assert params["local_directory"] == "$TMPDIR"  # expanded by the job's shell, on its node
    assert "--local-directory $TMPDIR" in command
    (export,) = [line for line in lines if line.startswith("export ")]
    assert pre_spawn_environ(*shlex.split(export)[1].split("=", 1)) == worker_malloc()


def sbatch_lines() -> list[str]:
    return SBATCH.read_text().splitlines()


def test_sbatch_script_directives_come_before_any_command() -> None:
    lines = sbatch_lines()
    assert lines[0] == "#!/bin/bash"
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert directives
    assert max(directives) < first_command
    checked = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()


def sbatch_directives() -> dict[str, str]:
    """The script's ``#SBATCH --option=value`` directives."""
    directives = [line.split(None, 1)[1] for line in sbatch_lines() if line.startswith("#SBATCH")]
    assert all(d.startswith("--") for d in directives), directives
    return {name: value for name, _, value in (d[2:].partition("=") for d in directives)}


def sbatch_command(program: str) -> list[str]:
    """The words of the script's command line that runs ``program`` (continuations joined)."""
    text = SBATCH.read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.strip().startswith(program + " ")]
    return shlex.split(line.strip().rstrip("&"))


def test_sbatch_script_starts_workers_with_the_preload() -> None:
    words = sbatch_command("srun")
    at = words.index("dask")
    assert words[at + 1] == "worker"
    # the interface, when PIPELINE_INTERFACE sets one, is added by the array's expansion
    assert words[-1] == "${interface[@]}"
    params = worker_cli.make_context("dask worker", words[at + 2 : -1]).params
    assert params["preload"] == ("pipeline.job.preload",)
    assert params["nthreads"] == 1
    assert params["scheduler_file"] == "$scheduler_file"
    assert params["memory_limit"] == "$memory_limit"
    (export,) = [line for line in sbatch_lines() if line.startswith(f"export {MALLOC_VARIABLE}=")]
    assert pre_spawn_environ(*shlex.split(export)[1].split("=", 1)) == worker_malloc()
    text = SBATCH.read_text()
    assert 'python -m pipeline run --scheduler "$address" "$@" &' in text
    assert 'interface=(--interface "$PIPELINE_INTERFACE")' in text


def test_sbatch_scheduler_takes_free_ports_and_the_same_interface() -> None:
    """Several jobs may share a node: no fixed port for the scheduler or its dashboard."""
    words = sbatch_command("dask scheduler")
    assert words[-1] == "${interface[@]}"
    params = scheduler_cli.make_context("dask scheduler", words[2:-1]).params
    assert str(params["port"]) == "0"
    assert params["dashboard_address"] == ":0"
    assert params["scheduler_file"] == "$scheduler_file"


def test_sbatch_directives_fit_a_small_cluster_and_leave_memory_to_sbatch() -> None:
    """No node count or per-node tasks a small cluster lacks (it would pend forever), and no
    memory option, which would make sbatch refuse the other one (--mem vs --mem-per-cpu)."""
    directives = sbatch_directives()
    assert directives["ntasks"] == "2"
    assert directives["cpus-per-task"] == "1"
    for absent in ("nodes", "ntasks-per-node", "mem", "mem-per-cpu", "mem-per-gpu"):
        assert absent not in directives
    # the graceful stop: USR1 to the batch shell alone, long enough before the time limit for
    # the pipeline's default --stop-grace (20 s) and the cluster's stop
    stop = re.fullmatch(r"B:(\w+)@(\d+)", directives["signal"])
    assert stop is not None
    signal_name, seconds = stop.groups()
    assert signal_name == "USR1"
    assert int(seconds) >= 60
    assert "trap 'stop USR1' USR1" in sbatch_lines()
