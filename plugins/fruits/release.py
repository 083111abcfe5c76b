"""What the cluster runs, published into the lake so the nodes need nothing but S3.

- `publish_code(store, repo_root)`: `spark_jobs/`, `bootstrap/` and the Spark-node requirements to
  `code/<version>/`, version = content hash of those files: a run always runs the code it was planned
  with, and publishing the same code twice is a no-op (`_published.json`, written last).
- The node environment is a hash-locked wheel set: `requirements/spark-node.lock` (`name==version
  --hash=sha256:...` for every wheel of the x86_64 AND aarch64 sets, written by `lock_requirements`,
  `make lock-node`) and its wheels under `code/wheelhouse/<lock digest>/<machine>/` (`make wheelhouse`
  downloads them, `publish_wheelhouse` uploads them once per lock). The bootstrap copies the wheelhouse
  of its machine and installs with `--require-hashes --no-index`: no node ever reaches PyPI, and a
  wheel that is not byte-for-byte the locked one is refused.
- The default weights are read from the lake (`models/keras/<file>`) and checked against the sha256
  recorded beside them (`<file>.sha256`, written after the weights by `publish_weights`):
  `default_weights(store, root)` gives featurize's `--weights` and `--weights-sha256`. The command also
  converts them once to the LiteRT flatbuffer featurize broadcasts (`models/litert/<weights sha256>.tflite`
  and its `.sha256`, last): every run then reads it (`--model-payload`) instead of converting again.

    python -m fruits.release lock                       # requirements/spark-node.txt -> .lock (PyPI metadata)
    python -m fruits.release download --dest build/wheelhouse          # both machines' wheels, hash-checked
    python -m fruits.release publish-wheelhouse --lake s3://<bucket> --wheels build/wheelhouse
    python -m fruits.release publish-weights --lake s3://<bucket> --file <weights .h5>
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fruits import lake, storage
from fruits.emr_cluster import PYTHON_VERSION

log = logging.getLogger(__name__)

CODE_MANIFEST = "_published.json"
# What the cluster runs, relative to the repository root (the version hashes exactly these).
CODE_SOURCES = ("spark_jobs", "bootstrap", "requirements/spark-node.txt", "requirements/spark-node.lock")
# Entry points, not libraries: everything else in spark_jobs/ ships with --py-files.
JOB_SCRIPTS = ("featurize.py", "ingest.py", "pca.py")

NODE_REQUIREMENTS = "requirements/spark-node.txt"
NODE_LOCK = "requirements/spark-node.lock"
# The node's Python and machines: EMR 7 on Amazon Linux 2023 (glibc 2.34), Graviton and x86_64.
NODE_PYTHON = PYTHON_VERSION
NODE_MACHINES = ("x86_64", "aarch64")
NODE_GLIBC_MINOR = 34
WHEELHOUSE_MANIFEST = "_published.json"
# Keras' file name for MobileNetV2's ImageNet weights without the top (featurize's default model).
DEFAULT_WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
SHA256_SUFFIX = ".sha256"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------- code


def code_files(repo_root: Path) -> dict[str, bytes]:
    """`{path relative to the repo: bytes}` of everything the cluster runs."""
    files: dict[str, bytes] = {}
    for source in CODE_SOURCES:
        path = repo_root / source
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                files[file.relative_to(repo_root).as_posix()] = file.read_bytes()
    if not any(name.startswith("spark_jobs/") for name in files):
        raise FileNotFoundError(f"no spark_jobs/ under {repo_root}: nothing to publish")
    return files


def code_version(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def helper_modules(files: dict[str, bytes]) -> list[str]:
    """spark_jobs/ modules the entry scripts import (shipped with --py-files)."""
    return sorted(
        name.removeprefix("spark_jobs/")
        for name in files
        if name.startswith("spark_jobs/")
        and name.endswith(".py")
        and name.count("/") == 1
        and name.removeprefix("spark_jobs/") not in JOB_SCRIPTS
    )


def publish_code(lake_store: Any, repo_root: Path, *, dry_run: bool = False) -> dict[str, Any]:
    """Copy the cluster's code to `code/<version>/` once; returns version, URI and --py-files names."""
    files = code_files(repo_root)
    version = code_version(files)
    code_uri = lake.code_uri(lake_store.root, version)
    release = {"version": version, "code_uri": code_uri, "helper_modules": helper_modules(files)}
    manifest_uri = code_uri + CODE_MANIFEST
    if dry_run or lake_store.read_or_none(manifest_uri) is not None:
        log.info("code %s already published at %s", version, code_uri)
        return {**release, "published": False}
    for name, data in files.items():
        lake_store.put(code_uri + name, data, sha256_bytes(data))
    # The manifest goes last: its presence means every file above is there.
    manifest = json.dumps({"version": version, "files": {n: sha256_bytes(d) for n, d in files.items()}}, indent=1)
    lake_store.put(manifest_uri, manifest.encode(), sha256_bytes(manifest.encode()))
    log.info("published %d code files as version %s at %s", len(files), version, code_uri)
    return {**release, "published": True}


# ------------------------------------------------------------------------------- the node wheelhouse


def lock_digest(lock: bytes) -> str:
    """The wheelhouse's name: the lock's content hash (the bootstrap computes the same with sha256sum)."""
    return sha256_bytes(lock)[:16]


def wheelhouse_uri(root: str, lock: bytes, machine: str | None = None) -> str:
    base = lake.area_uri(root, "code") + f"wheelhouse/{lock_digest(lock)}/"
    return base + f"{machine}/" if machine else base


def platform_tags(machine: str) -> list[str]:
    """Every manylinux tag a glibc-2.34 node installs, newest first (PEP 600, then the legacy aliases)."""
    oldest = 17 if machine == "aarch64" else 5
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(NODE_GLIBC_MINOR, oldest - 1, -1)]
    return tags + [f"{alias}_{machine}" for minor, alias in legacy.items() if minor >= oldest]


def _target_args(machine: str) -> list[str]:
    abi = "cp" + NODE_PYTHON.replace(".", "")
    return [
        "--only-binary=:all:",
        "--python-version",
        NODE_PYTHON,
        "--implementation",
        "cp",
        "--abi",
        abi,
        *[arg for tag in platform_tags(machine) for arg in ("--platform", tag)],
    ]


def resolve(requirements: Path, machine: str) -> dict[str, tuple[str, str, str]]:
    """{name: (version, wheel file name, sha256)} pip resolves for the node's Python on `machine`, from
    the index's metadata (PEP 658: no wheel is downloaded)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(Path(scratch) / "t"),
                "--report",
                str(report),
                *_target_args(machine),
                "--requirement",
                str(requirements),
            ],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    resolved = {}
    for item in installs:
        url = item["download_info"]["url"]
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        resolved[item["metadata"]["name"].lower()] = (item["metadata"]["version"], url.rsplit("/", 1)[1], digest)
    return resolved


def lock_text(resolved: dict[str, dict[str, tuple[str, str, str]]], source: str) -> str:
    """The lock file: every package of every machine, pinned, with the hash of each machine's wheel; a
    package only one machine needs carries a platform_machine marker."""
    names = sorted({name for per_machine in resolved.values() for name in per_machine})
    lines = [
        f"# Generated from {source} by `python -m fruits.release lock` (make lock-node): do not edit.",
        f"# Python {NODE_PYTHON}, manylinux glibc 2.{NODE_GLIBC_MINOR}, machines: {', '.join(resolved)}.",
        "# Installed on the EMR nodes with pip --require-hashes --no-index from the lake's wheelhouse.",
    ]
    for name in names:
        present = {m: r[name] for m, r in resolved.items() if name in r}
        versions = {version for version, _, _ in present.values()}
        if len(versions) != 1:
            raise ValueError(f"{name} resolves to different versions per machine: {present}")
        marker = (
            ""
            if len(present) == len(resolved)
            else " ; " + " or ".join(f"platform_machine == '{m}'" for m in sorted(present))
        )
        hashes = sorted({digest for _, _, digest in present.values()})
        lines.append(f"{name}=={versions.pop()}{marker} \\")
        lines += [f"    --hash=sha256:{digest} \\" for digest in hashes[:-1]] + [f"    --hash=sha256:{hashes[-1]}"]
    return "\n".join(lines) + "\n"


def locked_hashes(lock: str) -> dict[str, set[str]]:
    """{package name (PEP 503 normalized): its allowed sha256s} of a lock file."""
    hashes: dict[str, set[str]] = {}
    name = ""
    for line in lock.splitlines():
        line = line.strip().rstrip("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash=sha256:"):
            hashes[name].add(line.removeprefix("--hash=sha256:"))
        else:
            name = re.sub(r"[-_.]+", "-", line.split("==", 1)[0].strip()).lower()
            hashes[name] = set()
    return hashes


def download_wheelhouse(lock: Path, dest: Path) -> dict[str, list[str]]:
    """Both machines' wheels, each checked by pip against the lock's hashes: {machine: file names}."""
    files = {}
    for machine in NODE_MACHINES:
        folder = dest / machine
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--quiet",
                "--require-hashes",
                "--no-deps",
                *_target_args(machine),
                "--requirement",
                str(lock),
                "--dest",
                str(folder),
            ],
            check=True,
        )
        files[machine] = sorted(p.name for p in folder.glob("*.whl"))
    return files


def publish_wheelhouse(lake_store: Any, root: str, lock: bytes, wheels: Path) -> dict[str, Any]:
    """Upload `<wheels>/<machine>/*.whl` to `code/wheelhouse/<lock digest>/<machine>/` once (manifest last).
    Refuses a wheel whose hash the lock does not list."""
    base = wheelhouse_uri(root, lock)
    if lake_store.read_or_none(base + WHEELHOUSE_MANIFEST) is not None:
        return {"wheelhouse_uri": base, "published": False}
    allowed = set().union(*locked_hashes(lock.decode()).values())
    manifest: dict[str, dict[str, str]] = {}
    for machine in NODE_MACHINES:
        for wheel in sorted((wheels / machine).glob("*.whl")):
            data = wheel.read_bytes()
            digest = sha256_bytes(data)
            if digest not in allowed:
                raise ValueError(f"{wheel} (sha256 {digest}) is not in the lock: refusing to publish it")
            lake_store.put(base + f"{machine}/{wheel.name}", data, digest)
            manifest.setdefault(machine, {})[wheel.name] = digest
    missing = [m for m in NODE_MACHINES if m not in manifest]
    if missing:
        raise FileNotFoundError(f"no wheels for {missing} under {wheels}: run `make wheelhouse` first")
    body = json.dumps({"lock_sha256": sha256_bytes(lock), "wheels": manifest}, indent=1).encode()
    lake_store.put(base + WHEELHOUSE_MANIFEST, body, sha256_bytes(body))
    return {"wheelhouse_uri": base, "published": True, "wheels": {m: len(w) for m, w in manifest.items()}}


def wheelhouse_published(lake_store: Any, root: str, lock: bytes) -> bool:
    return lake_store.read_or_none(wheelhouse_uri(root, lock) + WHEELHOUSE_MANIFEST) is not None


def require_wheelhouse(lake_store: Any, root: str, repo_root: Path) -> str:
    """Plan-time check (before any cluster): the wheelhouse of this repository's lock is in the lake,
    else FileNotFoundError naming the commands. Returns its URI."""
    lock = (repo_root / NODE_LOCK).read_bytes()
    if not wheelhouse_published(lake_store, root, lock):
        raise FileNotFoundError(
            f"no node wheelhouse at {wheelhouse_uri(root, lock)}: the cluster cannot install its packages "
            f"(no internet). Run `make wheelhouse` then `python -m fruits.release publish-wheelhouse --lake {root}`"
        )
    return wheelhouse_uri(root, lock)


# ------------------------------------------------------------------------------------------ weights


def _put_recorded(lake_store: Any, uri: str, data: bytes) -> str:
    """`data` at `uri`, then its sha256 beside it (`<uri>.sha256`, last: present means complete)."""
    digest = sha256_bytes(data)
    lake_store.put(uri, data, digest)
    lake_store.put(uri + SHA256_SUFFIX, (digest + "\n").encode(), sha256_bytes((digest + "\n").encode()))
    return digest


def _recorded_sha256(lake_store: Any, uri: str) -> str | None:
    recorded = lake_store.read_or_none(uri + SHA256_SUFFIX)
    if recorded is None:
        return None
    digest = recorded.decode().strip()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{uri + SHA256_SUFFIX} does not hold a sha256: {digest[:80]!r}")
    return digest


def convert_to_litert(weights: bytes, name: str = DEFAULT_WEIGHTS_FILE) -> bytes:
    """The weights converted by featurize's own converter (TensorFlow on this machine, once per weights)."""
    import featurize  # spark_jobs/, on the path by fruits/__init__.py

    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / name  # Keras picks the weights format from the file name
        local.write_bytes(weights)
        return featurize.litert_payload_of(str(local))


def publish_weights(
    lake_store: Any, root: str, weights: bytes, name: str = DEFAULT_WEIGHTS_FILE, *, payload: bytes | None = None
) -> dict[str, str | None]:
    """The weights to `models/keras/<name>` and their sha256 beside them; with `payload` (their LiteRT
    conversion, `convert_to_litert`), that flatbuffer to `models/litert/<weights sha256>.tflite` too."""
    uri = lake.models_uri(root) + name
    digest = sha256_bytes(weights)
    published: dict[str, str | None] = {"model_payload": None, "model_payload_sha256": None}
    if payload is not None:  # before the weights' record: a reader that sees the weights sees their payload
        payload_uri = lake.litert_payload_uri(root, digest)
        published = {
            "model_payload": payload_uri,
            "model_payload_sha256": _put_recorded(lake_store, payload_uri, payload),
        }
    _put_recorded(lake_store, uri, weights)
    return {"weights": uri, "weights_sha256": digest, **published}


def default_weights(lake_store: Any, root: str, name: str = DEFAULT_WEIGHTS_FILE) -> dict[str, str | None]:
    """featurize's `--weights`, `--weights-sha256` and, when published, `--model-payload` with its sha256:
    the lake's copies and their recorded hashes. Raises FileNotFoundError (a plan-time refusal) when the
    weights were never published."""
    uri = lake.models_uri(root) + name
    digest = _recorded_sha256(lake_store, uri)
    if digest is None:
        raise FileNotFoundError(
            f"no recorded sha256 at {uri + SHA256_SUFFIX}: publish the weights with "
            "`python -m fruits.release publish-weights --lake <root> --file <weights>`"
        )
    payload_uri = lake.litert_payload_uri(root, digest)
    payload_digest = _recorded_sha256(lake_store, payload_uri)
    return {
        "weights": uri,
        "weights_sha256": digest,
        "model_payload": payload_uri if payload_digest else None,
        "model_payload_sha256": payload_digest,
    }


# --------------------------------------------------------------------------------------------- CLI


def _store(root: str) -> Any:

    if root.startswith("s3://"):
        import boto3

        return storage.S3Store(boto3.client("s3"), root.removeprefix("s3://").split("/")[0])
    return storage.LocalStore(root.removeprefix("file://"))


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(prog="python -m fruits.release", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "lock": f"resolve {NODE_REQUIREMENTS} for both machines into {NODE_LOCK} (PyPI metadata)",
        "download": "download the locked wheels of both machines, hash-checked",
        "publish-wheelhouse": "upload the wheels under code/wheelhouse/, once per lock",
        "publish-weights": "upload the default weights, their LiteRT conversion and their sha256s under models/",
    }
    commands.add_parser("lock", help=helps["lock"], description=helps["lock"])
    download = commands.add_parser("download", help=helps["download"], description=helps["download"])
    download.add_argument(
        "--dest",
        type=Path,
        default=repo / "build" / "wheelhouse",
        help="where the wheels go, one folder per machine (default: %(default)s)",
    )
    wheelhouse = commands.add_parser(
        "publish-wheelhouse", help=helps["publish-wheelhouse"], description=helps["publish-wheelhouse"]
    )
    wheelhouse.add_argument("--lake", required=True, help="the lake root: s3://<bucket> or a local folder")
    wheelhouse.add_argument(
        "--wheels",
        type=Path,
        default=repo / "build" / "wheelhouse",
        help="the downloaded wheelhouse (default: %(default)s)",
    )
    weights = commands.add_parser(
        "publish-weights", help=helps["publish-weights"], description=helps["publish-weights"]
    )
    weights.add_argument("--lake", required=True, help="the lake root: s3://<bucket> or a local folder")
    weights.add_argument("--file", type=Path, required=True, help="the MobileNetV2 weights file (.h5)")
    weights.add_argument(
        "--no-payload", action="store_true", help="skip the LiteRT conversion (every run then converts the weights)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lock_path = repo / NODE_LOCK
    if args.command == "lock":
        resolved = {machine: resolve(repo / NODE_REQUIREMENTS, machine) for machine in NODE_MACHINES}
        lock_path.write_text(lock_text(resolved, NODE_REQUIREMENTS))
        print(f"{lock_path}: {len(locked_hashes(lock_path.read_text()))} packages")
    elif args.command == "download":
        print(json.dumps({m: len(f) for m, f in download_wheelhouse(lock_path, args.dest).items()}))
    elif args.command == "publish-wheelhouse":
        print(json.dumps(publish_wheelhouse(_store(args.lake), args.lake, lock_path.read_bytes(), args.wheels)))
    else:
        data = args.file.read_bytes()
        payload = None if args.no_payload else convert_to_litert(data, args.file.name)
        print(json.dumps(publish_weights(_store(args.lake), args.lake, data, args.file.name, payload=payload)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
