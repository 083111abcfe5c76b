"""Getting new photos into the lake (the command: `python -m fruits.cli.upload`).

`upload_new_images` bundles the photos of one batch's landing folder (lake.landing_uri: a local folder
or an `s3://` prefix, laid out `[<anything>/][<Split>/]<Label>/<file>`) into Parquet objects
`raw/batch=<ds>/bundle-<16 hex>.parquet`, one row per photo with the columns of Spark's `binaryFile`
source (`path, modificationTime, length, content`) plus `sha256` (of the content as received). A photo's
key is `<Split>/<Label>/<file>` when a `Training` or `Test` folder sits above its label folder, else
`<Label>/<file>`; its `path` is `<raw batch uri><key>`.

Every landing file ends as exactly one outcome, listed in `raw/batch=<ds>/_ingestion.json`:
* `uploaded`: an image (by content: whatever Pillow, with pillow_heif, identifies), its personal
  metadata stripped (EXIF GPS, serials, owner, XMP, comments; orientation and ICC kept);
* `already_in_lake`: the same content (sha256) is in this batch or, per the index (fruits.dedup_index),
  in another one;
* `rejected` with a reason (REJECT_REASONS). A per-file problem never fails the upload.

Concurrent attempts on one batch are safe without a lock: bundles carry an attempt nonce in their name
(never overwritten by another attempt), `_uploads.json` is written with a conditional write and merged
on a conflict (photos the other attempt recorded are dropped from this attempt's bundles, which are
rewritten), and a bundle no manifest names is deleted only when older than LEFTOVER_GRACE_SECONDS (no
live attempt is that old). The index is updated after the manifest, so an index entry always names a
committed photo.

"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lakefiles import (  # noqa: F401 - ARCHIVE_PREFIX, LANDING_AFTER: the CLI's and tests'
    ARCHIVE_PREFIX,
    INGEST_FOLDER,
    LANDING_AFTER,
    archive_uri,
    merge_outcomes,
    tidy_landing_file,
    write_ingestion_report,
)
from photos import REJECT_REASONS, examine, pillow_image  # noqa: F401 - pillow_image: report_page's

from fruits import dedup_index, lake
from fruits.dedup_index import counts_as_stored
from fruits.settings import PipelineSettings
from fruits.storage import (
    BUNDLE_MAX_BYTES,
    BUNDLE_MAX_PHOTOS,
    BUNDLE_ROW_GROUP_PHOTOS,
    UPLOADS_MANIFEST,
    BatchManifest,
    BundleWriter,
    Entry,
    Photo,
    Store,
    batch_manifest_uri,
    bundle_entries,
    ingestion_report_uri,
    sha256_bytes,
)

log = logging.getLogger(__name__)

MAX_PHOTO_BYTES = PipelineSettings.max_photo_bytes  # the setting's default, for callers without settings
# Concurrent landing GETs (a bounded pool) and the bytes they may hold at once.
READ_WORKERS = 16
READ_INFLIGHT_BYTES = 256 * 1024 * 1024
# Longer than any attempt lives (the task's execution timeout): only then is an unnamed bundle a leftover.
LEFTOVER_GRACE_SECONDS = 24 * 3600
MANIFEST_ATTEMPTS = 20
PROGRESS_EVERY = 1000


# The landing: every file, with its outcome
# ---------------------------------------------------------------------------------------------


@dataclass
class LandingFile:
    uri: str
    size: int
    key: str = ""  # `[<Split>/]<Label>/<file>` in the batch
    reason: str = ""  # a REJECT_REASONS key, when refused from the listing alone


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def classify(entry: Entry, landing_uri: str, max_photo_bytes: int) -> LandingFile:
    """What the listing alone tells about a landing file (no read)."""
    relative = entry.uri.removeprefix(landing_uri)
    parts = PurePosixPath(relative).parts
    file = LandingFile(entry.uri, entry.size)
    if not _is_utf8(entry.uri):
        file.reason = "unreadable_name"
    elif entry.link == "out":
        file.reason = "link_out_of_landing"
    elif entry.link == "folder":
        file.reason = "folder_link"
    elif any(part.startswith((".", "_")) for part in parts):
        file.reason = "hidden"
    elif len(parts) < 2:
        file.reason = "misplaced"
    elif parts[-2] in lake.SPLITS:  # a split is not a label: featurize would give it a null label
        file.reason = "no_label"
    elif entry.size == 0:
        file.reason = "empty"
    elif entry.size > max_photo_bytes:
        file.reason = "too_large"
    else:
        split = next((folder for folder in reversed(parts[:-2]) if folder in lake.SPLITS), None)
        file.key = "/".join(part for part in (split, parts[-2], parts[-1]) if part)
    return file


def read_in_pool(
    store: Store,
    files: Iterable[LandingFile],
    *,
    workers: int = READ_WORKERS,
    inflight_bytes: int = READ_INFLIGHT_BYTES,
) -> Iterator[tuple[LandingFile, bytes | Exception]]:
    """(file, its bytes or the error reading it), in order, read by a bounded pool of `workers` concurrent
    GETs holding at most `inflight_bytes` (sizes from the listing) at once. workers=1: one at a time."""

    def read(file: LandingFile) -> bytes | Exception:
        try:
            return store.read(file.uri)
        except Exception as error:  # noqa: BLE001 - a file that vanished or failed is reported, not fatal
            return error

    if workers <= 1:
        for file in files:
            yield file, read(file)
        return
    pending: collections.deque[tuple[LandingFile, Future]] = collections.deque()
    held = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="landing") as pool:
        for file in files:
            while pending and (len(pending) >= 2 * workers or held + file.size > inflight_bytes):
                done, future = pending.popleft()
                held -= done.size
                yield done, future.result()
            pending.append((file, pool.submit(read, file)))
            held += file.size
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _alternate_key(key: str, sha256: str) -> str:
    path = PurePosixPath(key)
    return str(path.with_name(f"{path.stem}-{sha256[:8]}{path.suffix}"))


def delete_leftover_bundles(
    store: Store,
    raw_uri: str,
    manifest: BatchManifest,
    *,
    dry_run: bool,
    grace_seconds: float = LEFTOVER_GRACE_SECONDS,
    now: float | None = None,
) -> list[str]:
    """Bundles the manifest does not name and older than the grace period: an attempt that died before its
    manifest write (its photos were bundled again by a later attempt). A younger one may be a live
    attempt's, about to be recorded: left alone."""
    now = time.time() if now is None else now
    leftovers = [
        entry.uri
        for entry in bundle_entries(store, raw_uri)
        if entry.uri.rsplit("/", 1)[1] not in manifest.bundles and now - entry.modified > grace_seconds
    ]
    for uri in leftovers:
        log.warning(
            "%s %s: left by an interrupted upload (not in %s, older than %d s)",
            "would delete" if dry_run else "deleting",
            uri,
            UPLOADS_MANIFEST,
            grace_seconds,
        )
        if not dry_run:
            store.delete(uri)
    return leftovers


# ---------------------------------------------------------------------------------------------
# Ingestion on the cluster (spark_jobs/ingest.py): the Airflow side lists, plans and copies only
# ---------------------------------------------------------------------------------------------

STAGE_WORKERS = 8
STAGE_INFLIGHT_BYTES = 128 * 1024 * 1024
# Landing files the listing holds at once, and so the rows of each of its row groups (1,000 row groups at a million).
LISTING_PAGE_FILES = 1000


def listing_uri(root: str, batch: str, nonce: str) -> str:
    return lake.raw_uri(root, batch) + f"{INGEST_FOLDER}/listing-{nonce}.parquet"


def staging_uri(root: str, batch: str, nonce: str) -> str:
    return lake.raw_uri(root, batch) + f"{INGEST_FOLDER}/landing-{nonce}/"


def listing_schema():
    """The listing's columns (what spark_jobs/ingest.py reads): the landing URI as bytes (a name may not be UTF-8),
    the source to read (the landing file or its staged copy; empty when refused), key, size, reason."""
    import pyarrow as pa

    return pa.schema(
        [
            ("uri", pa.binary()),
            ("source", pa.utf8()),
            ("key", pa.string()),
            ("size", pa.int64()),
            ("reason", pa.string()),
        ]
    )


def _listing_page(files: list[LandingFile], landing_uri: str, staged: str):
    import pyarrow as pa

    return pa.table(
        {
            "uri": [f.uri.encode("utf-8", "surrogateescape") for f in files],
            "source": [staged + f.uri[len(landing_uri) :] if not f.reason else "" for f in files],
            "key": [f.key for f in files],
            "size": [f.size for f in files],
            "reason": [f.reason for f in files],
        },
        schema=listing_schema(),
    )


def write_listing(
    lake_store: Store,
    landing_store: Store,
    landing_uri: str,
    batch: str,
    *,
    max_photo_bytes: int = MAX_PHOTO_BYTES,
    stage: bool = False,
    workers: int = STAGE_WORKERS,
    inflight_bytes: int = STAGE_INFLIGHT_BYTES,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The planner of an ingestion on the cluster: lists the batch's landing folder (metadata only), refuses
    from the listing alone what classify refuses, and writes the listing the Spark job reads (one row per
    landing file; an empty landing gets an empty listing). `stage`: a landing the cluster cannot read (not in
    S3) has its candidate files' bytes copied into the lake's staging folder first, by a bounded pool, never
    decoded. `dry_run`: listed and counted, nothing written (`listing` None). The listing is streamed: a page
    of LISTING_PAGE_FILES landing files at a time becomes a row group of a local file, uploaded once at the end."""
    import pyarrow.parquet as pq

    lake.check_batch(batch)
    landing_uri = landing_uri.rstrip("/") + "/"
    nonce = secrets.token_hex(8)
    staged = staging_uri(lake_store.root, batch, nonce) if stage else landing_uri
    started = time.monotonic()
    listed = (classify(entry, landing_uri, max_photo_bytes) for entry in landing_store.list_entries(landing_uri))
    pages = iter(lambda: list(itertools.islice(listed, LISTING_PAGE_FILES)), [])
    counts = {"files": 0, "candidates": 0, "bytes": 0}

    def counted(page: list[LandingFile]) -> list[LandingFile]:
        candidates = [f for f in page if not f.reason]
        counts["files"] += len(page)
        counts["candidates"] += len(candidates)
        counts["bytes"] += sum(f.size for f in candidates)
        return candidates

    def listed_log() -> None:
        log.info(
            "landing %s: %d files listed (%d candidates, %.1f MB of them) in %.1f s",
            landing_uri,
            counts["files"],
            counts["candidates"],
            counts["bytes"] / 1e6,
            time.monotonic() - started,
        )

    if dry_run:
        for page in pages:
            counted(page)
        listed_log()
        return {"listing": None, "landing": landing_uri, **counts}
    with tempfile.TemporaryDirectory(prefix="listing-") as folder:
        path = Path(folder) / "listing.parquet"
        with pq.ParquetWriter(path, listing_schema(), compression="snappy", use_dictionary=False) as writer:
            for page in pages:
                candidates = counted(page)
                copies = read_in_pool(landing_store, candidates, workers=workers, inflight_bytes=inflight_bytes)
                for file, data in copies if stage else ():
                    if isinstance(data, Exception):
                        continue  # the job finds no bytes: "unreadable"
                    lake_store.put(staged + file.uri[len(landing_uri) :], data, sha256_bytes(data))
                writer.write_table(_listing_page(page, landing_uri, staged))
        listed_log()
        uri = listing_uri(lake_store.root, batch, nonce)
        lake_store.put_file(uri, path, _file_sha256(path))
    return {"listing": uri, "landing": staged, **counts}


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------
# The upload
# ---------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One upload attempt's state: what it wrote, and every landing file's outcome."""

    batch: str
    recorded: BatchManifest
    etag: str | None
    writer: BundleWriter
    files: dict[str, str] = field(default_factory=dict)  # key -> sha256 of the photos this attempt bundled
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # landing uri -> outcome
    seen_shas: dict[str, str] = field(default_factory=dict)  # sha256 -> key, this attempt's and the batch's

    def outcome(self, uri: str, outcome: str, **details: Any) -> None:
        self.outcomes[uri] = {"outcome": outcome, **details}


def _upload_one(
    attempt: Attempt, file: LandingFile, data: bytes | Exception, erased: frozenset[str], max_photo_bytes: int
) -> Photo | None:
    """The file's outcome; the photo to bundle when it is new (a lake write error is the caller's to raise)."""
    if isinstance(data, Exception):
        attempt.outcome(file.uri, "rejected", reason="unreadable", detail=f"{type(data).__name__}: {data}")
        return
    if len(data) > max_photo_bytes:  # grew since the listing
        attempt.outcome(file.uri, "rejected", reason="too_large", bytes=len(data))
        return
    sha = sha256_bytes(data)
    if sha in attempt.seen_shas:
        attempt.outcome(file.uri, "already_in_lake", sha256=sha, batch=attempt.batch, key=attempt.seen_shas[sha])
        return
    verdict = examine(data, erased, sha)
    if verdict.reason:
        details = {"detail": verdict.detail} if verdict.detail else {}
        attempt.outcome(file.uri, "rejected", reason=verdict.reason, sha256=sha, **details)
        return
    content, how, image_format = verdict.content, verdict.metadata, verdict.format
    key = file.key
    if key in attempt.recorded.files or key in attempt.files:
        key = _alternate_key(key, sha)
    attempt.files[key] = sha
    attempt.seen_shas[sha] = key
    attempt.outcome(
        file.uri,
        "uploaded",
        sha256=sha,
        content_sha256=verdict.content_sha256,
        key=key,
        format=image_format,
        metadata=how,
    )
    return Photo(key, sha, content)


def _drop_from_bundles(attempt: Attempt, drop: set[str], rename: dict[str, str]) -> None:
    """Remove keys from (and rename keys in) this attempt's bundles, rewriting the bundles concerned."""
    for name, keys in list(attempt.writer.bundles.items()):
        if drop.intersection(keys) or rename.keys() & set(keys):
            attempt.writer.rewrite(name, drop, rename)
    for key in drop:
        attempt.files.pop(key, None)
    for old, new in rename.items():
        attempt.files[new] = attempt.files.pop(old)


def _reconcile(attempt: Attempt, other: BatchManifest) -> None:
    """Another attempt recorded first: photos it holds (same content) leave this attempt's bundles; a key it
    took for other content gets this photo's alternate key."""
    theirs = {sha: key for key, sha in other.files.items()}
    drop = {key for key, sha in attempt.files.items() if sha in theirs}
    rename = {
        key: _alternate_key(key, sha) for key, sha in attempt.files.items() if key not in drop and key in other.files
    }
    by_key = {o.get("key"): uri for uri, o in attempt.outcomes.items() if o["outcome"] == "uploaded"}
    for key in drop:
        sha = attempt.files[key]
        attempt.outcome(by_key[key], "already_in_lake", sha256=sha, batch=attempt.batch, key=theirs[sha])
    for old, new in rename.items():
        attempt.outcomes[by_key[old]]["key"] = new
    _drop_from_bundles(attempt, drop, rename)
    attempt.recorded = other


def _commit_manifest(store: Store, root: str, attempt: Attempt) -> BatchManifest:
    """Write the batch's manifest with this attempt's bundles, conditionally; on a conflict, merge and retry."""
    uri = batch_manifest_uri(root, attempt.batch)
    for _ in range(MANIFEST_ATTEMPTS):
        merged = BatchManifest(
            {**attempt.recorded.files, **attempt.files}, {**attempt.recorded.bundles, **attempt.writer.bundles}
        )
        if not attempt.writer.bundles:
            return merged
        data = merged.to_json(attempt.batch)
        written = store.put_if_match(uri, data, attempt.etag) if attempt.etag else store.put_if_absent(uri, data)
        if written:
            return merged
        log.warning("%s changed under this attempt (another attempt recorded photos): merging", uri)
        current, attempt.etag = store.read_with_etag(uri)
        _reconcile(attempt, BatchManifest.parse(current))
    raise RuntimeError(f"{uri}: {MANIFEST_ATTEMPTS} conditional writes lost in a row; nothing was lost, rerun")


def _write_report(store: Store, root: str, attempt: Attempt, landing_uri: str, counts: dict[str, Any]) -> str:
    """`_ingestion.json`: every landing file the batch has seen (earlier attempts' too) and its outcome."""
    raw_uri = lake.raw_uri(root, attempt.batch)
    return write_ingestion_report(store, raw_uri, attempt.batch, landing_uri, attempt.outcomes, counts, REJECT_REASONS)


def _tidy_landing(store: Store, landing_uri: str, attempt: Attempt, landing_after: str) -> int:
    """Landing files now in the lake: kept, archived or deleted (the setting). Rejected files always stay."""
    if landing_after == "keep":
        return 0
    done = 0
    for uri, outcome in attempt.outcomes.items():
        if outcome["outcome"] in ("uploaded", "already_in_lake") and uri.startswith(landing_uri):
            tidy_landing_file(store, landing_uri, uri, landing_after)
            done += 1
    return done


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
    max_photo_bytes: int = MAX_PHOTO_BYTES,
    read_workers: int = READ_WORKERS,
    landing_after: str = "keep",
    leftover_grace_seconds: float = LEFTOVER_GRACE_SECONDS,
    retention_days: int | None = PipelineSettings.retention_days,
) -> dict[str, Any]:
    """Bundle the photos of one batch's landing folder into `raw/batch=<batch>/`; returns the counts.
    Never raises for a per-file problem: each file's outcome is in `_ingestion.json` and the counts."""
    lake.check_batch(batch)
    if landing_after not in LANDING_AFTER:
        raise ValueError(f"landing_after must be one of {LANDING_AFTER}, not {landing_after!r}")
    landing_uri = landing_uri.rstrip("/") + "/"
    root = lake_store.root
    raw = lake.raw_uri(root, batch)
    data, etag = lake_store.read_with_etag(batch_manifest_uri(root, batch))
    recorded = BatchManifest.parse(data)
    writer = BundleWriter(lake_store, raw, secrets.token_hex(8), dry_run, max_photos, max_bytes, row_group_photos)
    attempt = Attempt(batch, recorded, etag, writer, seen_shas={sha: key for key, sha in recorded.files.items()})
    erased = dedup_index.erased(lake_store, root)
    started = time.monotonic()

    candidates = []
    for entry in landing_store.list_entries(landing_uri):
        file = classify(entry, landing_uri, max_photo_bytes)
        if file.reason:
            attempt.outcome(file.uri, "rejected", reason=file.reason, **({"bytes": file.size} if file.size else {}))
        else:
            candidates.append(file)
    for number, (file, content) in enumerate(read_in_pool(landing_store, candidates, workers=read_workers), 1):
        photo = None
        try:
            photo = _upload_one(attempt, file, content, erased, max_photo_bytes)
        except Exception as error:  # one odd file never fails the night
            log.exception("%s: unexpected error", file.uri)
            attempt.outcome(file.uri, "rejected", reason="unreadable", detail=f"{type(error).__name__}: {error}")
        if photo:
            writer.add(photo)  # outside the per-file guard: a lake that fails writes fails the attempt
        if number % PROGRESS_EVERY == 0:
            log.info("landing: %d of %d read (%.1f/s)", number, len(candidates), number / (time.monotonic() - started))
    writer.flush()

    # Content already in another batch (the index), found once the night's hashes are known.
    # Content already in another batch (the index: by the bytes as received or as stored), found once the
    # night's hashes are known; a copy that expires too soon does not count (lakeindex.counts_as_stored).
    uploaded = {uri: o for uri, o in attempt.outcomes.items() if o["outcome"] == "uploaded"}
    hashes = {h for o in uploaded.values() for h in (o["sha256"], o["content_sha256"])}
    found = dedup_index.lookup(lake_store, root, hashes)
    kept = {
        sha: other for sha, other in found.items() if other != batch and counts_as_stored(other, batch, retention_days)
    }
    elsewhere = {
        uri: kept.get(o["sha256"]) or kept[o["content_sha256"]]
        for uri, o in uploaded.items()
        if o["sha256"] in kept or o["content_sha256"] in kept
    }
    if elsewhere:
        drop = {uploaded[uri]["key"] for uri in elsewhere}
        for uri, other in elsewhere.items():
            attempt.outcome(uri, "already_in_lake", sha256=uploaded[uri]["sha256"], batch=other)
        _drop_from_bundles(attempt, drop, {})

    if dry_run:
        manifest = BatchManifest({**recorded.files, **attempt.files}, {**recorded.bundles, **writer.bundles})
    else:
        manifest = _commit_manifest(lake_store, root, attempt)
    counts = _counts(attempt, manifest, started)
    report_uri = ingestion_report_uri(root, batch)
    if not dry_run:
        # The index after the manifest: an entry always names a committed photo. Photos already in this
        # batch are (re)recorded too: an attempt that died after its manifest left them out.
        committed = set(manifest.files.values())
        dedup_index.record(
            lake_store,
            root,
            batch,
            {
                sha
                for o in attempt.outcomes.values()
                if o.get("batch", batch) == batch and o.get("sha256") in committed
                for sha in (o["sha256"], o.get("content_sha256") or o["sha256"])
            },
        )
        counts["leftover_bundles_deleted"] = len(
            delete_leftover_bundles(lake_store, raw, manifest, dry_run=False, grace_seconds=leftover_grace_seconds)
        )
        _write_report(lake_store, root, attempt, landing_uri, counts)
        counts["landing_files_" + ("archived" if landing_after == "archive" else "deleted")] = _tidy_landing(
            landing_store, landing_uri, attempt, landing_after
        )
    _log_counts(counts, started)
    return {
        **counts,
        "batch": batch,
        "raw_uri": raw,
        "ingestion_report_uri": report_uri,
        "dry_run": dry_run,
        "landing_uri": landing_uri,
    }


def _counts(attempt: Attempt, manifest: BatchManifest, started: float) -> dict[str, Any]:
    outcomes = list(attempt.outcomes.values())
    rejected = collections.Counter(o["reason"] for o in outcomes if o["outcome"] == "rejected")
    already = [o for o in outcomes if o["outcome"] == "already_in_lake"]
    uploaded = [o for o in outcomes if o["outcome"] == "uploaded"]
    return {
        "seen": len(outcomes),
        "uploaded": len(uploaded),
        "already_in_lake": len(already),
        "already_in_batch": sum(o["batch"] == attempt.batch for o in already),
        "in_other_batch": sum(o["batch"] != attempt.batch for o in already),
        "rejected": dict(sorted(rejected.items())),
        "renamed": sum(
            PurePosixPath(o["key"]).name != PurePosixPath(uri).name
            for uri, o in attempt.outcomes.items()
            if o["outcome"] == "uploaded"
        ),
        "metadata_stripped": sum(o["metadata"] != "none" for o in uploaded),
        "reencoded": sum(o["metadata"] == "reencoded" for o in uploaded),
        "bundles_written": len(attempt.writer.bundles),
        "leftover_bundles_deleted": 0,
        "images_in_batch": len(manifest.files),
        "bundles_in_batch": len(manifest.bundles),
        "seconds": round(time.monotonic() - started, 3),
    }


def _log_counts(counts: dict[str, Any], started: float) -> None:
    seconds = max(time.monotonic() - started, 1e-6)
    log.info(
        "landing: %d seen (%.1f/s), %d uploaded in %d bundles, %d already in the lake (%d in this batch, "
        "%d in another), rejected %s, %d renamed; batch now %d photos",
        counts["seen"],
        counts["seen"] / seconds,
        counts["uploaded"],
        counts["bundles_written"],
        counts["already_in_lake"],
        counts["already_in_batch"],
        counts["in_other_batch"],
        counts["rejected"] or "none",
        counts["renamed"],
        counts["images_in_batch"],
    )


def unaccounted_landing_files(lake_store: Store, landing_store: Store, landing_uri: str, batch: str) -> dict[str, Any]:
    """The files of one batch's landing folder that its `_ingestion.json` gives no outcome (never ingested,
    or landed after the run read the folder). One listing of that folder and one read: the cost of that
    night's landing, not of the lake. Returns {batch, landing_uri, ingestion_report_uri, landing_files,
    unaccounted (their URIs, sorted)}."""
    lake.check_batch(batch)
    landing_uri = landing_uri.rstrip("/") + "/"
    report_uri = ingestion_report_uri(lake_store.root, batch)
    data = lake_store.read_or_none(report_uri)
    outcomes = json.loads(data)["files"] if data else {}
    listed = [entry.uri for entry in landing_store.list_entries(landing_uri)]
    return {
        "batch": batch,
        "landing_uri": landing_uri,
        "ingestion_report_uri": report_uri,
        "ingestion_report_found": data is not None,
        "landing_files": len(listed),
        "unaccounted": sorted(uri for uri in listed if uri not in outcomes),
    }
