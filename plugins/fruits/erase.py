"""Erase one photo and every row derived from it from the lake (GDPR right to erasure).

`erase(root, target)` takes the lock of each batch concerned, records the content hash as erased, rewrites
every file holding one of the photo's rows (derived files first, the photo's bundle and manifest entry last:
a run stopped half way is finished by running it again), then purges older versions. The command is
`python -m fruits.cli.erase`; the steps, the report and the limits are in docs/gdpr.md ("Erasure").
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import lakefiles
import pyarrow as pa
import pyarrow.parquet as pq

from fruits import dedup_index, lake, locks, report_page, storage, upload
from fruits.storage import LocalStore, S3Store, open_lake

log = logging.getLogger("fruits.erase")

SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ANY_BATCH = "2000-01-01"


def _area(batch_uri: str) -> str:
    """`<root>/pca/batch=<ds>/` -> `<root>/pca/`: the area holding every batch."""
    return batch_uri.rsplit("batch=", 1)[0]


# --- which photo ----------------------------------------------------------------------------------------


def canonical(path: str) -> str:
    """One spelling per object: `s3://bucket/key` (s3a too), or an absolute local path (`file:/x`,
    `file:///x` and `/x` are the same file; Spark writes `file:/x`; realpath: macOS's /tmp link). The
    name is kept verbatim (lake.split_uri): never URL-decoded."""
    scheme, bucket, key = lake.split_uri(path)
    if scheme == "s3":
        return f"s3://{bucket}/{key.strip('/')}".rstrip("/")
    folder, _, name = key.rpartition("/")
    return os.path.join(os.path.realpath(folder or "/"), name) if name else os.path.realpath(key)


class ErasureIncomplete(RuntimeError):
    """Some copy of the photo could not be removed: the report (`.report`) says which; run the erasure again."""

    def __init__(self, report: dict[str, Any]):
        self.report = report
        left = report["raw_left"] + report["landing_files_left"]
        super().__init__(f"erasure of {report['target']} incomplete: {len(left)} copy(ies) left: {left}")


@dataclass
class Erasure:
    lake: LocalStore | S3Store
    dry_run: bool
    photos: set[str] = field(default_factory=set)  # canonical URIs of the photo's copies under raw/
    deleted: list[str] = field(default_factory=list)
    rewritten: list[dict[str, Any]] = field(default_factory=list)

    def key(self, uri: str) -> str:
        return canonical(uri)[len(canonical(self.lake.root)) + 1 :]

    def record(self, uri: str, removed: int, left: int) -> None:
        self.rewritten.append({"key": self.key(uri), "rows_removed": removed, "rows_left": left})
        log.info(
            "%s %s: %d row(s) removed, %d left",
            "would rewrite" if self.dry_run else "rewrote",
            self.key(uri),
            removed,
            left,
        )

    def replace(self, uri: str, data: bytes) -> None:
        if not self.dry_run:
            self.lake.put(uri, data, storage.sha256_bytes(data))
            self.lake.drop_old_versions(uri)

    def delete(self, uri: str) -> None:
        """The object, every version included."""
        if not self.dry_run:
            self.lake.delete(uri)
        self.deleted.append(self.key(uri))
        log.info("%s %s (every version)", "would delete" if self.dry_run else "deleted", self.key(uri))


def _raw_area(root: str) -> str:
    return _area(lake.raw_uri(root, _ANY_BATCH))


def _batches_of_content(store: LocalStore | S3Store, sha256: str) -> list[str]:
    """The batch holding the content, from its index shard (one GET); every batch only in a lake from before
    the index (no `index/sha256/`), whose photos no shard names."""
    home = dedup_index.lookup(store, store.root, [sha256]).get(sha256)
    if home:
        return [home]
    if "sha256" in store.list_children(lake.area_uri(store.root, "index")):
        return []
    return storage.raw_batches(store, store.root)


def _photos_with_sha256(store: LocalStore | S3Store, sha256: str) -> set[str]:
    root = store.root
    batches = _batches_of_content(store, sha256)
    photos = {
        canonical(lake.raw_uri(root, batch) + key)
        for batch in batches
        for key, sha in storage.read_manifest(store, root, batch).items()
        if sha == sha256
    }
    areas = [lake.features_uri(root, batch) for batch in batches]
    for _, table in (found for area in areas for found in _parquet_files(store, area, columns=["path", "sha256"])):
        photos.update(
            canonical(p)
            for p, s in zip(table["path"].to_pylist(), table["sha256"].to_pylist(), strict=True)
            if s == sha256
        )
    return photos


def resolve(store: LocalStore | S3Store, target: str) -> set[str]:
    """The canonical URIs of the photo (or of every copy of its content) under raw/."""
    raw_area = canonical(_raw_area(store.root)) + "/"
    if SHA256.match(target.lower()):
        return {p for p in _photos_with_sha256(store, target.lower()) if p.startswith(raw_area)}
    has_scheme = lake.is_s3(target) or target.startswith(("file:", "/"))
    photo = canonical(target if has_scheme else f"{store.root}/{target.lstrip('/')}")
    if not photo.startswith(canonical(store.root) + "/"):
        raise ValueError(f"{target} is not under the lake root {store.root}")
    name = PurePosixPath(photo).name
    if not photo.startswith(raw_area) or name.startswith(("_", ".")):
        raise ValueError(f"{target} is not a photo under raw/ (raw/batch=<ds>/[<split>/]<label>/<file>)")
    if storage.is_bundle_name(name) and PurePosixPath(photo).parent.name.startswith("batch="):
        raise ValueError(f"{target} is a bundle of photos, not a photo: name one of its photos (its `path`)")
    return {photo}


def _every_copy(store: LocalStore | S3Store, photos: set[str]) -> set[str]:
    """The photos named and every other copy of their contents the index knows (stored again after a re-send,
    or by two nights ingesting it at once): one index shard and the batches holding a copy are read."""
    root = canonical(store.root)
    shas = set()
    for photo in photos:
        _, folder, key = photo[len(root) + 1 :].split("/", 2)
        sha = storage.read_manifest(store, store.root, folder.removeprefix("batch=")).get(key)
        shas.update([sha] if sha else [])
    copies = set(photos)
    for sha, batches in dedup_index.batches_holding(store, store.root, shas).items():
        for batch in batches:
            manifest = storage.read_manifest(store, store.root, batch)
            copies.update(canonical(lake.raw_uri(store.root, batch) + k) for k, s in manifest.items() if s == sha)
    return copies


# --- the derived files ----------------------------------------------------------------------------------


def _is_data_file(uri: str) -> bool:
    # Spark's markers (_SUCCESS), metadata (_job_metrics.json) and temporaries (.x) are not data.
    return not PurePosixPath(lake.split_uri(uri)[2]).name.startswith(("_", "."))


def _parquet_files(store, area_uri: str, columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """(uri, table) of every Parquet data file under the area that has a `path` column (and `columns`)."""
    for uri in store.list_files(area_uri):
        if uri.endswith(".parquet") and _is_data_file(uri):
            data = store.read(uri)
            names = pq.read_schema(io.BytesIO(data)).names
            if "path" in names and all(name in names for name in columns or []):
                yield uri, pq.read_table(io.BytesIO(data), columns=columns)


def _without_photos(erasure: Erasure, table: pa.Table) -> pa.Table:
    keep = pa.array([canonical(p) not in erasure.photos for p in table["path"].to_pylist()], type=pa.bool_())
    return table.filter(keep)


def _erase_parquet_rows(erasure: Erasure, area_uri: str) -> None:
    for uri, table in _parquet_files(erasure.lake, area_uri):
        kept = _without_photos(erasure, table)
        if kept.num_rows < table.num_rows:
            buffer = io.BytesIO()
            pq.write_table(kept, buffer, compression="snappy")  # keeps the schema and Spark's metadata
            erasure.replace(uri, buffer.getvalue())
            erasure.record(uri, table.num_rows - kept.num_rows, kept.num_rows)


def _bundles_to_read(erasure: Erasure, raw_batch_uri: str, manifest: storage.BatchManifest) -> list[str]:
    """The batch's bundles that may hold one of the photos: those whose manifest entry names one (the upload's
    `bundle-*.parquet`, the ingest job's `run=<id>/part-*.parquet`), and any Parquet file of the batch the
    manifest does not name (left by an interrupted attempt, contents unknown); not an attempt's listing."""
    batch = canonical(raw_batch_uri) + "/"
    named = {name for name, keys in manifest.bundles.items() if any(batch + key in erasure.photos for key in keys)}
    listing = raw_batch_uri + lakefiles.INGEST_FOLDER + "/"
    found = []
    for uri in erasure.lake.list_files(raw_batch_uri):
        name = uri[len(raw_batch_uri) :]
        if not name.endswith(".parquet") or name.rsplit("/", 1)[-1].startswith((".", "_")) or uri.startswith(listing):
            continue
        if name in named or name not in manifest.bundles:
            found.append(uri)
    return sorted(found)


def _erase_bundle_rows(erasure: Erasure, batches: list[str]) -> None:
    """raw/: each bundle of the photos' batches holding one of them, rewritten without it (laid out as the
    upload lays bundles out); a bundle left with no photo is deleted."""
    root = erasure.lake.root
    for batch in batches:
        raw = lake.raw_uri(root, batch)
        for uri in _bundles_to_read(erasure, raw, storage.read_batch_manifest(erasure.lake, root, batch)):
            table = pq.read_table(io.BytesIO(erasure.lake.read(uri)))
            kept = _without_photos(erasure, table)
            if kept.num_rows == table.num_rows:
                continue
            if kept.num_rows:
                erasure.replace(uri, storage.bundle_parquet(kept))
            else:
                erasure.delete(uri)
            erasure.record(uri, table.num_rows - kept.num_rows, kept.num_rows)


def _is_matrix_csv(uri: str) -> bool:
    """A part of the analysts' CSV (`pca_matrix/part-*.csv`, as Spark writes it) or a legacy `pca_matrix.csv`."""
    path = PurePosixPath(lake.split_uri(uri)[2])
    in_folder = path.parent.name == lake.PCA_CSV_FOLDER and path.suffix == ".csv" and _is_data_file(uri)
    return in_folder or path.name == lake.LEGACY_PCA_MATRIX


def _erase_csv_lines(erasure: Erasure, area_uri: str) -> None:
    """The analysts' CSV without the photo's records, parsed and written with `csv` (a name holding a comma, a
    quote, a newline, U+0085 or U+2028 stays one record)."""
    for uri in erasure.lake.list_files(area_uri):
        if not _is_matrix_csv(uri):
            continue
        records = list(csv.reader(io.StringIO(erasure.lake.read(uri).decode("utf-8"), newline="")))
        header = records[0] if records else []
        if "path" not in header:
            raise ValueError(f"{uri} has no path column: {header}")
        column = header.index("path")
        kept = [header] + [row for row in records[1:] if canonical(row[column]) not in erasure.photos]
        if len(kept) < len(records):
            buffer = io.StringIO(newline="")
            csv.writer(buffer, lineterminator="\n").writerows(kept)
            erasure.replace(uri, buffer.getvalue().encode("utf-8"))
            erasure.record(uri, len(records) - len(kept), len(kept) - 1)


def _erase_manifest_entries(erasure: Erasure, batches: list[str]) -> None:
    """The upload manifests name the photo, its hash and its bundle: drop its entries (a bundle
    entry left with no key goes too: the bundle was deleted)."""
    root = erasure.lake.root
    for batch in batches:
        raw = canonical(lake.raw_uri(root, batch)) + "/"
        manifest = storage.read_batch_manifest(erasure.lake, root, batch)
        kept = {key: sha for key, sha in manifest.files.items() if raw + key not in erasure.photos}
        if len(kept) < len(manifest.files):
            bundles = {name: [key for key in keys if key in kept] for name, keys in manifest.bundles.items()}
            uri = storage.batch_manifest_uri(root, batch)
            erasure.replace(
                uri, storage.BatchManifest(kept, {n: keys for n, keys in bundles.items() if keys}).to_json(batch)
            )
            erasure.record(uri, len(manifest.files) - len(kept), len(kept))


def _batch_of(erasure: Erasure, photo: str) -> str:
    """`raw/batch=<ds>/...` -> ds."""
    return erasure.key(photo).split("/")[1].removeprefix("batch=")


def _legacy_pca_folders(store) -> list[str]:
    """`pca/batch=<ds>/` (before per-basis outputs; each held every batch's rows): all of them, until they go."""
    area = _area(lake.legacy_pca_uri(store.root, _ANY_BATCH))
    return [area + name + "/" for name in store.list_children(area) if name.startswith("batch=")]


def _batch_data_prefixes(store, batch: str) -> list[str]:
    """Where rows derived from a batch's photos live: its derivatives, features, quarantine and reduced PCA on
    every basis (committed run folders, and any stale one a rerun left: both may hold the photo's rows)."""
    root = store.root
    reduced = lake.pca_reduced_uri(root, 1).rsplit("basis=", 1)[0]
    kept = [lake.derived_uri(root, batch), lake.features_uri(root, batch), lake.quarantine_uri(root, batch)]
    return kept + [
        f"{reduced}{name}/batch={batch}/" for name in store.list_children(reduced) if name.startswith("basis=")
    ]


def _photo_sha256s(erasure: Erasure) -> set[str]:
    """The erased photos' content hashes, from their batches' manifests (or their own objects)."""
    shas = set()
    for photo in erasure.photos:
        batch = _batch_of(erasure, photo)
        key = erasure.key(photo).split("/", 2)[2]
        sha = storage.read_manifest(erasure.lake, erasure.lake.root, batch).get(key)
        if sha is None and erasure.lake.exists(f"{erasure.lake.root}/{erasure.key(photo)}"):
            sha = storage.sha256_bytes(erasure.lake.read(f"{erasure.lake.root}/{erasure.key(photo)}"))
        if sha:
            shas.add(sha)
            # The hash of the stored (stripped) bytes too: the photo re-sent with new metadata stays out.
            report = erasure.lake.read_or_none(storage.ingestion_report_uri(erasure.lake.root, batch))
            outcomes = json.loads(report)["files"].values() if report else ()
            shas.update(o["content_sha256"] for o in outcomes if o.get("sha256") == sha and o.get("content_sha256"))
    return shas


def _erase_from_landing(erasure: Erasure, batches: list[str], shas: set[str], s3_client: Any) -> dict[str, list[str]]:
    """Landing files of these contents still where the batch's ingestion report saw them, or where
    `landing_after=archive` moved them (the original, EXIF and all): deleted (every version), and their entries
    dropped from the report. A copy that cannot be deleted is listed in `landing_files_left`."""
    done: dict[str, list[str]] = {"landing_files_deleted": [], "landing_files_left": []}
    for batch in batches:
        uri = storage.ingestion_report_uri(erasure.lake.root, batch)
        data = erasure.lake.read_or_none(uri)
        if not data:
            continue
        report = json.loads(data)
        matching = [f for f, outcome in report["files"].items() if outcome.get("sha256") in shas]
        landing = report.get("landing", "")
        copies = [f for landing_file in matching for f in (landing_file, _archived(landing, landing_file))]
        for copy in filter(None, copies):
            try:
                store, _ = storage.open_store(copy.rsplit("/", 1)[0], s3_client)
                content = store.read_or_none(copy)
                if content is None or storage.sha256_bytes(content) not in shas:
                    continue  # gone already, or another file now has the name
                if not erasure.dry_run:
                    store.delete(copy)
                done["landing_files_deleted"].append(copy)
            except Exception as error:  # noqa: BLE001 - the landing is someone else's bucket: say so, go on
                log.warning("could not delete %s from the landing: %s", copy, error)
                done["landing_files_left"].append(f"{copy}: {type(error).__name__}: {error}")
        if matching:
            kept = {f: o for f, o in report["files"].items() if f not in matching}
            erasure.replace(uri, json.dumps({**report, "files": kept}, indent=1, ensure_ascii=True).encode())
            erasure.replace(
                storage.ingestion_counts_uri(erasure.lake.root, batch), lakefiles.ingestion_counts_json(batch, kept)
            )
            erasure.record(uri, len(matching), len(kept))
    return done


def _archived(landing: str, landing_file: str) -> str | None:
    """Where `landing_after=archive` put the landing file (None: the report names no landing folder above it)."""
    if not landing or not landing_file.startswith(landing):
        return None
    return upload.archive_uri(landing, landing_file)


def _left_in_raw(erasure: Erasure, batches: list[str]) -> list[str]:
    """The photos still named by their batch's manifest or still stored as their own object, after the erasure."""
    root, left = erasure.lake.root, []
    for batch in batches:
        raw = canonical(lake.raw_uri(root, batch)) + "/"
        left += [key for key in storage.read_manifest(erasure.lake, root, batch) if raw + key in erasure.photos]
    return left + [erasure.key(p) for p in erasure.photos if erasure.lake.exists(f"{root}/{erasure.key(p)}")]


def erase(
    root: str, target: str, *, dry_run: bool = False, s3_client: Any = None, owner: str | None = None
) -> dict[str, Any]:
    """Erase the photo `target` (key, URI or sha256) and its derived rows from the lake at `root`, holding the
    lock of each batch concerned (a pipeline run of the batch at the same time is refused, and refuses us)."""
    store = open_lake(root, s3_client)
    photos = resolve(store, target)
    erasure = Erasure(
        lake=store, dry_run=dry_run, photos=photos if SHA256.match(target.lower()) else _every_copy(store, photos)
    )
    log.info("erasing %s: %d photo(s) %s", target, len(erasure.photos), sorted(erasure.photos))
    batches = sorted({_batch_of(erasure, photo) for photo in erasure.photos})
    owner = owner or f"erase-{os.getpid()}@{socket.gethostname()}"
    held: list[str] = []
    try:
        if not dry_run:
            for batch in batches:  # in date order: two erasures never wait on each other crosswise
                locks.acquire(store, store.root, batch, owner)
                held.append(batch)
        report = _erase_locked(erasure, target, batches, s3_client)
    finally:
        for batch in held:
            locks.release(store, store.root, batch, owner)
    return report


def _erase_locked(erasure: Erasure, target: str, batches: list[str], s3_client: Any) -> dict[str, Any]:
    store, dry_run = erasure.lake, erasure.dry_run
    shas = {target.lower()} if SHA256.match(target.lower()) else _photo_sha256s(erasure)
    if shas and erasure.photos and not dry_run:
        # First: an upload from now on refuses it. Its index entry goes last: a rerun finds the batch through it.
        dedup_index.record_erased(store, store.root, shas, drop=False)
    areas = _legacy_pca_folders(store) + [prefix for batch in batches for prefix in _batch_data_prefixes(store, batch)]
    areas.sort(key=lambda uri: uri.startswith(lake.features_uri(store.root)))  # features last: the sha256 index
    for area in areas:
        _erase_parquet_rows(erasure, area)
        _erase_csv_lines(erasure, area)
    _erase_bundle_rows(erasure, batches)  # before the manifests: they say which bundle holds the photo
    _erase_manifest_entries(erasure, batches)
    for photo in sorted(erasure.photos):  # a photo stored as its own object (lakes from before bundles)
        uri = f"{store.root}/{erasure.key(photo)}"
        if store.exists(uri):
            erasure.delete(uri)
    if not erasure.deleted and not erasure.rewritten:
        raise LookupError(f"nothing in {store.root} matches {target}: no photo, no derived row; nothing erased")
    landing = _erase_from_landing(erasure, batches, shas, s3_client)
    purged = 0
    if not dry_run:  # every older version under the batches' prefixes, whichever key holds it
        prefixes = (
            [lake.raw_uri(store.root, b) for b in batches]
            + areas
            + [lake.pca_stats_uri(store.root, b) for b in batches]
        )
        purged = sum(store.purge_noncurrent(prefix) for prefix in prefixes)
        for batch in batches:  # the page holds thumbnails: redraw it without the erased photo
            report_page.rebuild(store, store.root, batch)
        if shas and erasure.photos:
            dedup_index.drop_entries(store, store.root, shas)
    report = {
        "target": target,
        "dry_run": dry_run,
        "photos": sorted(erasure.key(p) for p in erasure.photos),
        "batches": batches,
        "raw_objects_deleted": erasure.deleted,
        "files_rewritten": erasure.rewritten,
        "rows_removed": sum(item["rows_removed"] for item in erasure.rewritten),
        "sha256_recorded_as_erased": sorted(shas),
        "noncurrent_versions_purged": purged,
        **landing,
        "raw_left": [] if dry_run else _left_in_raw(erasure, batches),
    }
    log.info(
        "%s: %d object(s) deleted, %d file(s) rewritten, %d row(s) removed, %d old version(s) purged",
        "dry run" if dry_run else "done",
        len(erasure.deleted),
        len(erasure.rewritten),
        report["rows_removed"],
        purged,
    )
    if report["raw_left"] or report["landing_files_left"]:
        raise ErasureIncomplete(report)
    return report
