"""The lake's reads and conditional writes (`put_if_absent`, `put_if_match`) on a local folder or S3, no
`fruits` import: the Spark ingest job's driver writes the manifest, the report and the duplicate index with
them, and fruits.storage's LocalStore and S3Store inherit them (one definition of each conditional write).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalFiles:
    """A local folder: `file://` (or Spark's `file:/`) URIs; the etag is the content's sha256."""

    # How long a conditional write waits for another one (alive: a dead writer's lock is already gone).
    CAS_WAIT_SECONDS = 30

    @staticmethod
    def _path(uri: str) -> Path:
        return Path("/" + uri.removeprefix("file:").lstrip("/") if uri.startswith("file:") else uri)

    def read(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def read_or_none(self, uri: str) -> bytes | None:
        path = self._path(uri)
        return path.read_bytes() if path.is_file() else None

    def read_with_etag(self, uri: str) -> tuple[bytes | None, str | None]:
        data = self.read_or_none(uri)
        return (data, sha256_bytes(data)) if data is not None else (None, None)

    def put(self, uri: str, data: bytes, sha256: str) -> None:
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: a reader never sees half a file.
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        partial.write_bytes(data)
        partial.replace(path)

    def is_file(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def copy(self, source: str, target: str) -> None:
        self.put(target, self.read(source), "")

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """Create the file only if nothing is there (a hard link of a written temporary: atomic, O_EXCL-like)."""
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        partial.write_bytes(data)
        try:
            os.link(partial, path)
            return True
        except FileExistsError:
            return False
        finally:
            partial.unlink()

    def put_if_match(self, uri: str, data: bytes, etag: str) -> bool:
        """Replace the file only if its content still hashes to `etag`: compare and replace under an exclusive
        flock of the file's folder. The OS holds that lock as long as this process keeps the folder open, however
        long it is frozen, and drops it the moment the process dies: no stale-lock guess."""
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The folder itself is the lock: no lock file to leave behind, or to unlink under a waiter.
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            deadline = time.monotonic() + self.CAS_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{path.parent} locked by a live writer for {self.CAS_WAIT_SECONDS} s"
                        ) from None
                    time.sleep(0.002)
            current = self.read_or_none(uri)
            if current is None or sha256_bytes(current) != etag:
                return False
            self.put(uri, data, "")
            return True
        finally:
            os.close(folder)  # releases the lock


class S3Files:
    """S3 through a boto3 client; every object written encrypted with KMS (the key given, else the bucket's)."""

    def __init__(self, client: Any, kms_key_arn: str = ""):
        self.client = client
        self.kms_key_arn = kms_key_arn

    @staticmethod
    def _key(uri: str) -> tuple[str, str]:
        scheme, _, rest = uri.partition("://")
        if scheme not in ("s3", "s3a") or not rest:
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, key = rest.partition("/")
        return bucket, key  # verbatim: `#`, `?` and `%` are part of a key

    def read(self, uri: str) -> bytes:
        bucket, key = self._key(uri)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def read_or_none(self, uri: str) -> bytes | None:
        try:
            return self.read(uri)
        except self.client.exceptions.NoSuchKey:
            return None

    def read_with_etag(self, uri: str) -> tuple[bytes | None, str | None]:
        bucket, key = self._key(uri)
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key)
        except self.client.exceptions.NoSuchKey:
            return None, None
        return answer["Body"].read(), answer["ETag"]

    def _extra(self) -> dict[str, str]:
        extra = {"ServerSideEncryption": "aws:kms"}
        if self.kms_key_arn:
            extra["SSEKMSKeyId"] = self.kms_key_arn
        return extra

    def put(self, uri: str, data: bytes, sha256: str) -> None:
        bucket, key = self._key(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": sha256}, **self._extra())

    def is_file(self, uri: str) -> bool:
        bucket, key = self._key(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def copy(self, source: str, target: str) -> None:
        """A server-side copy: the bytes never leave S3."""
        bucket, key = self._key(source)
        target_bucket, target_key = self._key(target)
        self.client.copy_object(
            Bucket=target_bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": key}, **self._extra()
        )

    def delete(self, uri: str) -> None:
        bucket, key = self._key(uri)
        self.client.delete_object(Bucket=bucket, Key=key)

    def _conditional_put(self, uri: str, data: bytes, **condition: str) -> bool:
        bucket, key = self._key(uri)
        try:
            self.client.put_object(
                Bucket=bucket, Key=key, Body=data, Metadata={"sha256": sha256_bytes(data)}, **condition, **self._extra()
            )
            return True
        except self.client.exceptions.ClientError as error:
            # 412: the condition failed; 409: a concurrent conditional write to the key won.
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        return self._conditional_put(uri, data, IfNoneMatch="*")

    def put_if_match(self, uri: str, data: bytes, etag: str) -> bool:
        return self._conditional_put(uri, data, IfMatch=etag)


INGEST_FOLDER = "_ingest"  # raw/batch=<ds>/_ingest/: an attempt's listing and staged landing (hidden from readers)

# After ingestion, landing files that are in the lake are kept (default), moved under ARCHIVE_PREFIX, or deleted.
LANDING_AFTER = ("keep", "archive", "delete")
ARCHIVE_PREFIX = "_ingested"


def archive_uri(landing_uri: str, uri: str) -> str:
    """Where `landing_after=archive` keeps a landing file of `landing_uri` (erasure deletes it there too)."""
    base = landing_uri.rstrip("/")
    parent, date = base.rsplit("/", 1)
    return f"{parent}/{ARCHIVE_PREFIX}/{date}/{uri[len(landing_uri.rstrip('/')) + 1 :]}"


def tidy_landing_file(files: Any, landing_uri: str, uri: str, landing_after: str) -> None:
    """One landing file now in the lake: archived (copied, then deleted) or deleted; `keep` leaves it. Idempotent:
    a retried task finds the files it already moved gone and leaves them."""
    if landing_after == "archive" and files.is_file(uri):
        files.copy(uri, archive_uri(landing_uri, uri))
    if landing_after in ("archive", "delete"):
        files.delete(uri)


def manifest_json(batch: str, files: dict[str, str], bundles: dict[str, list[str]]) -> bytes:
    """A batch's `_uploads.json`: `files` {key: sha256}, `bundles` {bundle file, relative to the batch: keys}."""
    return json.dumps(
        {"batch": batch, "files": dict(sorted(files.items())), "bundles": dict(sorted(bundles.items()))}, indent=1
    ).encode()


# A features run's sidecar: every bundle of the batch's manifest its rows cover (a JSON list), named by the marker's
# field; the originals are removed only when the manifest names no other bundle (erasure may drop some).
COVERED_BUNDLES_FIELD = "covered_bundles"
COVERED_BUNDLES = "_covered_bundles.json"


def covering(names) -> tuple[dict[str, bytes], dict[str, str]]:
    """({file name: bytes} to write in a features run folder, the marker's facts naming it) for these bundles."""
    return {COVERED_BUNDLES: json.dumps(sorted(names), indent=0).encode()}, {COVERED_BUNDLES_FIELD: COVERED_BUNDLES}


def merge_outcomes(previous: dict[str, dict], outcomes: dict[str, dict], batch: str) -> dict[str, dict]:
    """`_ingestion.json`'s files after an attempt: its outcomes over the earlier ones, except that a rerun
    finding an uploaded photo again in this batch leaves it `uploaded` (it is still the file uploaded)."""
    files = {**previous}
    for landing_file, outcome in outcomes.items():
        before = previous.get(landing_file, {})
        if not (
            before.get("outcome") == "uploaded"
            and outcome["outcome"] == "already_in_lake"
            and outcome.get("batch") == batch
            and before.get("sha256") == outcome.get("sha256")
        ):
            files[landing_file] = outcome
    return files


INGESTION_REPORT = "_ingestion.json"
# Beside it, the report's counts over every landing file: what the run report shows, without parsing ~500 MB of
# outcomes at a million photos.
INGESTION_COUNTS = "_ingestion_counts.json"
REPORT_ATTEMPTS = 20


def outcome_counts(files: dict[str, dict]) -> dict[str, Any]:
    """`_ingestion.json`'s files by outcome: seen, uploaded, already_in_lake, rejected {reason: files}."""
    outcomes: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for entry in files.values():
        outcomes[entry["outcome"]] = outcomes.get(entry["outcome"], 0) + 1
        if entry["outcome"] == "rejected":
            rejected[entry.get("reason", "?")] = rejected.get(entry.get("reason", "?"), 0) + 1
    return {
        "seen": len(files),
        "uploaded": outcomes.get("uploaded", 0),
        "already_in_lake": outcomes.get("already_in_lake", 0),
        "rejected": dict(sorted(rejected.items())),
    }


def ingestion_counts_json(batch: str, files: dict[str, dict]) -> bytes:
    """`_ingestion_counts.json`: the counts of `_ingestion.json`'s files, written by whoever writes the report."""
    return json.dumps({"batch": batch, "landing": outcome_counts(files)}, indent=1, sort_keys=True).encode()


def write_ingestion_report(
    files_store: Any,
    raw_uri: str,
    batch: str,
    landing_uri: str,
    outcomes: dict[str, dict[str, Any]],
    counts: dict[str, Any],
    reasons: dict[str, str],
) -> str:
    """`_ingestion.json`: every landing file the batch has seen (earlier attempts' too) and its outcome, with a
    conditional write (a rerun finding its uploaded photo again keeps `uploaded`); then its counts beside it,
    checked every time (a retry after a lost write of the counts leaves them right)."""
    uri = raw_uri + INGESTION_REPORT
    for _ in range(REPORT_ATTEMPTS):
        data, etag = files_store.read_with_etag(uri)
        previous = json.loads(data)["files"] if data else {}
        files = merge_outcomes(previous, outcomes, batch)
        if files != previous:  # else nothing new (a rerun): the report is not rewritten
            report = {
                "batch": batch,
                "landing": landing_uri,
                "written_at": dt.datetime.now(dt.UTC).isoformat(),
                "last_attempt": counts,
                "reasons": reasons,
                "files": dict(sorted(files.items())),
            }
            body = json.dumps(report, indent=1, ensure_ascii=True).encode()
            if not (files_store.put_if_match(uri, body, etag) if etag else files_store.put_if_absent(uri, body)):
                continue
        if data is None and not files:
            return uri  # no landing file, no report: nothing to count
        summary = ingestion_counts_json(batch, files)
        if files_store.read_or_none(raw_uri + INGESTION_COUNTS) != summary:  # a rerun rewrites nothing
            files_store.put(raw_uri + INGESTION_COUNTS, summary, sha256_bytes(summary))
        return uri
    raise RuntimeError(f"{uri}: {REPORT_ATTEMPTS} conditional writes lost in a row")


def open_files(uri: str) -> LocalFiles | S3Files:
    """The store for a lake URI (the job's driver: boto3's default credentials, the instance profile on EMR)."""
    if uri.startswith(("s3://", "s3a://")):
        import boto3

        return S3Files(boto3.client("s3"))
    return LocalFiles()
