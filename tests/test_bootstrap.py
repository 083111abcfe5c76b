"""bootstrap/install_python_deps.sh: every package of the hash-locked Spark-node set downloads as binary wheels for the
cluster's Python on manylinux x86_64 and aarch64 (so a bootstrap cannot fail on a missing wheel, and
Graviton can be the default), and the script itself installs the pinned file, binary-only, with retries
and timestamped logs, into the environment spark-env points at."""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import re
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from fruits import release
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


@pytest.mark.slow  # pip against PyPI
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_every_pin_downloads_as_binary_wheels_for_the_cluster_python(architecture, tmp_path):
    _require_pypi()
    machine = MACHINES[architecture]
    platforms = _platform_tags(machine)
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        abi,
        *[arg for platform in platforms for arg in ("--platform", platform)],
        # The lock, not the loose pins: what the nodes install, stable when PyPI publishes newer dependencies.
        "--require-hashes",
        "--requirement",
        str(REPO / release.NODE_LOCK),
        "--dest",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1700, check=False)
    assert result.returncode == 0, (
        f"pip download failed for {machine}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )

    downloaded = {}
    locked = release.locked_hashes((REPO / release.NODE_LOCK).read_text())
    for path in tmp_path.iterdir():
        assert path.suffix == ".whl", f"{path.name} is not a wheel"
        name, version, _, tags = parse_wheel_filename(path.name)
        assert any(tag.interpreter in (abi, "py3", "cp3", "py2.py3") or tag.abi == "abi3" for tag in tags), (
            f"{path.name} is not for Python {PYTHON_VERSION}"
        )
        assert any(tag.platform == "any" or tag.platform in platforms for tag in tags), f"{path.name}: not {machine}"
        downloaded[name] = str(version)
        # ...and is byte-for-byte a wheel the lock allows (what the nodes will install, --require-hashes).
        assert _sha256(path) in locked.get(name, set()), f"{path.name}: sha256 not in {release.NODE_LOCK}"
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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def node(tmp_path):
    """A fake node with no network: a fake `aws` CLI serving a fake S3 (its first copy fails, as a flaky
    network would), the lake's wheelhouse for this machine, `python3.11` on PATH, and a pip index that
    does not exist (a node that tried PyPI would fail). Returns (tmp, lock path in fake S3, wheelhouse
    folder of this machine for a given lock, env)."""
    s3 = tmp_path / "s3"
    code = s3 / "lake" / "code"
    (code / "v1" / "requirements").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(
        "#!/usr/bin/env bash\n"
        "# fake `aws s3 cp [--only-show-errors] [--recursive] s3://bucket/key dest`: fails on its first call\n"
        f'calls="{tmp_path}/aws-calls"; echo "$*" >> "$calls"\n'
        '[[ $(wc -l < "$calls") -ge 2 ]] || { echo "Connection reset by peer" >&2; exit 1; }\n'
        'src="${@: -2:1}"; dest="${@: -1}"\n'
        f'local="{s3}/${{src#s3://}}"\n'
        'if [[ " $* " == *" --recursive "* ]]; then mkdir -p "$dest"; [[ -d $local ]] && cp -r "$local/." "$dest/"; '
        "exit 0; fi\n"
        'cp "$local" "$dest"\n'
    )
    (bin_dir / "aws").chmod(0o755)
    (bin_dir / f"python{PYTHON_VERSION}").symlink_to(sys.executable)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",  # nothing listens: the install must not need an index
        "FRUITS_BOOTSTRAP_ATTEMPTS": "3",
        "FRUITS_BOOTSTRAP_BACKOFF_SECONDS": "0",
    }
    lock = code / "v1" / "requirements" / "spark-node.lock"

    def wheelhouse_for(lock_text: str) -> Path:
        lock.write_text(lock_text)
        folder = code / "wheelhouse" / release.lock_digest(lock_text.encode()) / platform.machine()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    return tmp_path, lock, wheelhouse_for, env


def _bootstrap_args(tmp_path: Path) -> list[str]:
    """The arguments the cluster definition passes, with the environment moved under tmp."""
    request = build_job_flow(PipelineSettings(), name="t", code_uri="s3://lake/code/v1/", sizing=ClusterSizing())
    lock_uri, wheelhouse_root, python_version, env_dir = request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    return [lock_uri, wheelhouse_root, python_version, str(tmp_path / env_dir.lstrip("/"))]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow  # the bootstrap script's pip installs, as a subprocess
def test_script_installs_the_hash_locked_wheelhouse_without_any_index_with_retries_and_logs(node, tmp_path):
    tmp, _, wheelhouse_for, env = node
    build = tmp_path / "build"
    build.mkdir()
    _write_wheel(build, "fruitsprobe", "1.0", "VALUE = 42\n")
    wheel = build / "fruitsprobe-1.0-py3-none-any.whl"
    folder = wheelhouse_for(f"# locked\nfruitsprobe==1.0 \\\n    --hash=sha256:{_sha256(wheel)}\n")
    (folder / wheel.name).write_bytes(wheel.read_bytes())
    args = _bootstrap_args(tmp)
    assert args[1] == "s3://lake/code/wheelhouse/"
    result = _run(args, env)
    assert result.returncode == 0, result.stderr
    env_python = Path(args[3]) / "bin" / f"python{PYTHON_VERSION}"
    probe = subprocess.run(
        [str(env_python), "-c", "import fruitsprobe; print(fruitsprobe.VALUE)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.stdout.strip() == "42"
    log = result.stderr
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ install_python_deps: ", log, re.MULTILINE)
    assert "copy s3://lake/code/v1/requirements/spark-node.lock (attempt 2/3)" in log  # the flaky copy, retried
    assert f"1 locked packages, 1 wheels for {platform.machine()}" in log
    assert "fruitsprobe==1.0" in log  # the installed set, logged
    # Rerun (EMR re-bootstraps a replaced node the same way): reuses the environment, still succeeds.
    again = _run(args, env)
    assert again.returncode == 0 and "created the environment" not in again.stderr


@pytest.mark.slow  # the bootstrap script's pip installs, as a subprocess
def test_a_wheel_that_is_not_the_locked_one_fails_the_bootstrap(node, tmp_path):
    tmp, _, wheelhouse_for, env = node
    _write_wheel(tmp_path, "fruitsprobe", "1.0", "VALUE = 42\n")
    locked = _sha256(tmp_path / "fruitsprobe-1.0-py3-none-any.whl")
    folder = wheelhouse_for(f"fruitsprobe==1.0 --hash=sha256:{locked}\n")
    _write_wheel(folder, "fruitsprobe", "1.0", "VALUE = 666  # tampered\n")
    result = _run(_bootstrap_args(tmp), env)
    assert result.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stderr and "pip install --require-hashes" in result.stderr


@pytest.mark.slow  # the bootstrap script's pip installs, as a subprocess
def test_a_package_missing_from_the_wheelhouse_fails_without_reaching_an_index(node, tmp_path):
    tmp, _, wheelhouse_for, env = node
    folder = wheelhouse_for(f"fruitsmissing==1.0 --hash=sha256:{'0' * 64}\n")
    (folder / "fruitssdist-1.0.tar.gz").write_bytes(b"not really a tarball")  # not a wheel: not enough
    result = _run(_bootstrap_args(tmp), env)
    assert result.returncode != 0 and "no wheels at s3://lake/code/wheelhouse/" in result.stderr
    _write_wheel(folder, "fruitsother", "1.0", "")
    result = _run(_bootstrap_args(tmp), env)
    assert result.returncode != 0 and "fruitsmissing" in result.stderr
    assert "127.0.0.1:9" not in result.stderr  # pip never tried the (unreachable) index


def test_wrong_arguments_are_a_usage_error(node):
    tmp_path, _, _, env = node
    result = _run(["s3://lake/x.lock"], env)
    assert result.returncode != 0 and "usage:" in result.stderr
    result = _run(["s3://lake/x.lock", "s3://lake/code/wheelhouse/", "three", str(tmp_path / "env")], env)
    assert result.returncode != 0 and "python version must look like 3.11" in result.stderr


def test_the_lock_pins_every_requirement_with_hashes_for_both_machines():
    """requirements/spark-node.lock is spark-node.txt resolved (make lock-node): same versions, every
    package hashed, and it is what the cluster installs and the code publishes."""
    lock = (REPO / release.NODE_LOCK).read_text()
    hashes = release.locked_hashes(lock)
    versions = {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", lock, re.MULTILINE)}
    for name, version in _pins().items():
        assert versions.get(name) == version, f"{name}=={version} not in the lock ({versions.get(name)})"
    assert set(hashes) > set(_pins()), "the dependencies are locked too"
    assert all(len(h) == 64 for digests in hashes.values() for h in digests) and all(hashes.values())
    # Compiled packages carry one wheel per machine (x86_64 and aarch64): at least two hashes.
    assert len(hashes["numpy"]) >= 2 and len(hashes["tensorflow"]) >= 2
    assert release.NODE_LOCK in release.CODE_SOURCES and release.NODE_MACHINES == ("x86_64", "aarch64")
