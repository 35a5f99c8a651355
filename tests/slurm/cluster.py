"""A throwaway one-node SLURM cluster: Debian's slurm-wlm and munge, started as root, stopped by pid.

    cluster = Cluster(accounting=False).start()   # raises Unavailable(reason) where it cannot
    subprocess.run(["sbatch", ...], env=cluster.env)
    cluster.stop()

Everything lives under one temporary folder: the config (slurm.conf.in and slurmdbd.conf.in next to
this file, filled in), a munge key and munged of its own (its own socket), state, spool and logs, on
free ports, so it neither needs nor touches a system SLURM or munge. Clients find it through
`SLURM_CONF` (`cluster.env`); jobs inherit it from sbatch. With `accounting=True` it also starts
MariaDB (a private data folder, 127.0.0.1) and slurmdbd, so that `sacct` answers.

Packages are installed with apt-get where they are missing (root, apt reachable); `.ci/run` installs
them before the tests, and then nothing is installed here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from string import Template

from conftest import free_port

HERE = Path(__file__).resolve().parent
CLUSTER_NAME = "sweepertest"
PACKAGES = ("slurm-wlm", "munge")
ACCOUNTING_PACKAGES = ("slurmdbd", "mariadb-server-core", "mariadb-client-core")  # no service scripts
COMMANDS = (
    "munged",
    "munge",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "scontrol",
    "scancel",
    "sinfo",
)
ACCOUNTING_COMMANDS = ("slurmdbd", "sacctmgr", "sacct", "mariadbd", "mariadb-install-db", "mariadb")
SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
START_TIMEOUT_S = 30
APT_TIMEOUT_S = 600


class Unavailable(Exception):
    """SLURM cannot run here; the message says why (a test skips with it)."""


def which(name: str) -> str | None:
    """A command on PATH or in the sbin folders (root's PATH lacks them in some containers)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def ensure_installed(accounting: bool = False) -> float:
    """Install Debian's packages where a command is missing; the seconds it took (0 if nothing was)."""
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"SLURM tests need Linux, this is {sys.platform}")
    commands = COMMANDS + (ACCOUNTING_COMMANDS if accounting else ())
    missing = [c for c in commands if which(c) is None]
    if not missing:
        return 0.0
    packages = PACKAGES + (ACCOUNTING_PACKAGES if accounting else ())
    if os.geteuid() != 0:
        raise Unavailable(
            f"{', '.join(missing)} not installed, and not root to apt-get install {' '.join(packages)}"
        )
    if which("apt-get") is None:
        raise Unavailable(f"{', '.join(missing)} not installed, and no apt-get to install them")
    started = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    result = _quiet(install, env)
    if result.returncode != 0:  # maybe no package lists yet
        _quiet(["apt-get", "update", "-qq"], env)
        result = _quiet(install, env)
    missing = [c for c in commands if which(c) is None]
    if result.returncode != 0 or missing:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Unavailable(
            f"apt-get install {' '.join(packages)} failed ({last[0]}); missing: {', '.join(missing)}"
        )
    return time.monotonic() - started


def _quiet(command: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(command, 1, "", str(error))


class Cluster:
    """One node (`hostname -s`, 2 CPUs), one partition; see the module's docstring."""

    def __init__(self, accounting: bool = False):
        self.accounting = accounting
        self.node = socket.gethostname().split(".")[0]
        self.root: Path | None = None
        self.daemons: list[tuple[str, subprocess.Popen]] = []  # in start order
        self.setup_s: float | None = None

    @property
    def conf(self) -> Path:
        assert self.root is not None
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a client of this cluster (sbatch, squeue, `python run.py ...`)."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *command: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM command against this cluster."""
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip() or result.stdout.strip()}")
        return result

    # -- start ----------------------------------------------------------------------------------------

    def start(self) -> Cluster:
        if os.geteuid() != 0:
            raise Unavailable(
                "the test cluster's daemons run as root (SlurmUser=root): run the tests as root"
            )
        started = time.monotonic()
        # munged wants every folder above its socket searchable by all: /tmp, not $TMPDIR (maybe in /root)
        base = "/tmp" if os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="sweeper-slurm-", dir=base))
        self.root.chmod(0o755)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.setup_s = time.monotonic() - started
        return self

    def _start(self) -> None:
        root = self.root
        assert root is not None
        for name in ("ctld", "slurmd", "munge", "munge-key"):
            (root / name).mkdir()
        (root / "munge").chmod(0o755)
        (root / "munge-key").chmod(0o700)
        (root / "plugstack.conf").write_text("")
        socket_path = root / "munge" / "munge.socket"
        values = {
            "node": self.node,
            "state": str(root),
            "munge_socket": str(socket_path),
            "ctld_port": free_port(),
            "slurmd_port": free_port(),
            "accounting": "AccountingStorageType=accounting_storage/none",
        }
        self._start_munge(socket_path)
        if self.accounting:
            values["accounting"] = self._start_accounting(values)
        self.conf.write_text(Template((HERE / "slurm.conf.in").read_text()).substitute(values))
        self._daemon("slurmctld", [which("slurmctld"), "-D", "-f", str(self.conf)])
        self._until(
            "slurmctld answers", lambda: self.run("scontrol", "ping", timeout=5, check=False).returncode == 0
        )
        self._daemon("slurmd", [which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._until("the node is idle", lambda: self._node_state() == "idle")

    def _start_munge(self, socket_path: Path) -> None:
        root = self.root
        assert root is not None
        key = root / "munge-key" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self._daemon(
            "munged",
            [
                which("munged"),
                "--foreground",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={root / 'munge' / 'munged.pid'}",
                f"--log-file={root / 'munge' / 'munged.log'}",
                f"--seed-file={root / 'munge-key' / 'munged.seed'}",
            ],
        )

        def encodes() -> bool:
            out = subprocess.run(
                [which("munge"), "-n", "-S", str(socket_path)], capture_output=True, timeout=5, check=False
            )
            return out.returncode == 0

        self._until("munged answers", encodes)

    def _start_accounting(self, values: dict) -> str:
        """MariaDB and slurmdbd; the accounting lines of slurm.conf."""
        root = self.root
        assert root is not None
        db = root / "db"
        db.mkdir()
        db_port, dbd_port, password = free_port(), free_port(), secrets.token_hex(8)
        install = subprocess.run(
            [
                which("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={db / 'data'}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if install.returncode != 0:
            raise Unavailable(f"mariadb-install-db failed: {install.stderr.strip()[-300:]}")
        sock = db / "mysqld.sock"
        self._daemon(
            "mariadbd",
            [
                which("mariadbd"),
                "--no-defaults",
                f"--datadir={db / 'data'}",
                "--user=root",
                f"--socket={sock}",
                f"--port={db_port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={db / 'mysqld.pid'}",
                f"--log-error={db / 'mysqld.err'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
            ],
        )

        def sql(statement: str) -> subprocess.CompletedProcess:
            command = [which("mariadb"), "--no-defaults", "-S", str(sock), "-u", "root", "-e", statement]
            return subprocess.run(command, capture_output=True, text=True, timeout=10)

        self._until("MariaDB answers", lambda: sql("SELECT 1").returncode == 0)
        grant = " ".join(
            f"CREATE USER 'slurm'@'{host}' IDENTIFIED BY '{password}'; "
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}';"
            for host in ("127.0.0.1", "localhost")
        )
        made = sql(grant)
        if made.returncode != 0:
            raise Unavailable(f"could not make MariaDB's slurm user: {made.stderr.strip()}")
        dbd_conf = root / "slurmdbd.conf"  # slurmdbd reads it from SLURM_CONF's folder
        dbd_values = dict(values, dbd_port=dbd_port, db_port=db_port, db_password=password)
        dbd_conf.write_text(Template((HERE / "slurmdbd.conf.in").read_text()).substitute(dbd_values))
        dbd_conf.chmod(0o600)  # slurmdbd refuses a config others can read (it holds a password)
        lines = "\n".join(
            [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=127.0.0.1",
                f"AccountingStoragePort={dbd_port}",
                f"AccountingStoragePass={values['munge_socket']}",
            ]
        )
        # slurm.conf must exist for slurmdbd (SLURM_CONF's folder) and sacctmgr; slurmctld comes later
        self.conf.write_text(
            Template((HERE / "slurm.conf.in").read_text()).substitute(values, accounting=lines)
        )
        self._daemon("slurmdbd", [which("slurmdbd"), "-D"])
        self._until(
            "slurmdbd answers",
            lambda: self.run("sacctmgr", "-n", "list", "cluster", timeout=5, check=False).returncode == 0,
        )
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME)
        return lines

    def _daemon(self, name: str, command: list[str | None]) -> None:
        assert self.root is not None and all(command), command
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 (the daemon holds it)
        with log:
            process = subprocess.Popen(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not stopped by a Ctrl-C meant for pytest: stop() stops it
            )
        self.daemons.append((name, process))

    def _until(self, what: str, ready, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self.daemons:
                if process.poll() is not None:
                    raise Unavailable(
                        f"{name} exited with status {process.returncode}: {self.log_tail(name)}"
                    )
            with contextlib.suppress(subprocess.TimeoutExpired):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise Unavailable(f"{what}: not within {timeout} s; {self.log_tail(self.daemons[-1][0])}")
            time.sleep(0.1)

    def _node_state(self) -> str:
        out = self.run("sinfo", "--noheader", "--nodes", self.node, "--format=%T", timeout=5, check=False)
        return out.stdout.strip()

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines a daemon wrote (its own log file where it keeps one)."""
        assert self.root is not None
        for path in (
            self.root / f"{name}.log",
            self.root / "munge" / f"{name}.log",
            self.root / f"{name}.out",
        ):
            if path.is_file() and path.stat().st_size:
                return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        return "no log"

    # -- stop -----------------------------------------------------------------------------------------

    def stop(self, keep: bool = False) -> None:
        """Cancel every job, then stop the daemons this object started (by pid, newest first) and
        remove the folder (`keep=True` keeps it, for its logs)."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self.daemons):
            with contextlib.suppress(Exception):
                self.run("scancel", f"--user={os.getuid()}", timeout=10, check=False)
                deadline = time.monotonic() + 30
                while (
                    time.monotonic() < deadline and self.run("squeue", "--noheader", timeout=5).stdout.strip()
                ):
                    time.sleep(0.5)
        for _name, process in reversed(self.daemons):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        self.daemons.clear()
        if self.root is not None and not keep:
            shutil.rmtree(self.root, ignore_errors=True)
