"""The lake and the landing as stores, and the lake's own file formats: the public API every module that
reads or writes the lake uses (the upload, erasure, the run report, the matrix, the release).

* Stores: "URI -> bytes" on S3 (`S3Store`, a boto3 client) or a local folder (`LocalStore`), with
  conditional writes (`put_if_absent`, `put_if_match`), deletion of every version (`delete`,
  `drop_old_versions`, `purge_noncurrent`) and `open_store` / `open_lake` from a URI.
* The batch manifest `raw/batch=<ds>/_uploads.json` (`BatchManifest`: key -> sha256, bundle -> keys) and
  the ingestion report `_ingestion.json` beside it.
* Photo bundles `raw/batch=<ds>/bundle-<16 hex>.parquet`: binaryFile's columns + `sha256`, written by
  `BundleWriter` / `bundle_parquet`, listed by `bundle_files`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import lakefiles

from fruits import lake

log = logging.getLogger(__name__)

UPLOADS_MANIFEST = "_uploads.json"
INGESTION_REPORT = lakefiles.INGESTION_REPORT
# Photos travel in bundles: S3 bills per request and per 128 KB minimum object (docs/choices.md, "Measured
# behind the constants"); small enough that erasing a photo rewrites little and a worker holds one at a time.
BUNDLE_MAX_PHOTOS = 1000
BUNDLE_MAX_BYTES = 128 * 1024 * 1024  # of photo content
# Spark splits a Parquet file only between row groups: 64 photos a group spread a bundle over up to 16 tasks.
BUNDLE_ROW_GROUP_PHOTOS = 64
BUNDLE_PREFIX, BUNDLE_SUFFIX = "bundle-", ".parquet"


def file_uri(path: Path) -> str:
    """`file://` + the plain absolute path. Not Path.as_uri(): its percent-encoding (labels have
    spaces: "Apple Braeburn") would reach Hadoop, which takes the string as a literal path."""
    return "file://" + str(Path(path).resolve())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Stores: the lake (and the landing) as "URI -> bytes", on S3 (boto3 client) or a local folder.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A listed file: its size and modification time from the listing (no read), and what a local
    listing knows about links."""

    uri: str
    size: int
    modified: float  # seconds since the epoch
    link: str = ""  # "", "out" (a link leaving the listed folder) or "folder" (a link to a folder)


class Store(Protocol):
    root: str

    def list_files(self, prefix_uri: str) -> Iterator[str]: ...
    def list_entries(self, prefix_uri: str) -> Iterator[Entry]: ...
    def read(self, uri: str) -> bytes: ...
    def open_read(self, uri: str) -> BinaryIO: ...
    def read_or_none(self, uri: str) -> bytes | None: ...
    def read_with_etag(self, uri: str) -> tuple[bytes | None, str | None]: ...
    def put(self, uri: str, data: bytes, sha256: str) -> None: ...
    def put_file(self, uri: str, path: Path, sha256: str) -> None: ...
    def is_file(self, uri: str) -> bool: ...
    def put_if_absent(self, uri: str, data: bytes) -> bool: ...
    def put_if_match(self, uri: str, data: bytes, etag: str) -> bool: ...
    def delete(self, uri: str) -> None: ...
    def list_children(self, prefix_uri: str) -> list[str]: ...
    def exists(self, uri: str) -> bool: ...
    def drop_old_versions(self, uri: str) -> None: ...
    def purge_noncurrent(self, prefix_uri: str) -> int: ...
    def delete_prefix(self, prefix_uri: str, *, dry_run: bool = False) -> int: ...


class ConditionalStore(Protocol):
    """What the index and the locks need: reads with an etag and conditional writes (both stores qualify)."""

    root: str

    def read_or_none(self, uri: str) -> bytes | None: ...
    def read_with_etag(self, uri: str) -> tuple[bytes | None, str | None]: ...
    def put_if_absent(self, uri: str, data: bytes) -> bool: ...
    def put_if_match(self, uri: str, data: bytes, etag: str) -> bool: ...


class LocalStore(lakefiles.LocalFiles):
    """A local folder as the lake (local target) or as the landing location (its reads and conditional
    writes: spark_jobs/lakefiles.py, which the Spark ingest job's driver uses too)."""

    def __init__(self, root: str | Path):
        self.path = self._path(str(root)).resolve()
        self.root = file_uri(self.path)

    @staticmethod
    def _path(uri: str) -> Path:
        scheme, _, path = lake.split_uri(uri)
        if scheme != "file":
            raise ValueError(f"not a local path or file: URI: {uri!r}")
        return Path(path)

    def open_read(self, uri: str) -> BinaryIO:
        """The file, opened for reading: a reader seeks to the parts it needs (a Parquet footer, a column)."""
        return self._path(uri).open("rb")

    def put_file(self, uri: str, path: Path, sha256: str) -> None:
        """A local file's content, copied in without being held in memory (write-then-rename, as `put`)."""
        target = self._path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.urandom(4).hex()}.partial")
        shutil.copyfile(path, partial)
        partial.replace(target)

    def list_files(self, prefix_uri: str) -> Iterator[str]:
        base = self._path(prefix_uri)
        for path in sorted(base.rglob("*")) if base.is_dir() else []:
            if path.is_file():
                yield file_uri(path)

    def list_entries(self, prefix_uri: str) -> Iterator[Entry]:
        """Every file under the folder, links not followed: a link to a file inside it is listed (and read),
        a link leaving it or to a folder is listed as such. Names are whatever the disk holds (non-UTF-8 too)."""
        base = self._path(prefix_uri)
        if not base.is_dir():
            return
        real_base = base = os.path.realpath(base)
        for folder, dirs, files in os.walk(base, followlinks=False):
            dirs.sort()
            for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                path = os.path.join(folder, name)
                uri = "file://" + path
                if not os.path.islink(path):
                    stat = os.stat(path)
                    yield Entry(uri, stat.st_size, stat.st_mtime)
                    continue
                target = os.path.realpath(path)
                inside = os.path.commonpath([real_base, target]) == real_base
                if os.path.isdir(target):
                    yield Entry(uri, 0, 0.0, "folder" if inside else "out")
                elif not inside or not os.path.isfile(target):
                    yield Entry(uri, 0, 0.0, "out")
                else:
                    stat = os.stat(target)
                    yield Entry(uri, stat.st_size, stat.st_mtime)

    def delete(self, uri: str) -> None:
        path = self._path(uri)
        path.unlink()
        # As in S3, a folder is only its files: one left empty goes too, up to the store's own folder.
        for folder in path.parents:
            if folder == self.path or self.path not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty
                break

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def drop_old_versions(self, uri: str) -> None:
        """A folder keeps no versions, but Hadoop's checksum of the old content (`.<name>.crc`, beside files
        Spark wrote) would make Spark refuse the new content: it goes."""
        path = self._path(uri)
        path.with_name(f".{path.name}.crc").unlink(missing_ok=True)

    def purge_noncurrent(self, prefix_uri: str) -> int:
        """A folder keeps no versions: nothing to purge."""
        return 0

    def delete_prefix(self, prefix_uri: str, *, dry_run: bool = False) -> int:
        """Every file under the folder (or the one file the URI names); how many there were."""
        path = self._path(prefix_uri)
        if path.is_file():  # a single-object "prefix" (a batch lock)
            if not dry_run:
                path.unlink()
            return 1
        if not path.is_dir():
            return 0
        count = sum(1 for item in path.rglob("*") if item.is_file())
        if not dry_run:
            shutil.rmtree(path)
        return count

    def list_children(self, prefix_uri: str) -> list[str]:
        base = self._path(prefix_uri)
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


# The smallest ranged GET a reader of an S3 object makes (a Parquet footer, a page): one request, not many tiny ones.
RANGED_READ_BYTES = 1024 * 1024


class RangedObject(io.RawIOBase):
    """One version of an S3 object as a seekable file: each read is a ranged GET of that version (an
    object replaced under the reader fails its next read instead of mixing two contents)."""

    def __init__(self, client: Any, bucket: str, key: str):
        self.client, self.bucket, self.key = client, bucket, key
        head = client.head_object(Bucket=bucket, Key=key)
        self.size, self.etag, self.position = head["ContentLength"], head["ETag"], 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        if self.position >= self.size or not len(buffer):
            return 0
        last = min(self.size, self.position + len(buffer)) - 1
        body = self.client.get_object(
            Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{last}", IfMatch=self.etag
        )["Body"].read()
        buffer[: len(body)] = body
        self.position += len(body)
        return len(body)


class S3Store(lakefiles.S3Files):
    """An S3 bucket through a boto3 client (from the provider's S3Hook: credentials come from the
    `aws_default` connection). Every object is written encrypted with KMS (reads and conditional writes:
    spark_jobs/lakefiles.py)."""

    def __init__(self, client: Any, bucket: str, kms_key_arn: str = ""):
        self.client = client
        self.bucket = bucket
        self.root = f"s3://{bucket}"
        self.kms_key_arn = kms_key_arn

    def _key(self, uri: str) -> tuple[str, str]:
        if not lake.is_s3(uri):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        _, bucket, key = lake.split_uri(uri)
        return bucket, key

    def open_read(self, uri: str) -> BinaryIO:
        """The object, read by ranged GETs of the current version as a reader seeks (a Parquet footer, then the
        columns it wants): never held whole."""
        bucket, key = self._key(uri)
        return io.BufferedReader(RangedObject(self.client, bucket, key), buffer_size=RANGED_READ_BYTES)

    def put_file(self, uri: str, path: Path, sha256: str) -> None:
        """A local file's content in one PutObject streamed from the disk (as `put`: same request, KMS, metadata)."""
        bucket, key = self._key(uri)
        with Path(path).open("rb") as body:
            self.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"sha256": sha256}, **self._extra())

    def list_files(self, prefix_uri: str) -> Iterator[str]:
        for entry in self.list_entries(prefix_uri):
            yield entry.uri

    def list_entries(self, prefix_uri: str) -> Iterator[Entry]:
        bucket, prefix = self._key(prefix_uri)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield Entry(f"s3://{bucket}/{obj['Key']}", obj["Size"], obj["LastModified"].timestamp())

    def delete(self, uri: str) -> None:
        """Every version and delete marker of the object: on a versioned bucket, a plain delete would
        keep the photos it held in the bucket's history."""
        self._delete(uri, self._versions(uri))

    def exists(self, uri: str) -> bool:
        """Any version counts: an object deleted by hand may still be in the bucket's history."""
        return bool(self._versions(uri))

    def drop_old_versions(self, uri: str) -> None:
        """Every version of the object but the current one (a rewrite must not leave the old content behind)."""
        self._delete(uri, [v for v in self._versions(uri) if not v["IsLatest"]])

    def purge_noncurrent(self, prefix_uri: str) -> int:
        """Every noncurrent version and delete marker under the prefix, whichever key: reruns and staging
        leave copies under keys a rewrite never touches (an old run folder, a deleted temporary)."""
        bucket, prefix = self._key(prefix_uri)
        doomed = []
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            doomed += [v for v in page.get("Versions", []) if not v["IsLatest"]] + page.get("DeleteMarkers", [])
        self._delete(prefix_uri, doomed)
        return len(doomed)

    def delete_prefix(self, prefix_uri: str, *, dry_run: bool = False) -> int:
        """Every object under the prefix, every version and delete marker (retention); how many there were."""
        bucket, prefix = self._key(prefix_uri)
        doomed = []
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            doomed += page.get("Versions", []) + page.get("DeleteMarkers", [])
        if not dry_run:
            self._delete(prefix_uri, doomed)
        return len(doomed)

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
            answer = self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": objects[start : start + 1000], "Quiet": True}
            )
            if answer.get("Errors"):
                raise RuntimeError(f"could not delete every version of {uri}: {answer['Errors']}")

    def list_children(self, prefix_uri: str) -> list[str]:
        bucket, prefix = self._key(prefix_uri)
        names = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            names += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)


def open_store(uri: str, s3_client: Any = None) -> tuple[Store, str]:
    """(store, folder URI ending in '/') for an `s3://bucket/prefix` or a local folder / file:// URI."""
    scheme, bucket, key = lake.split_uri(uri)
    if scheme == "s3":
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        return S3Store(s3_client, bucket), f"s3://{bucket}/{key}".rstrip("/") + "/"
    path = Path(key).resolve()
    return LocalStore(path), file_uri(path) + "/"


def open_lake(root: str, s3_client: Any = None) -> LocalStore | S3Store:
    """The store of a lake root: `s3://<bucket>` (objects written with the bucket's own default KMS key, the
    one its policy accepts) or an existing local folder / file:// URI."""
    try:
        scheme, bucket, key = lake.split_uri(root)
    except ValueError:
        raise ValueError(f"lake root must be s3://<bucket> or a local folder / file:// URI, not {root!r}") from None
    if scheme == "s3":
        if key.strip("/"):
            raise ValueError(f"an S3 lake root is a bucket, s3://<bucket>, not {root!r}")
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        rules = s3_client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        key_arn = next((r["ApplyServerSideEncryptionByDefault"].get("KMSMasterKeyID", "") for r in rules), "")
        return S3Store(s3_client, bucket, key_arn)
    if not os.path.isdir(key):
        raise ValueError(f"lake root {root} is not a folder")
    return LocalStore(key)


# ---------------------------------------------------------------------------------------------
# The batch manifest
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def parquet_file(store: Store, uri: str) -> Iterator[Any]:
    """A Parquet object of the lake opened in parts (its footer, then the row groups and columns asked for, page by
    page), never read whole: a reduced file or a bundle of phone photos is hundreds of MB."""
    import pyarrow.parquet as pq

    with store.open_read(uri) as handle:
        yield pq.ParquetFile(handle, buffer_size=RANGED_READ_BYTES, pre_buffer=False)


def parquet_batches(store: Store, uris: Iterable[str], columns: list[str], rows: int) -> Iterator[Any]:
    """The record batches of these columns of Parquet objects, in order, `rows` at a time (never a whole file)."""
    for uri in uris:
        with parquet_file(store, uri) as parquet:
            yield from parquet.iter_batches(batch_size=rows, columns=columns)


def batch_manifest_uri(root: str, batch: str) -> str:
    return lake.raw_uri(root, batch) + UPLOADS_MANIFEST


def ingestion_report_uri(root: str, batch: str) -> str:
    return lake.raw_uri(root, batch) + INGESTION_REPORT


def ingestion_counts_uri(root: str, batch: str) -> str:
    return lake.raw_uri(root, batch) + lakefiles.INGESTION_COUNTS


@dataclass
class BatchManifest:
    """What `_uploads.json` records: `files` {key in the batch: sha256}, `bundles` {bundle file name:
    its keys}. A key in no bundle is a photo stored as its own object (lakes from before bundles)."""

    files: dict[str, str]
    bundles: dict[str, list[str]]

    def to_json(self, batch: str) -> bytes:
        return lakefiles.manifest_json(batch, self.files, self.bundles)

    @classmethod
    def parse(cls, data: bytes | None) -> BatchManifest:
        if not data:
            return cls({}, {})
        recorded = json.loads(data)
        return cls(recorded["files"], recorded.get("bundles", {}))


# Characters of a streamed JSON object decoded at a time.
JSON_CHUNK_CHARS = 1024 * 1024


class JsonObjectStream:
    """A JSON object decoded member by member from a text stream: a member whose value is an object is entered
    (`members`) or decoded whole (`value`), so a manifest of a million photos is never held whole."""

    def __init__(self, text: Any):
        self.stream, self.text, self.pos = text, "", 0
        self.decoder = json.JSONDecoder()

    def _more(self) -> bool:
        chunk = self.stream.read(JSON_CHUNK_CHARS)
        self.text, self.pos = self.text[self.pos :] + chunk, 0
        return bool(chunk)

    def _peek(self) -> str:
        while True:
            while self.pos < len(self.text) and self.text[self.pos].isspace():
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self._more():
                raise ValueError("the JSON ends too early")

    def _take(self, expected: str) -> str:
        found = self._peek()
        if found not in expected:
            raise ValueError(f"JSON: {found!r} where one of {expected!r} was expected")
        self.pos += 1
        return found

    def value(self) -> Any:
        """The next value, decoded whole (read on until it is complete)."""
        self._peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                if not self._more():
                    raise
                continue
            if end < len(self.text) or not self._more():  # a number cut at the chunk's end reads on
                self.pos = end
                return value

    def skip(self) -> None:
        """Pass over the next value; an object member by member, so a big one is never held (nor re-parsed
        as each chunk arrives)."""
        if self._peek() == "{":
            for _ in self.members():
                self.skip()
        else:
            self.value()

    def members(self) -> Iterator[str]:
        """The keys of the object starting here; the caller reads each key's value (`value` or `members`)
        before asking for the next key."""
        self._take("{")
        if self._peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.value()
            self._take(":")
            yield key
            if self._take(",}") == "}":
                return


def json_section(store: Store, uri: str, section: str) -> Iterator[tuple[str, Any]]:
    """(key, value) of the object member `section` of the JSON object at `uri`, decoded one member at a time as
    the object is read (a million photos' manifest is ~170 MB of JSON, ~700 MB of Python objects parsed
    whole); none when there is no such object."""
    if not store.is_file(uri):
        return
    with store.open_read(uri) as handle:
        stream = JsonObjectStream(io.TextIOWrapper(handle, encoding="utf-8"))
        for name in stream.members():
            if name != section:
                stream.skip()
                continue
            for key in stream.members():
                yield key, stream.value()


def manifest_bundles(store: Store, root: str, batch: str) -> Iterator[tuple[str, list[str]]]:
    """(bundle, its keys) of the batch's manifest, one bundle at a time; none before an upload."""
    yield from json_section(store, batch_manifest_uri(root, batch), "bundles")


def manifest_photo_count(store: Store, root: str, batch: str) -> int:
    """How many photos the batch's manifest names, streamed (0 before an upload)."""
    return sum(1 for _ in json_section(store, batch_manifest_uri(root, batch), "files"))


def read_batch_manifest(store: Store, root: str, batch: str) -> BatchManifest:
    """One batch's manifest (empty if the batch was never uploaded)."""
    return BatchManifest.parse(store.read_or_none(batch_manifest_uri(root, batch)))


def read_manifest(store: Store, root: str, batch: str) -> dict[str, str]:
    """`{raw key relative to the batch: sha256}` of one batch (empty if never uploaded)."""
    return read_batch_manifest(store, root, batch).files


def write_batch_manifest(store: Store, root: str, batch: str, manifest: BatchManifest) -> None:
    """An unconditional write: erasure only, under the batch lock (uploads use conditional writes)."""
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
    return batch_partitions(store, lake.area_uri(root, "raw"))


# ---------------------------------------------------------------------------------------------
# Bundles: many photos per Parquet object
# ---------------------------------------------------------------------------------------------


def is_bundle_name(name: str) -> bool:
    return name.startswith(BUNDLE_PREFIX) and name.endswith(BUNDLE_SUFFIX)


def bundle_name(members: dict[str, str], attempt: str = "") -> str:
    """`bundle-<16 hex>.parquet`, hashed from its members' keys and sha256s and the attempt's nonce: two
    attempts never write the same object, so neither can overwrite or delete what the other wrote."""
    digest = hashlib.sha256(attempt.encode() + b"\n")
    for key in sorted(members):
        digest.update(f"{key}\0{members[key]}\n".encode("utf-8", "surrogateescape"))
    return f"{BUNDLE_PREFIX}{digest.hexdigest()[:16]}{BUNDLE_SUFFIX}"


def bundle_schema():
    """binaryFile's columns (what featurize reads) + the photo's sha256. pyarrow is imported here, not at
    module level: the DAG file imports this module, and the scheduler parses it constantly."""
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("modificationTime", pa.timestamp("us", tz="UTC")),
            ("length", pa.int64()),
            ("content", pa.binary()),
            ("sha256", pa.string()),
        ]
    )


def bundle_parquet(table, row_group_photos: int = BUNDLE_ROW_GROUP_PHOTOS) -> bytes:
    """A bundle table as Parquet bytes: row groups of `row_group_photos` photos; the photos stored
    as they are (JPEG and PNG are compressed already: no codec, no dictionary, no min/max statistics
    of whole photos in the footer)."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    small_columns = [name for name in table.schema.names if name != "content"]
    pq.write_table(
        table,
        buffer,
        row_group_size=row_group_photos,
        use_dictionary=False,
        write_statistics=small_columns,
        compression={name: "snappy" if name in small_columns else "none" for name in table.schema.names},
    )
    return buffer.getvalue()


@dataclass
class Photo:
    key: str
    sha256: str  # of the content as received (the dedup and erasure key)
    content: bytes  # as stored: personal metadata stripped


def bundle_table(raw_uri: str, photos: list[Photo], written_at: dt.datetime):
    """The bundle's rows, `path` = `<raw batch uri><key>` and modificationTime = when it was written
    (what a photo uploaded as its own object would have shown)."""
    import pyarrow as pa

    return pa.Table.from_pydict(
        {
            "path": [raw_uri + photo.key for photo in photos],
            "modificationTime": [written_at] * len(photos),
            "length": [len(photo.content) for photo in photos],
            "content": [photo.content for photo in photos],
            "sha256": [photo.sha256 for photo in photos],
        },
        schema=bundle_schema(),
    )


@dataclass
class BundleWriter:
    """Collects a batch's new photos and writes them as bundles of at most `max_photos` photos /
    `max_bytes` of content (a single bigger photo gets a bundle of its own). `bundles` = what it wrote."""

    store: Store
    raw_uri: str
    attempt: str
    dry_run: bool
    max_photos: int = BUNDLE_MAX_PHOTOS
    max_bytes: int = BUNDLE_MAX_BYTES
    row_group_photos: int = BUNDLE_ROW_GROUP_PHOTOS
    bundles: dict[str, list[str]] = field(default_factory=dict)
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
        self.write(self.pending)
        self.pending, self.pending_bytes = [], 0

    def write(self, photos: list[Photo]) -> str:
        name = bundle_name({photo.key: photo.sha256 for photo in photos}, self.attempt)
        if not self.dry_run:
            table = bundle_table(self.raw_uri, photos, dt.datetime.now(dt.UTC))
            data = bundle_parquet(table, self.row_group_photos)
            self.store.put(self.raw_uri + name, data, sha256_bytes(data))
            log.info("wrote %s: %d photos, %d bytes", name, len(photos), len(data))
        self.bundles[name] = [photo.key for photo in photos]
        self.written += 1
        return name

    def rewrite(self, name: str, drop: set[str], rename: dict[str, str]) -> None:
        """This attempt's bundle `name` without the keys in `drop` and with keys renamed: written under a new
        name, the old one deleted (every version: it was never in a manifest, and only this attempt writes it)."""
        keys = self.bundles.pop(name)
        kept = [key for key in keys if key not in drop]
        if not self.dry_run:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(self.store.read(self.raw_uri + name))).to_pylist()
            photos = [
                Photo(rename.get(k, k), row["sha256"], row["content"])
                for row in table
                if (k := row["path"][len(self.raw_uri) :]) not in drop
            ]
        else:
            photos = [Photo(rename.get(k, k), "", b"") for k in kept]
        if photos:
            self.write(photos)
        if not self.dry_run:
            self.store.delete(self.raw_uri + name)


def bundle_files(store: Store, raw_uri: str) -> list[str]:
    """Names of the bundle files in one batch folder (`raw_uri`), as they are, manifest or not."""
    return [entry.uri.rsplit("/", 1)[1] for entry in bundle_entries(store, raw_uri)]


def bundle_entries(store: Store, raw_uri: str) -> list[Entry]:
    entries = []
    for entry in store.list_entries(raw_uri):
        folder, name = entry.uri.rsplit("/", 1)
        if folder + "/" == raw_uri and is_bundle_name(name):
            entries.append(entry)
    return entries
