"""Job files: one TOML file holding everything ``python -m pipeline run`` takes.

A scheduled job (a Kubernetes CronJob, a Slurm script) keeps its settings in a file rather than in
a long command line. Keys are the command-line options with underscores, at the top level::

    inputs = ["s3://photos/incoming/", "/data/scans/*.tif"]
    out = "s3://photos/compressed.zarr"
    colors = 128
    effort = 1
    report = "report.html"

Command-line options given as well win over the file; settings neither gives come from dask's
configuration (``DASK_PIPELINE__*`` environment variables, dask YAML files), then the defaults.
Local relative paths in the file are relative to the file's folder. Unknown keys and bad values
are reported, naming the file, before any work starts.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from pipeline.config import LOCAL_KINDS, Settings
from pipeline.errors import UsageError

#: Keys of a job file that are not compression settings, with their types.
JOB_KEYS: dict[str, type] = {
    "inputs": list,
    "out": str,
    "scheduler": str,
    "workers": int,
    "local_cluster": str,
    "overwrite": bool,
    "report": str,
    "stop_grace": float,
}
#: Every key a job file may hold.
KEYS = tuple(JOB_KEYS) + Settings.names()
#: Keys holding local paths (or URLs), resolved against the job file's folder.
PATH_KEYS = ("out", "report")


def _is_url(path: str) -> bool:
    return "://" in path


def _resolve(folder: str, path: str) -> str:
    return path if _is_url(path) or os.path.isabs(path) else os.path.join(folder, path)


def read_job_file(path: str) -> dict[str, Any]:
    """Read and check a job file; returns its values by key (only the keys it sets).

    Raises
    ------
    UsageError
        If the file cannot be read or parsed, has an unknown key, or a value of the wrong type
        or out of range (the message names the file and the key).
    """
    try:
        with open(path, "rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such job file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read job file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise UsageError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(known: {', '.join(KEYS)})"
        )
    for key, kind in JOB_KEYS.items():
        if key not in values:
            continue
        value = values[key]
        number = kind is float and isinstance(value, int)  # TOML's 20 for 20.0
        wrong = not (isinstance(value, kind) or number) or (
            kind in (int, float) and isinstance(value, bool)
        )
        if key == "inputs" and not wrong:
            wrong = not all(isinstance(item, str) for item in value)
        if wrong:
            expected = "a list of strings" if key == "inputs" else f"a {kind.__name__}"
            raise UsageError(f"{path}: {key} must be {expected}, got {value!r}")
    if values.get("stop_grace", 0) < 0:
        raise UsageError(f"{path}: stop_grace must be >= 0, got {values['stop_grace']}")
    if values.get("workers", 1) < 1:
        raise UsageError(f"{path}: workers must be >= 1, got {values['workers']}")
    if values.get("local_cluster", "auto") not in LOCAL_KINDS:
        raise UsageError(
            f"{path}: local_cluster must be one of {', '.join(LOCAL_KINDS)}, "
            f"got {values['local_cluster']!r}"
        )
    settings = {k: v for k, v in values.items() if k not in JOB_KEYS}
    try:
        Settings.from_config(**settings)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    folder = os.path.dirname(os.path.abspath(path))
    if "inputs" in values:
        values["inputs"] = [_resolve(folder, p) for p in values["inputs"]]
    for key in PATH_KEYS:
        if key in values:
            values[key] = _resolve(folder, values[key])
    return values
