"""Run Airflow the way production does, on this machine: a throwaway PostgreSQL cluster and the
Airflow api-server, scheduler, dag-processor and triggerer as separate processes on 127.0.0.1.

This module is the ONE place that says which command each service runs and which configuration
every service shares: `tests/test_services_e2e.py` starts the processes from these tables and
`tests/test_compose.py` checks that `docker-compose.yaml` runs the very same commands with the
same settings, so the compose stack and the end-to-end test cannot drift apart.

Every process started here runs in its own session (process group); `stop()` ends the group and
every descendant it can still find (LocalExecutor task runners, spark-submit, the JVM and its
Python workers), so a failing test leaves nothing running.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

# --- the single source of truth shared with docker-compose.yaml ------------------------------

# One-shot set-up, run before the services (compose: the `airflow-init` service).
INIT_COMMAND: tuple[str, ...] = ("airflow", "db", "migrate")

# Long-running services. The scheduler and triggerer do not serve their logs over HTTP: both
# write to the logs folder the api-server reads too (a shared volume in compose, one
# AIRFLOW_HOME here), and the log servers would otherwise listen on every interface.
SERVICE_COMMANDS: dict[str, tuple[str, ...]] = {
    "api-server": ("airflow", "api-server"),
    "scheduler": ("airflow", "scheduler", "--skip-serve-logs"),
    "dag-processor": ("airflow", "dag-processor"),
    "triggerer": ("airflow", "triggerer", "--skip-serve-logs"),
}

# Settings every Airflow service gets, in compose as in the test. What differs per machine
# (database URL, ports, folders, secrets) is set beside them by each side.
COMMON_CONFIG: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    # A new or changed DAG file shows up within seconds instead of the default 5 minutes.
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__API__WORKERS": "1",
    # The pipeline's local target: the same two Spark jobs through a local spark-submit.
    "FRUITS_TARGET": "local",
}

ADMIN_USER = "admin"
LOOPBACK = "127.0.0.1"


def require(condition: bool, reason: str) -> None:
    """Skip when a system package is missing (a developer's machine before `make setup`); fail
    under CI, where the set-up installs it."""
    if condition:
        return
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; the tiny race is acceptable)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def executable(command: Iterable[str], bin_dir: Path) -> list[str]:
    """`airflow ...` from the tables above, run with the Airflow of this interpreter's venv."""
    head, *rest = command
    return [str(bin_dir / head), *rest]


# --- PostgreSQL ------------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Debian installs the server binaries under /usr/lib/postgresql/<major>/bin (not on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    """A throwaway cluster in a temp dir: listens on 127.0.0.1 only, password auth, one database.

    PostgreSQL refuses to run as root, so as root the cluster belongs to Debian's `postgres`
    user (created by the package) and every server command goes through `runuser`."""

    bin_dir: Path
    port: int = field(default_factory=free_port)
    database: str = "airflow"
    user: str = "airflow"
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    base_dir: Path | None = None

    @property
    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as_owner, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start(self) -> PostgresServer:
        # Not under pytest's tmp dir: that one is private to root, and the server runs as `postgres`.
        self.base_dir = Path(tempfile.mkdtemp(prefix="fruits-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.base_dir, "postgres", "postgres")
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        )
        pwfile.unlink()
        # TCP on loopback only; the unix socket goes to our own dir, not the system's /run.
        options = f"-c listen_addresses={LOOPBACK} -p {self.port} -k {self.base_dir}"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.base_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host=LOOPBACK, port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()

    def pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        return int(pidfile.read_text().splitlines()[0]) if pidfile.exists() else None

    def log_tail(self, chars: int = 3000) -> str:
        log = self.base_dir / "server.log" if self.base_dir else None
        return log.read_text(errors="replace")[-chars:] if log and log.exists() else ""

    def stop(self) -> None:
        if self.base_dir is None:
            return
        if self.pid() is not None:
            try:
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            except RuntimeError:
                pid = self.pid()
                if pid:
                    _terminate([psutil.Process(pid)], grace_s=5)
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = None


# --- Airflow services ------------------------------------------------------------------------


def _terminate(processes: list[psutil.Process], grace_s: float) -> None:
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


@dataclass
class AirflowServices:
    """The four Airflow services over one AIRFLOW_HOME and one metadata database."""

    home: Path
    dags_folder: Path
    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # (address, port) of every listening socket seen on our process tree, sampled at each poll.
    listeners_seen: set[tuple[str, int]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "service-logs"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(COMMON_CONFIG)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
                "AIRFLOW__API__HOST": LOOPBACK,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                # Task runners report to the api-server's execution API: it must be this one.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                # One secret for every service, or tokens one issues the others reject.
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
                "AIRFLOW__CORE__FERNET_KEY": self._fernet_key,
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        env.update(self.extra_env)
        return env

    def __post_init__(self) -> None:
        from cryptography.fernet import Fernet

        self._jwt_secret = secrets.token_urlsafe(32)
        self._fernet_key = Fernet.generate_key().decode()

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a one-shot `airflow ...` CLI command against this installation."""
        return subprocess.run(
            executable(("airflow", *args), self.bin_dir),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> AirflowServices:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({ADMIN_USER: self.password}))
        migrated = subprocess.run(
            executable(INIT_COMMAND, self.bin_dir), env=self.env(), capture_output=True, text=True, timeout=600
        )
        if migrated.returncode != 0:
            raise RuntimeError(
                f"{' '.join(INIT_COMMAND)} failed:\n{migrated.stdout[-3000:]}\n{migrated.stderr[-3000:]}"
            )
        for name, command in SERVICE_COMMANDS.items():
            log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115  (held by the service until it stops)
            self.processes[name] = subprocess.Popen(
                executable(command, self.bin_dir),
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
            log.close()
        return self

    def wait_healthy(self, timeout: float = 240) -> dict[str, Any]:
        """Until /api/v2/monitor/health reports the database, scheduler, triggerer and
        dag-processor healthy (each one heartbeats into the metadata database)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                last = response.json() if response.ok else response.text
                if response.ok and all(
                    (last.get(part) or {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ):
                    return last
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(2)
        raise TimeoutError(f"Airflow services not healthy after {timeout}s: {last}\n{self.diagnostics()}")

    def check_alive(self) -> None:
        """Raise if a service died; also samples the listening sockets (see listeners_seen)."""
        self.record_listeners()
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"Airflow services exited: {dead}\n{self.diagnostics()}")

    def all_processes(self) -> list[psutil.Process]:
        """Every live process this harness started, with all their descendants."""
        found: dict[int, psutil.Process] = {}
        for popen in self.processes.values():
            try:
                root = psutil.Process(popen.pid)
                for proc in [root, *root.children(recursive=True)]:
                    found[proc.pid] = proc
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def record_listeners(self) -> None:
        """Add the listening TCP sockets our processes hold right now to listeners_seen."""
        pids = {p.pid for p in self.all_processes()}
        self.listeners_seen.update(
            (c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids
        )

    def diagnostics(self, chars: int = 4000) -> str:
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {log.name} (tail) ---\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM to every service's process group, then SIGKILL to whatever survives."""
        procs = self.all_processes()
        for popen in self.processes.values():
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGTERM)
        _terminate(procs, grace_s)
        for popen in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)


# --- REST API v2 client ----------------------------------------------------------------------


class ApiClient:
    """The parts of Airflow's REST API v2 the tests use, with a JWT from SimpleAuthManager."""

    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url
        self.session = requests.Session()
        response = self.session.post(
            f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        response.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=30, **kwargs)
        if not response.ok:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        """Until the dag-processor has parsed and serialized the DAG."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.session.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=30)
            if response.ok:
                return response.json()
            if time.monotonic() > deadline:
                errors = self.session.get(f"{self.base_url}/api/v2/importErrors", timeout=30).text
                raise TimeoutError(f"DAG {dag_id} not parsed after {timeout}s; import errors: {errors[:3000]}")
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, night: str, conf: dict[str, Any]) -> dict[str, Any]:
        """A manual run of a night: its partition key, as the UI's trigger form sets it (no logical date)."""
        body = {"logical_date": None, "partition_key": night, "conf": conf}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def wait_for_runs(
        self, dag_id: str, run_ids: Iterable[str], services: AirflowServices, timeout: float = 600
    ) -> dict[str, dict[str, Any]]:
        """Until every run has finished; fails with task states and logs when one did not succeed."""
        pending = set(run_ids)
        deadline = time.monotonic() + timeout
        finished: dict[str, dict[str, Any]] = {}
        while pending:
            services.check_alive()
            for run in self.dag_runs(dag_id):
                run_id = run["dag_run_id"]
                if run_id in pending and run["state"] in ("success", "failed"):
                    finished[run_id] = run
                    pending.discard(run_id)
                elif run_id in pending and "up_for_retry" in self.task_states(dag_id, run_id).values():
                    # The DAG retries after minutes: report the first failure now instead.
                    finished[run_id] = run
                    pending.discard(run_id)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(
                    f"runs {sorted(pending)} of {dag_id} unfinished after {timeout}s: "
                    + json.dumps({r: self.task_states(dag_id, r) for r in pending})
                )
            if pending:
                time.sleep(3)
        for run_id, run in finished.items():
            print(
                f"{dag_id} {run_id}: {run['state']} in {run.get('duration') or 0:.0f}s; tasks: "
                + ", ".join(
                    f"{ti['task_id']} {ti['state']} {ti.get('duration') or 0:.0f}s"
                    for ti in self.task_instances(dag_id, run_id)
                )
            )
        failed = {r: self.task_states(dag_id, r) for r, run in finished.items() if run["state"] != "success"}
        if failed:
            raise AssertionError(
                f"runs of {dag_id} failed: {json.dumps(failed)}\n{task_log_tails(services.home, dag_id)}"
            )
        return finished


def task_log_tails(home: Path, dag_id: str, chars: int = 3000) -> str:
    """The end of every task log of a DAG (for a failure message)."""
    logs = sorted((home / "logs").glob(f"dag_id={dag_id}/**/*.log"))
    return "\n".join(f"--- {log.relative_to(home)} ---\n{log.read_text(errors='replace')[-chars:]}" for log in logs)
