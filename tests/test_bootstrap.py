"""bootstrap/install_python_deps.sh: every pinned Spark-node package resolves as binary wheels for the
cluster's Python on manylinux x86_64 and aarch64 (so a bootstrap cannot fail on a missing wheel, and
Graviton can be the default), and the script itself installs the pinned file, binary-only, with retries
and timestamped logs, into the environment spark-env points at."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from fruits.emr_cluster import PYTHON_VERSION, ClusterSizing, build_job_flow
from fruits.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bootstrap" / "install_python_deps.sh"
SPARK_NODE_REQUIREMENTS = REPO / "requirements" / "spark-node.txt"
# EMR 7.x nodes run Amazon Linux 2023: glibc 2.34, so any manylinux wheel from 2014 (2.17) to 2.34 installs.
NODE_GLIBC_MINOR = 34
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}  # EMR/ClusterSizing architecture -> wheel machine


def _pins() -> dict[str, str]:
    pins = {}
    for line in SPARK_NODE_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{line}: the Spark-node file pins exact versions"
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def _platform_tags(machine: str) -> list[str]:
    """Every manylinux tag a glibc-2.34 node installs: PEP 600 tags down to the oldest glibc the
    architecture has wheels for (aarch64 started at 2.17), plus their legacy aliases (PEP 599/571/513)."""
    oldest = 17 if machine == "aarch64" else 5
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(NODE_GLIBC_MINOR, oldest - 1, -1)]
    return tags + [f"{alias}_{machine}" for minor, alias in legacy.items() if minor >= oldest]


def _require_pypi() -> None:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15).close()
    except OSError as error:
        reason = f"PyPI is unreachable ({error}): the wheel-availability check needs it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_every_pin_downloads_as_binary_wheels_for_the_cluster_python(architecture, tmp_path):
    _require_pypi()
    machine = MACHINES[architecture]
    platforms = _platform_tags(machine)
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    command = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
        "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", abi,
        *[arg for platform in platforms for arg in ("--platform", platform)],
        "--requirement", str(SPARK_NODE_REQUIREMENTS), "--dest", str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1700)
    assert result.returncode == 0, f"pip download failed for {machine}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    downloaded = {}
    for path in tmp_path.iterdir():
        assert path.suffix == ".whl", f"{path.name} is not a wheel"
        name, version, _, tags = parse_wheel_filename(path.name)
        assert any(
            tag.interpreter in (abi, "py3", "cp3", "py2.py3") or tag.abi == "abi3" for tag in tags
        ), f"{path.name} is not for Python {PYTHON_VERSION}"
        assert any(tag.platform == "any" or tag.platform in platforms for tag in tags), f"{path.name}: not {machine}"
        downloaded[name] = str(version)
    # Every pin, at its pinned version, is among them (plus its dependencies).
    for name, version in _pins().items():
        assert downloaded.get(name) == version, f"{name}=={version} missing for {machine}: {downloaded.get(name)}"
    assert downloaded.keys() - _pins().keys(), "the dependencies were resolved too"
    if architecture == "arm64":
        # What makes Graviton the default architecture safe.
        assert ClusterSizing().architecture == "arm64"


# --- the script itself, run for real against a local wheelhouse (no network) ----------------------------

def _write_wheel(wheelhouse: Path, name: str, version: str, code: str) -> None:
    """A minimal pure-Python wheel, built by hand (PEP 427) so the test needs no index."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(wheelhouse / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


@pytest.fixture
def node(tmp_path):
    """A fake node: a wheelhouse as the package index, a fake `aws` CLI serving a fake S3 whose first
    copy fails (as a flaky network would), and `python3.11` on PATH."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    _write_wheel(wheelhouse, "fruitsprobe", "1.0", "VALUE = 42\n")
    # Only a source distribution of this one: --only-binary must refuse it.
    (wheelhouse / "fruitssdist-1.0.tar.gz").write_bytes(b"not really a tarball")
    s3 = tmp_path / "s3"
    (s3 / "lake" / "code" / "v1" / "requirements").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(
        "#!/usr/bin/env bash\n"
        "# fake `aws s3 cp [--only-show-errors] s3://bucket/key dest`: fails on its first call\n"
        f'calls="{tmp_path}/aws-calls"; echo "$*" >> "$calls"\n'
        '[[ $(wc -l < "$calls") -ge 2 ]] || { echo "Connection reset by peer" >&2; exit 1; }\n'
        'src="${@: -2:1}"; dest="${@: -1}"\n'
        f'cp "{s3}/${{src#s3://}}" "$dest"\n'
    )
    (bin_dir / "aws").chmod(0o755)
    (bin_dir / f"python{PYTHON_VERSION}").symlink_to(sys.executable)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "FRUITS_BOOTSTRAP_ATTEMPTS": "3",
        "FRUITS_BOOTSTRAP_BACKOFF_SECONDS": "0",
    }
    return tmp_path, s3 / "lake" / "code" / "v1" / "requirements" / "spark-node.txt", env


def _bootstrap_args(tmp_path: Path) -> list[str]:
    """The arguments the cluster definition passes, with the environment moved under tmp."""
    request = build_job_flow(PipelineSettings(), name="t", code_uri="s3://lake/code/v1/", sizing=ClusterSizing())
    requirements_uri, python_version, env_dir = request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    return [requirements_uri, python_version, str(tmp_path / env_dir.lstrip("/"))]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600)


def test_script_installs_the_pinned_file_into_the_spark_python_with_retries_and_logs(node):
    tmp_path, requirements, env = node
    requirements.write_text("# pinned\nfruitsprobe==1.0\n")
    args = _bootstrap_args(tmp_path)
    result = _run(args, env)
    assert result.returncode == 0, result.stderr
    env_python = Path(args[2]) / "bin" / f"python{PYTHON_VERSION}"
    probe = subprocess.run([str(env_python), "-c", "import fruitsprobe; print(fruitsprobe.VALUE)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "42"
    log = result.stderr
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ install_python_deps: ", log, re.M)
    assert "copy s3://lake/code/v1/requirements/spark-node.txt (attempt 2/3)" in log  # the flaky copy, retried
    assert "1 pinned packages to install" in log
    assert "fruitsprobe==1.0" in log  # the installed set, logged
    # Rerun (EMR re-bootstraps a replaced node the same way): reuses the environment, still succeeds.
    again = _run(args, env)
    assert again.returncode == 0 and "created the environment" not in again.stderr


def test_a_package_without_a_wheel_fails_the_bootstrap_after_the_retries(node):
    tmp_path, requirements, env = node
    requirements.write_text("fruitssdist==1.0\n")
    result = _run(_bootstrap_args(tmp_path), env)
    assert result.returncode != 0
    assert "pip install (binary wheels only) failed 3 times, giving up" in result.stderr
    assert "fruitssdist" in result.stderr


def test_wrong_arguments_are_a_usage_error(node):
    tmp_path, _, env = node
    result = _run(["s3://lake/x.txt"], env)
    assert result.returncode != 0 and "usage:" in result.stderr
    result = _run(["s3://lake/x.txt", "three", str(tmp_path / "env")], env)
    assert result.returncode != 0 and "python version must look like 3.11" in result.stderr
