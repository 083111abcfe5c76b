"""Getting new photos and the jobs' code into the lake.

`upload_new_images` bundles the images of a landing location (a local folder or an `s3://` prefix,
laid out `[<anything>/][<Split>/]<Label>/<file>`) into Parquet objects
`raw/batch=<ds>/bundle-<16 hex>.parquet`, one row per photo with the columns of Spark's `binaryFile`
source (`path, modificationTime, length, content`) plus `sha256`. A photo's key in the batch is
`<Split>/<Label>/<file>` when a `Training` or `Test` folder sits above its label folder, else
`<Label>/<file>`; its `path` is `<raw batch uri><key>`, the URI it would have had as its own object,
so everything downstream (label, split, erasure by path, the CSV) reads it the same way.

* an image whose content (sha256) is already in ANOTHER batch is skipped: a photo is featurized
  once, so the PCA over all batches never sees it twice;
* an image already recorded at its key with the same sha256 is left as is: a rerun uploads nothing,
  writes nothing, and the batch ends identical;
* a different image arriving under an existing key is stored as `<stem>-<sha8><ext>`: nothing is
  overwritten, nothing lost.
Each batch records what it holds in `raw/batch=<ds>/_uploads.json` (Spark ignores `_` files):
`files: {key: sha256}` and `bundles: {bundle file name: [keys]}`, written last. A bundle the manifest
does not name is the leftover of an interrupted upload: the next upload of the batch deletes it and
bundles its photos again (under the same name: it hashes its members).

`publish_code` (fruits.release, re-exported here) copies the cluster's code to `code/<version>/`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Protocol
from urllib.parse import urlparse


from fruits import lake

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
UPLOADS_MANIFEST = "_uploads.json"
# Photos travel in bundles, not one object each: S3 bills PUT and GET per request (one object per
# photo cost ~6.5 USD of requests per million photos, 13x the whole 0.50 USD target), and the
# lifecycle's archive classes bill at least 128 KB per object, more than most photos weigh. A bundle
# stays small enough that erasing one photo (which rewrites its bundle) stays cheap, and far below
# one PutObject's 5 GB limit and the Airflow worker's memory (it holds one bundle, and its Parquet
# encoding, at a time). Whichever limit comes first closes the bundle.
BUNDLE_MAX_PHOTOS = 1000
BUNDLE_MAX_BYTES = 128 * 1024 * 1024  # of photo content
# Spark splits a Parquet file only between row groups: one group per bundle would make each bundle
# one task. 64 photos per group let featurize spread a bundle over up to 16 tasks (cores), and keep
# a reader's batch (which never crosses a row group) to 64 photos of memory.
BUNDLE_ROW_GROUP_PHOTOS = 64
BUNDLE_PREFIX, BUNDLE_SUFFIX = "bundle-", ".parquet"
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
    def put(self, uri: str, data: bytes, sha256: str) -> None: ...
    def delete(self, uri: str) -> None: ...
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

    def put(self, uri: str, data: bytes, sha256: str) -> None:
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: a reader never sees half a file.
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        partial.replace(path)

    def delete(self, uri: str) -> None:
        self._path(uri).unlink()

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

    def put(self, uri: str, data: bytes, sha256: str) -> None:
        bucket, key = self._key(uri)
        extra = {"ServerSideEncryption": "aws:kms"}
        if self.kms_key_arn:
            extra["SSEKMSKeyId"] = self.kms_key_arn
        self.client.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": sha256}, **extra)

    def delete(self, uri: str) -> None:
        """Every version and delete marker of the object: on a versioned bucket, a plain delete would
        keep the photos it held in the bucket's history."""
        self._delete(uri, self._versions(uri))

    def _versions(self, uri: str) -> list[dict[str, Any]]:
        bucket, key = self._key(uri)
        found = []
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if item["Key"] == key:  # the prefix also matches longer keys
                    found.append(item)
        return found

    def _delete(self, uri: str, versions: list[dict[str, Any]]) -> None:
        bucket, _ = self._key(uri)
        objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]
        for start in range(0, len(objects), 1000):  # DeleteObjects takes 1,000 keys at most
            answer = self.client.delete_objects(Bucket=bucket, Delete={"Objects": objects[start:start + 1000], "Quiet": True})
            if answer.get("Errors"):
                raise RuntimeError(f"could not delete every version of {uri}: {answer['Errors']}")

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
    split: str | None = None  # Training / Test when a folder of that name sits above the label folder

    @property
    def key(self) -> str:
        """Where the photo sits in its batch: `[<Split>/]<Label>/<file>`."""
        return "/".join(part for part in (self.split, self.label, self.name) if part)


def landing_images(store: Store, landing_uri: str) -> Iterator[LandingImage]:
    """Images under the landing location; the label is the image's folder name, the split the
    nearest folder above it named like one of lake.SPLITS (within the landing location)."""
    landing = PurePosixPath(urlparse(landing_uri).path.rstrip("/") or "/")
    for uri in store.list_files(landing_uri):
        path = PurePosixPath(urlparse(uri).path)
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith((".", "_")):
            continue
        if path.parent == landing:
            raise ValueError(f"{uri}: images must sit in a <Label>/ folder under the landing location")
        above_label = path.parent.relative_to(landing).parts[:-1]
        split = next((folder for folder in reversed(above_label) if folder in lake.SPLITS), None)
        yield LandingImage(uri=uri, label=path.parent.name, name=path.name, split=split)


def batch_manifest_uri(root: str, batch: str) -> str:
    return lake.raw_uri(root, batch) + UPLOADS_MANIFEST


@dataclass
class BatchManifest:
    """What `_uploads.json` records: `files` {key in the batch: sha256}, `bundles` {bundle file name:
    its keys}. A key in no bundle is a photo stored as its own object (lakes from before bundles)."""

    files: dict[str, str]
    bundles: dict[str, list[str]]

    def to_json(self, batch: str) -> bytes:
        return json.dumps({"batch": batch, "files": dict(sorted(self.files.items())),
                           "bundles": dict(sorted(self.bundles.items()))}, indent=1).encode()


def read_batch_manifest(store: Store, root: str, batch: str) -> BatchManifest:
    """One batch's manifest (empty if the batch was never uploaded)."""
    data = store.read_or_none(batch_manifest_uri(root, batch))
    if not data:
        return BatchManifest({}, {})
    recorded = json.loads(data)
    return BatchManifest(recorded["files"], recorded.get("bundles", {}))


def read_manifest(store: Store, root: str, batch: str) -> dict[str, str]:
    """`{raw key relative to the batch: sha256}` of one batch (empty if never uploaded)."""
    return read_batch_manifest(store, root, batch).files


def write_batch_manifest(store: Store, root: str, batch: str, manifest: BatchManifest) -> None:
    data = manifest.to_json(batch)
    store.put(batch_manifest_uri(root, batch), data, sha256_bytes(data))


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


def _alternate_key(key: str, sha256: str) -> str:
    path = PurePosixPath(key)
    return str(path.with_name(f"{path.stem}-{sha256[:8]}{path.suffix}"))


# ---------------------------------------------------------------------------------------------
# Bundles: many photos per Parquet object
# ---------------------------------------------------------------------------------------------


def is_bundle_name(name: str) -> bool:
    return name.startswith(BUNDLE_PREFIX) and name.endswith(BUNDLE_SUFFIX)


def bundle_name(members: dict[str, str]) -> str:
    """`bundle-<16 hex>.parquet`, hashed from its members' keys and sha256s: a rerun after a crash
    writes the same photos under the same name."""
    digest = hashlib.sha256()
    for key in sorted(members):
        digest.update(f"{key}\0{members[key]}\n".encode())
    return f"{BUNDLE_PREFIX}{digest.hexdigest()[:16]}{BUNDLE_SUFFIX}"


def bundle_schema():
    """binaryFile's columns (what featurize reads) + the photo's sha256. pyarrow is imported here, not at
    module level: the DAG file imports this module, and the scheduler parses it constantly."""
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("modificationTime", pa.timestamp("us", tz="UTC")), ("length", pa.int64()),
        ("content", pa.binary()), ("sha256", pa.string()),
    ])


def bundle_parquet(table, row_group_photos: int = BUNDLE_ROW_GROUP_PHOTOS) -> bytes:
    """A bundle table as Parquet bytes: row groups of `row_group_photos` photos; the photos stored
    as they are (JPEG and PNG are compressed already: no codec, no dictionary, no min/max statistics
    of whole photos in the footer)."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    small_columns = [name for name in table.schema.names if name != "content"]
    pq.write_table(
        table, buffer, row_group_size=row_group_photos, use_dictionary=False, write_statistics=small_columns,
        compression={name: "snappy" if name in small_columns else "none" for name in table.schema.names},
    )
    return buffer.getvalue()


@dataclass
class Photo:
    key: str
    sha256: str
    content: bytes


def bundle_table(raw_uri: str, photos: list[Photo], written_at: dt.datetime):
    """The bundle's rows, `path` = `<raw batch uri><key>` and modificationTime = when it was written
    (what a photo uploaded as its own object would have shown)."""
    import pyarrow as pa

    return pa.Table.from_pydict({
        "path": [raw_uri + photo.key for photo in photos],
        "modificationTime": [written_at] * len(photos),
        "length": [len(photo.content) for photo in photos],
        "content": [photo.content for photo in photos],
        "sha256": [photo.sha256 for photo in photos],
    }, schema=bundle_schema())


@dataclass
class BundleWriter:
    """Collects a batch's new photos and writes them as bundles of at most `max_photos` photos /
    `max_bytes` of content (a single bigger photo gets a bundle of its own)."""

    store: Store
    raw_uri: str
    manifest: BatchManifest
    dry_run: bool
    max_photos: int = BUNDLE_MAX_PHOTOS
    max_bytes: int = BUNDLE_MAX_BYTES
    row_group_photos: int = BUNDLE_ROW_GROUP_PHOTOS
    pending: list[Photo] = field(default_factory=list)
    pending_bytes: int = 0
    written: int = 0

    def add(self, photo: Photo) -> None:
        if self.pending and self.pending_bytes + len(photo.content) > self.max_bytes:
            self.flush()
        self.pending.append(photo)
        self.pending_bytes += len(photo.content)
        if len(self.pending) >= self.max_photos:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = bundle_name({photo.key: photo.sha256 for photo in self.pending})
        if not self.dry_run:
            table = bundle_table(self.raw_uri, self.pending, dt.datetime.now(dt.timezone.utc))
            data = bundle_parquet(table, self.row_group_photos)
            self.store.put(self.raw_uri + name, data, sha256_bytes(data))
            log.info("wrote %s: %d photos, %d bytes", name, len(self.pending), len(data))
        self.manifest.bundles[name] = [photo.key for photo in self.pending]
        self.written += 1
        self.pending, self.pending_bytes = [], 0


def bundle_files(store: Store, raw_uri: str) -> list[str]:
    """Names of the bundle files in one batch folder (`raw_uri`), as they are, manifest or not."""
    names = []
    for uri in store.list_files(raw_uri):
        folder, name = uri.rsplit("/", 1)
        if folder + "/" == raw_uri and is_bundle_name(name):
            names.append(name)
    return names


def delete_leftover_bundles(store: Store, raw_uri: str, manifest: BatchManifest, *, dry_run: bool) -> list[str]:
    """Bundles in the batch folder that the manifest does not name: an upload stopped before writing
    its manifest. Their photos are not recorded, so this upload bundles them again."""
    leftovers = [raw_uri + name for name in bundle_files(store, raw_uri) if name not in manifest.bundles]
    for uri in leftovers:
        log.warning("%s %s: left by an interrupted upload (not in %s)",
                    "would delete" if dry_run else "deleting", uri, UPLOADS_MANIFEST)
        if not dry_run:
            store.delete(uri)
    return leftovers


def upload_new_images(
    lake_store: Store,
    landing_store: Store,
    landing_uri: str,
    batch: str,
    *,
    dry_run: bool = False,
    max_photos: int = BUNDLE_MAX_PHOTOS,
    max_bytes: int = BUNDLE_MAX_BYTES,
    row_group_photos: int = BUNDLE_ROW_GROUP_PHOTOS,
) -> dict[str, Any]:
    """Bundle the landing's new images into `raw/batch=<batch>/`; returns the counts."""
    root = lake_store.root
    raw = lake.raw_uri(root, batch)
    recorded = read_batch_manifest(lake_store, root, batch)
    manifest = BatchManifest(dict(recorded.files), {name: list(keys) for name, keys in recorded.bundles.items()})
    elsewhere: dict[str, str] = {}
    for other in raw_batches(lake_store, root):
        if other != batch:
            elsewhere.update({sha: other for sha in read_manifest(lake_store, root, other).values()})
    leftovers = delete_leftover_bundles(lake_store, raw, recorded, dry_run=dry_run)

    counts = {"seen": 0, "uploaded": 0, "already_in_batch": 0, "in_other_batch": 0, "renamed": 0,
              "bundles_written": 0, "leftover_bundles_deleted": len(leftovers)}
    bundles = BundleWriter(lake_store, raw, manifest, dry_run, max_photos, max_bytes, row_group_photos)
    started = time.monotonic()
    for image in landing_images(landing_store, landing_uri):
        counts["seen"] += 1
        data = landing_store.read(image.uri)
        sha = sha256_bytes(data)
        if sha in elsewhere:
            counts["in_other_batch"] += 1
            continue
        key = image.key
        if manifest.files.get(key, sha) != sha:
            key = _alternate_key(key, sha)
            counts["renamed"] += 1
        if manifest.files.get(key) == sha:
            counts["already_in_batch"] += 1
        else:
            manifest.files[key] = sha
            bundles.add(Photo(key, sha, data))
            counts["uploaded"] += 1
        counts["bundles_written"] = bundles.written
        if counts["seen"] % PROGRESS_EVERY == 0:
            _log_progress(counts, started)
    bundles.flush()
    counts["bundles_written"] = bundles.written
    if counts["seen"] == 0:
        log.warning("No images under %s: batch %s gets no new photos", landing_uri, batch)
    # Written last, and only when it changes: a rerun with nothing new writes nothing.
    if not dry_run and (manifest.files, manifest.bundles) != (recorded.files, recorded.bundles):
        write_batch_manifest(lake_store, root, batch, manifest)
    _log_progress(counts, started)
    return {**counts, "batch": batch, "images_in_batch": len(manifest.files),
            "bundles_in_batch": len(manifest.bundles), "raw_uri": raw, "dry_run": dry_run}


def _log_progress(counts: dict[str, int], started: float) -> None:
    seconds = max(time.monotonic() - started, 1e-6)
    log.info(
        "landing: %d seen (%.1f/s), %d uploaded (%.1f/s) in %d bundles, %d already in this batch, "
        "%d already in another batch, %d renamed",
        counts["seen"], counts["seen"] / seconds, counts["uploaded"], counts["uploaded"] / seconds,
        counts["bundles_written"], counts["already_in_batch"], counts["in_other_batch"], counts["renamed"],
    )


# ---------------------------------------------------------------------------------------------
# Code: moved to fruits.release (with the node wheelhouse and the weights); re-exported here.
# ---------------------------------------------------------------------------------------------

from fruits.release import (  # noqa: F401
    CODE_MANIFEST,
    CODE_SOURCES,
    JOB_SCRIPTS,
    code_files,
    code_version,
    helper_modules,
    publish_code,
)
