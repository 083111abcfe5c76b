"""Getting new photos and the jobs' code into the lake.

`upload_new_images` copies the images of a landing location (a local folder or an `s3://` prefix,
laid out `[<anything>/]<Label>/<file>`) to `raw/batch=<ds>/<Label>/<file>`:

* an image whose content (sha256) is already in ANOTHER batch is skipped: a photo is featurized
  once, so the PCA over all batches never sees it twice;
* an image already at its key with the same sha256 (object metadata on S3) is left as is: a rerun
  uploads nothing and the batch ends identical;
* a different image arriving under an existing name is stored as `<stem>-<sha8><ext>`: nothing is
  overwritten, nothing lost.
Each batch records what it holds in `raw/batch=<ds>/_uploads.json` (Spark ignores `_` files), written
last, so an interrupted upload is simply completed by the rerun.

`publish_code` copies `spark_jobs/`, `bootstrap/` and `requirements/spark-node.txt` to
`code/<version>/`, version = content hash of those files: a run always runs the code it was planned
with, and publishing the same code twice is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Protocol
from urllib.parse import urlparse

from fruits import lake

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
UPLOADS_MANIFEST = "_uploads.json"
CODE_MANIFEST = "_published.json"
# What the cluster runs, relative to the repository root (the version hashes exactly these).
CODE_SOURCES = ("spark_jobs", "bootstrap", "requirements/spark-node.txt")
# Entry points, not libraries: everything else in spark_jobs/ ships with --py-files.
JOB_SCRIPTS = ("featurize.py", "pca.py")
PROGRESS_EVERY = 200


def file_uri(path: Path) -> str:
    """`file://` + the plain absolute path. Not Path.as_uri(): its percent-encoding (labels have
    spaces: "Apple Braeburn") would reach Hadoop, which takes the string as a literal path."""
    return "file://" + str(Path(path).resolve())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Stores: the lake (and the landing) as "URI -> bytes", on S3 (boto3 client) or a local folder.
# ---------------------------------------------------------------------------------------------


class Store(Protocol):
    root: str

    def list_files(self, prefix_uri: str) -> Iterator[str]: ...
    def read(self, uri: str) -> bytes: ...
    def read_or_none(self, uri: str) -> bytes | None: ...
    def sha256_of(self, uri: str) -> str | None: ...
    def put(self, uri: str, data: bytes, sha256: str) -> None: ...
    def list_children(self, prefix_uri: str) -> list[str]: ...


class LocalStore:
    """A local folder as the lake (local target) or as the landing location."""

    def __init__(self, root: str | Path):
        self.path = self._path(str(root)).resolve()
        self.root = file_uri(self.path)

    @staticmethod
    def _path(uri: str) -> Path:
        return Path(uri.removeprefix("file://"))

    def list_files(self, prefix_uri: str) -> Iterator[str]:
        base = self._path(prefix_uri)
        for path in sorted(base.rglob("*")) if base.is_dir() else []:
            if path.is_file():
                yield file_uri(path)

    def read(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def read_or_none(self, uri: str) -> bytes | None:
        path = self._path(uri)
        return path.read_bytes() if path.is_file() else None

    def sha256_of(self, uri: str) -> str | None:
        data = self.read_or_none(uri)
        return None if data is None else sha256_bytes(data)

    def put(self, uri: str, data: bytes, sha256: str) -> None:
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: a reader never sees half a file.
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        partial.replace(path)

    def list_children(self, prefix_uri: str) -> list[str]:
        base = self._path(prefix_uri)
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


class S3Store:
    """An S3 bucket through a boto3 client (from the provider's S3Hook: credentials come from the
    `aws_default` connection). Every object is written encrypted with KMS."""

    def __init__(self, client: Any, bucket: str, kms_key_arn: str = ""):
        self.client = client
        self.bucket = bucket
        self.root = f"s3://{bucket}"
        self.kms_key_arn = kms_key_arn

    def _key(self, uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        if parsed.scheme != "s3":
            raise ValueError(f"not an s3:// URI: {uri!r}")
        return parsed.netloc, parsed.path.lstrip("/")

    def list_files(self, prefix_uri: str) -> Iterator[str]:
        bucket, prefix = self._key(prefix_uri)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield f"s3://{bucket}/{obj['Key']}"

    def read(self, uri: str) -> bytes:
        bucket, key = self._key(uri)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def read_or_none(self, uri: str) -> bytes | None:
        try:
            return self.read(uri)
        except self.client.exceptions.NoSuchKey:
            return None

    def sha256_of(self, uri: str) -> str | None:
        """The content hash recorded in the object's metadata when we uploaded it (no download)."""
        bucket, key = self._key(uri)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head.get("Metadata", {}).get("sha256") or ""

    def put(self, uri: str, data: bytes, sha256: str) -> None:
        bucket, key = self._key(uri)
        extra = {"ServerSideEncryption": "aws:kms"}
        if self.kms_key_arn:
            extra["SSEKMSKeyId"] = self.kms_key_arn
        self.client.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": sha256}, **extra)

    def list_children(self, prefix_uri: str) -> list[str]:
        bucket, prefix = self._key(prefix_uri)
        names = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandingImage:
    uri: str
    label: str
    name: str


def landing_images(store: Store, landing_uri: str) -> Iterator[LandingImage]:
    """Images under the landing location; the label is the image's folder name."""
    for uri in store.list_files(landing_uri):
        path = PurePosixPath(urlparse(uri).path)
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith((".", "_")):
            continue
        if path.parent == PurePosixPath(urlparse(landing_uri).path.rstrip("/") or "/"):
            raise ValueError(f"{uri}: images must sit in a <Label>/ folder under the landing location")
        yield LandingImage(uri=uri, label=path.parent.name, name=path.name)


def batch_manifest_uri(root: str, batch: str) -> str:
    return lake.raw_uri(root, batch) + UPLOADS_MANIFEST


def read_manifest(store: Store, root: str, batch: str) -> dict[str, str]:
    """`{raw key relative to the batch: sha256}` of one batch (empty if never uploaded)."""
    data = store.read_or_none(batch_manifest_uri(root, batch))
    return json.loads(data)["files"] if data else {}


def batch_partitions(store: Store, area_uri: str) -> list[str]:
    """Batches (`batch=<ds>` folders) present under an area of the lake, sorted."""
    batches = []
    for name in store.list_children(area_uri):
        if name.startswith("batch="):
            try:
                batches.append(lake.check_batch(name.removeprefix("batch=")))
            except ValueError:
                log.warning("ignoring %s%s: not a batch partition", area_uri, name)
    return sorted(batches)


def raw_batches(store: Store, root: str) -> list[str]:
    # lake.raw_uri names one batch; its parent is the raw area.
    return batch_partitions(store, lake.raw_uri(root, "2000-01-01").rsplit("batch=", 1)[0])


def _alternate_name(name: str, sha256: str) -> str:
    path = PurePosixPath(name)
    return f"{path.stem}-{sha256[:8]}{path.suffix}"


def upload_new_images(
    lake_store: Store,
    landing_store: Store,
    landing_uri: str,
    batch: str,
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Upload the landing's new images into `raw/batch=<batch>/`; returns the counts."""
    root = lake_store.root
    raw = lake.raw_uri(root, batch)
    own = read_manifest(lake_store, root, batch)
    elsewhere: dict[str, str] = {}
    for other in raw_batches(lake_store, root):
        if other != batch:
            elsewhere.update({sha: other for sha in read_manifest(lake_store, root, other).values()})

    counts = {"seen": 0, "uploaded": 0, "already_in_batch": 0, "in_other_batch": 0, "renamed": 0}
    files = dict(own)
    started = time.monotonic()
    for image in landing_images(landing_store, landing_uri):
        counts["seen"] += 1
        data = landing_store.read(image.uri)
        sha = sha256_bytes(data)
        if sha in elsewhere:
            counts["in_other_batch"] += 1
            continue
        key = f"{image.label}/{image.name}"
        existing = lake_store.sha256_of(raw + key)
        if existing is not None and existing != sha:
            key = f"{image.label}/{_alternate_name(image.name, sha)}"
            counts["renamed"] += 1
            existing = lake_store.sha256_of(raw + key)
        if existing == sha:
            counts["already_in_batch"] += 1
        else:
            if not dry_run:
                lake_store.put(raw + key, data, sha)
            counts["uploaded"] += 1
        files[key] = sha
        if counts["seen"] % PROGRESS_EVERY == 0:
            _log_progress(counts, started)
    if counts["seen"] == 0:
        log.warning("No images under %s: batch %s gets no new photos", landing_uri, batch)
    if not dry_run and (files != own or not own):
        manifest = json.dumps({"batch": batch, "files": dict(sorted(files.items()))}, indent=1).encode()
        lake_store.put(batch_manifest_uri(root, batch), manifest, sha256_bytes(manifest))
    _log_progress(counts, started)
    return {**counts, "batch": batch, "images_in_batch": len(files), "raw_uri": raw, "dry_run": dry_run}


def _log_progress(counts: dict[str, int], started: float) -> None:
    seconds = max(time.monotonic() - started, 1e-6)
    log.info(
        "landing: %d seen (%.1f/s), %d uploaded, %d already in this batch, %d already in another batch, %d renamed",
        counts["seen"], counts["seen"] / seconds, counts["uploaded"], counts["already_in_batch"],
        counts["in_other_batch"], counts["renamed"],
    )


# ---------------------------------------------------------------------------------------------
# Code
# ---------------------------------------------------------------------------------------------


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
        if name.startswith("spark_jobs/") and name.endswith(".py") and name.count("/") == 1
        and name.removeprefix("spark_jobs/") not in JOB_SCRIPTS
    )


def publish_code(lake_store: Store, repo_root: Path, *, dry_run: bool = False) -> dict[str, Any]:
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
