"""docker-compose.yaml and its Dockerfile, checked without a Docker engine (none runs here).

`docker-compose config` (Debian's docker-compose) parses, interpolates and validates the file the
way `docker compose up` would; the tests read its resolved output and hold it to the end-to-end
test's single source of truth (tests/airflow_services.py): same commands, same shared settings.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from airflow_services import COMMON_CONFIG, INIT_COMMAND, LOOPBACK, SERVICE_COMMANDS, require
from conftest import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
# Compose service name of each service in the harness' table.
COMPOSE_NAME = {name: f"airflow-{name}" for name in SERVICE_COMMANDS} | {"init": "airflow-init"}
SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "AIRFLOW_JWT_SECRET": "jwt-secret", "AIRFLOW_FERNET_KEY": "fernet-key"}


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    require(False, "docker-compose is not installed (Debian package docker-compose; `make setup` installs it)")


def run_config(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith(("AIRFLOW", "FRUITS_"))}
    env.update(env_overrides)
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    result = run_config(SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def airflow_services(config: dict) -> dict[str, dict]:
    return {name: svc for name, svc in config["services"].items() if name.startswith("airflow-")}


def test_compose_defines_postgres_and_the_four_airflow_services(config):
    assert set(config["services"]) == {"postgres", *COMPOSE_NAME.values()}
    assert config["services"]["postgres"]["image"].startswith("postgres:")
    # One image, built from this repository's Dockerfile, for every Airflow service.
    images = {(svc["image"], Path(svc["build"]["context"])) for svc in airflow_services(config).values()}
    assert len(images) == 1 and next(iter(images))[1] == REPO_ROOT


def test_services_run_the_commands_the_end_to_end_test_starts(config):
    services = config["services"]
    assert services[COMPOSE_NAME["init"]]["command"] == list(INIT_COMMAND)
    for name, command in SERVICE_COMMANDS.items():
        assert services[COMPOSE_NAME[name]]["command"] == list(command), name
    # The long-running services start only once the database is migrated.
    for name in SERVICE_COMMANDS:
        assert services[COMPOSE_NAME[name]]["depends_on"] == {
            "airflow-init": {"condition": "service_completed_successfully"}
        }
    assert services["airflow-init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_every_airflow_service_has_the_settings_the_test_uses(config):
    for name, svc in airflow_services(config).items():
        env = svc["environment"]
        assert {k: env.get(k) for k in COMMON_CONFIG} == COMMON_CONFIG, name
        # LocalExecutor over the PostgreSQL service, task runners reporting to the api-server.
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
            f"postgresql+psycopg2://airflow:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/airflow"
        )
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            f"http://airflow-api-server:{env['AIRFLOW__API__PORT']}/execution/"
        )
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == SECRETS["AIRFLOW_JWT_SECRET"]


def test_secrets_have_no_default(config):
    for missing in SECRETS:
        result = run_config({k: v for k, v in SECRETS.items() if k != missing})
        assert result.returncode != 0 and missing in result.stderr, (missing, result.stderr)


def test_nothing_is_published_beyond_loopback(config):
    published = []
    for name, svc in config["services"].items():
        for port in svc.get("ports", []):
            # docker-compose 1.x prints "IP:HOST:CONTAINER/proto", Compose v2 a mapping.
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.rsplit(":", 2)[0]
            published.append((name, host_ip))
    assert published == [("airflow-api-server", LOOPBACK)]
    api = config["services"]["airflow-api-server"]
    assert api["healthcheck"]["test"][-1].count(f"{LOOPBACK}:{api['environment']['AIRFLOW__API__PORT']}") == 1


def mounts(svc: dict) -> dict[str, str]:
    """container path -> host source of a service's volumes (short or long syntax)."""
    found = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


def dockerfile_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", DOCKERFILE.read_text())
    assert match, f"Dockerfile sets no {name}"
    return match.group(1)


def test_code_is_mounted_where_airflow_looks_for_it(config):
    home = dockerfile_env("AIRFLOW_HOME")
    for name, svc in airflow_services(config).items():
        volumes = mounts(svc)
        # Airflow's default dags/ and plugins/ folders under AIRFLOW_HOME; the code publisher
        # finds spark_jobs/ (+ bootstrap/, requirements/) beside plugins/, as in the repository.
        for folder in ("dags", "plugins", "spark_jobs", "bootstrap", "requirements"):
            assert Path(volumes[f"{home}/{folder}"]) == REPO_ROOT / folder, (name, folder)
        # The scheduler writes task logs the api-server reads: one shared named volume.
        assert volumes[f"{home}/logs"] == "airflow-logs"
        env = svc["environment"]
        assert volumes[env["AIRFLOW_VAR_FRUITS_LOCAL_LAKE"]] == str(REPO_ROOT / "lake")
        assert env["AIRFLOW_VAR_FRUITS_LANDING"] in volumes
        assert f"{env['KERAS_HOME']}/models" in volumes


def test_dockerfile_carries_java_and_the_locked_dependencies():
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM python:(\d+\.\d+)-", text, re.M)
    assert base and base.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"
    # The same Java as the set-up installs for Spark (Makefile's DEBIAN_PACKAGES).
    makefile = (REPO_ROOT / "Makefile").read_text()
    java = re.search(r"openjdk-\d+-jre-headless", makefile).group(0)
    assert java in text
    # Pinned requirements, every version constrained by the lock the tests run with.
    install = re.search(r"pip install (.*?)(?:&&|$)", text.replace("\\\n", " "), re.M).group(1).split()
    files = {flag: {v for f, v in zip(install, install[1:]) if f == flag} for flag in ("-c", "-r")}
    assert files["-c"] == {"/tmp/requirements/dev.lock"}
    assert files["-r"] == {"/tmp/requirements/airflow.txt", "/tmp/requirements/spark-node.txt"}
    named = {word.lower() for word in install if not word.startswith("-") and word not in set.union(*files.values())}
    lock = {
        line.split("==")[0].lower()
        for line in (REPO_ROOT / "requirements/dev.lock").read_text().splitlines()
        if "==" in line
    }
    assert named and named <= lock, f"not in requirements/dev.lock (run `make lock`): {sorted(named - lock)}"


def test_dockerignore_keeps_local_state_out_but_not_what_the_build_copies():
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "lake", "test-artifacts", ".git"} <= ignored
    copied = re.findall(r"^COPY (\S+)", DOCKERFILE.read_text(), re.M)
    assert copied and not {c.rstrip("/") for c in copied} & ignored


def test_the_auth_manager_is_labelled_for_a_laptop_only():
    text = COMPOSE_FILE.read_text()
    line = text.index("AIRFLOW__CORE__AUTH_MANAGER:")
    assert "FOR A LAPTOP ONLY" in text[max(0, line - 300) : line] and "docs/operations.md" in text[line - 300 : line]
