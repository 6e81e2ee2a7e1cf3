"""A real one-node Slurm cluster on 127.0.0.1, for tests: munged, slurmctld and slurmd.

Everything lives in one directory of its own (configuration, munge key and socket, state,
spool, PID and log files) and the daemons listen on free ports, so the cluster clashes with no
other Slurm or munge on the machine. Client commands (sbatch, squeue, scontrol, scancel) reach it
through ``SLURM_CONF`` in :attr:`SlurmCluster.env`. The daemons run in the foreground as children
of this process and are stopped by their PIDs.

Needs root (slurmd starts jobs as their users; ``SlurmUser=root``) and the Debian packages
slurmctld, slurmd, slurm-client and munge.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
PARTITION = "debug"
#: The node's memory as Slurm sees it (MB); jobs without a memory request get DefMemPerCPU.
REAL_MEMORY = 8192
DEF_MEM_PER_CPU = 1024


def missing() -> str:
    """Why a cluster cannot be started here ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their users)"
    absent = [name for name in (*DAEMONS, *CLIENTS, "mungekey") if not _which(name)]
    if absent:
        return f"not installed: {', '.join(absent)} (Debian: slurmctld slurmd slurm-client munge)"
    return ""


def _which(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SlurmCluster:
    """A running cluster: its directory, and the environment its client commands need."""

    root: Path
    env: dict[str, str]
    cpus: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (``JobState``, ``ExitCode``, ``StdOut``, ...).

        Empty once slurmctld has forgotten the job (MinJobAge after it ended).
        """
        shown = self.run("scontrol", "show", "job", "--oneliner", job_id, check=False)
        if shown.returncode:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", shown.stdout))

    def wait_job(self, job_id: str, timeout: float = 180) -> dict[str, str]:
        """Wait until the job has ended; returns its last :meth:`job` record."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") not in {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}:
                return info
            if time.monotonic() > deadline:
                self.run("scancel", job_id, check=False)
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout} s")
            time.sleep(0.5)

    def completion(self, job_id: str, timeout: float = 15) -> dict[str, str]:
        """The job's record in the job completion log (``DerivedExitCode`` included)."""
        path = self.root / "jobcomp.txt"
        deadline = time.monotonic() + timeout
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines:
                if line.startswith(f"JobId={job_id} "):
                    return dict(re.findall(r"(\w+)=(\S*)", line))
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is not in {path}")
            time.sleep(0.2)

    def jobs(self) -> list[str]:
        """IDs of the jobs slurmctld knows that have not ended."""
        listed = self.run("squeue", "--noheader", "--format=%i")
        return listed.stdout.split()

    def log(self, daemon: str) -> str:
        """The end of a daemon's log file."""
        path = self.root / f"{daemon}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop the daemons, slurmd first, by the PIDs this process started."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _config(root: Path, cpus: int, ctld_port: int, slurmd_port: int) -> str:
    """slurm.conf: one node of ``cpus`` CPUs, no accounting, no cgroups; KillWait 10 s (the
    time from a plain scancel's SIGTERM to its SIGKILL; 30 s by default) so a cancelled job
    frees the node sooner."""
    return f"""\
ClusterName=pipelinetest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=600
KillWait=10
InactiveLimit=0
DefMemPerCPU={DEF_MEM_PER_CPU}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={REAL_MEMORY} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@contextmanager
def slurm_cluster(root: Path, cpus: int = 2, timeout: float = 30) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd in ``root``; yield once the node is idle; stop them."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    key = root / "munge" / "munge.key"
    subprocess.run(
        [_which("mungekey") or "mungekey", "--create", "--keyfile", str(key)],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    ctld_port, slurmd_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(_config(root, cpus, ctld_port, slurmd_port))
    (root / "plugstack.conf").write_text("")
    # The Slurm variables of a job the tests may run in must not leak into the jobs they submit.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env["SLURM_CONF"] = str(conf)
    cluster = SlurmCluster(root=root, env=env, cpus=cpus)
    commands = {
        "munged": [
            "munged", "--foreground", "--force",
            f"--socket={root}/munge/munge.socket", f"--key-file={key}",
            f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/munged.seed",
            f"--log-file={root}/munged.log",
        ],
        "slurmctld": ["slurmctld", "-D", "-i", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-N", "localhost", "-f", str(conf)],
    }  # fmt: skip
    try:
        for name, command in commands.items():
            command[0] = _which(command[0]) or command[0]
            out = open(root / f"{name}.stdout", "wb")  # noqa: SIM115  (the daemon keeps it)
            with out:
                cluster.processes[name] = subprocess.Popen(
                    command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root
                )
            if name == "munged":
                _wait_for(lambda: (root / "munge" / "munge.socket").exists(), timeout, "munged")
        _wait_for(lambda: _node_idle(cluster), timeout, "the node to be idle")
        yield cluster
    finally:
        try:
            if _alive(cluster):  # jobs a failed test left behind: their processes end with them
                for job_id in cluster.jobs():
                    cluster.run("scancel", job_id, check=False)
                with suppress(TimeoutError):
                    _wait_for(lambda: not cluster.jobs(), 60, "the jobs to end")
        finally:
            cluster.stop()


def _alive(cluster: SlurmCluster) -> bool:
    process = cluster.processes.get("slurmctld")
    return process is not None and process.poll() is None


def _node_idle(cluster: SlurmCluster) -> bool:
    for name, process in cluster.processes.items():
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode}:\n"
                + (cluster.root / f"{name}.stdout").read_text(errors="replace")[-2000:]
                + cluster.log(name)
            )
    shown = cluster.run("sinfo", "--noheader", "--format=%T", check=False)
    return shown.returncode == 0 and shown.stdout.strip() == "idle"


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
