"""Retention by batch date: every output of a batch goes when its photos' retention ends (issue 11).

S3's lifecycle expires an object by its own age. A batch re-expressed on a new basis 300 days after its photos
arrived would keep its reduced rows 300 days past them, and a committed basis would expire while still current.
So the nightly run sweeps by the batch's DATE instead: on the night of <batch>, every batch older than
`oldest_retained(batch, retention_days)` loses its raw photos, features, quarantine, statistics, reduced rows on
every basis, run report, batch lock and dedup index entries, every version of every object (the bucket is
versioned). The lifecycle stays as a backstop with a grace (docs/gdpr.md).

Proportional to one night, not to history: a watermark (`index/retention.json`, the last batch date swept)
makes each night touch only the dates expired since the last sweep, by their known prefixes (no listing of
the areas). Skipped nights are caught up by the next sweep (it enumerates every date after the watermark).
The first sweep of a lake without a watermark lists the areas' batch folders once.

Crash-safe and idempotent: a batch's derived outputs go first, its raw photos and manifest last (the manifest
names the index entries to drop), and the watermark moves only once a batch is wholly gone, so a rerun
finishes what a crash left. A batch whose lock is held (an erasure, a run) is left for the next night.

Bounded, whatever batch a run names: the sweep's night is the earliest of the run's batch, today in Paris
(the wall clock) and the newest ingested batch, so a mistyped year never expires anything the clock still
retains; and a night that would delete more than `max_batches` batches (the setting fruits_retention_max_batches)
is refused before deleting anything, unless that setting is raised for the catch-up.

Originals go sooner (issue 22, docs/gdpr.md "What the lake keeps"): `sweep_originals` deletes a batch's photo
bundles (raw/batch=<ds>/bundle-*.parquet) once `original_retention_days` have passed and its features (whose
run wrote the derivatives) are committed and cover them, with its own watermark; a batch not featurized yet
keeps its originals for its catch-up, and holds the watermark back like a locked one. With 0 days (the
default) the run that commits a batch's features removes its originals after its jobs
(`remove_featurized_originals`), and the sweep takes what an earlier night left;
the batch's manifest and ingestion report stay in raw/ until the batch expires (the manifest names the dedup
index entries), and its derivatives (derived/) and rows stay the whole retention.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

import lakefiles

from fruits import dedup_index, lake, locks, storage
from fruits.settings import VARIABLE_PREFIX, PipelineSettings

log = logging.getLogger("fruits.retention")

WATERMARK_NAME = "retention.json"
ORIGINALS_WATERMARK_NAME = "retention-originals.json"
# Areas keyed by batch=<ds>/ directly (the reduced area is keyed by basis first).
BATCH_AREAS = (lake.DERIVED_AREA, "features", "quarantine", "reports")
# The setting (Variable) that lets one night sweep more batches, and its default.
MAX_BATCHES_SETTING = VARIABLE_PREFIX + "retention_max_batches"
DEFAULT_MAX_BATCHES = PipelineSettings.retention_max_batches


class TooManyExpired(ValueError):
    """A night would delete more batches than the setting allows: nothing was deleted."""


def oldest_retained(batch: str, retention_days: int) -> str:
    """The oldest batch still retained on the night of `batch`: the last `retention_days` dates, tonight's included."""
    if not isinstance(retention_days, int) or retention_days < 1:
        raise ValueError(f"retention_days must be a positive integer, not {retention_days!r}")
    return (dt.date.fromisoformat(lake.check_batch(batch)) - dt.timedelta(days=retention_days - 1)).isoformat()


def watermark_uri(root: str, name: str = WATERMARK_NAME) -> str:
    return lake.area_uri(root, "index") + name


def read_watermark(store: Any, root: str, name: str = WATERMARK_NAME) -> str | None:
    """The last batch date wholly swept (None: never swept)."""
    data = store.read_or_none(watermark_uri(root, name))
    if not data:
        return None
    try:
        return lake.check_batch(json.loads(data)["swept_through"])
    except ValueError as error:  # e.g. moved to 2061 by a run before dates were bounded: a person decides
        raise ValueError(
            f"{watermark_uri(root, name)}: {error}; set swept_through to the last date really swept"
        ) from None


def _write_watermark(store: Any, root: str, batch: str, retention_days: int, name: str = WATERMARK_NAME) -> None:
    body = json.dumps(
        {
            "swept_through": batch,
            "retention_days": retention_days,
            "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        indent=1,
    ).encode()
    store.put(watermark_uri(root, name), body, storage.sha256_bytes(body))


def _dates(after: str, through: str) -> list[str]:
    start, end = dt.date.fromisoformat(after) + dt.timedelta(days=1), dt.date.fromisoformat(through)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _bases(store: Any, root: str) -> list[str]:
    """`basis=<NNNN>` folder names under pca/reduced/ (a handful: one per basis ever fitted); any other
    folder there (`basis=tmp`, `basis=01`) is not the jobs' and is left alone, with a warning."""
    reduced = lake.pca_reduced_root(root)
    names = []
    for name in store.list_children(reduced):
        if lake.basis_version_of(name) is None:
            log.warning("retention: ignoring %s%s/: not a basis folder (basis=<NNNN>)", reduced, name)
        else:
            names.append(name)
    return names


def sweep_night(batch: str, ingested: list[str], *, now: dt.datetime | None = None) -> str:
    """The night the sweep expires from: the run's batch, but never after today in Paris (the wall clock)
    nor after the newest of the `ingested` batches (raw/'s partitions) up to then."""
    today = (dt.date.fromisoformat(lake.latest_batch(now)) - dt.timedelta(days=1)).isoformat()
    night = min(lake.check_batch(batch, now=now), today)
    return max([b for b in ingested if b <= night], default=night)


def batch_prefixes(root: str, batch: str, bases: list[str]) -> list[str]:
    """Every prefix holding a batch's photos or rows derived from them, derived rows first, raw last."""
    reduced = [f"{lake.pca_reduced_root(root)}{name}/batch={lake.check_batch(batch)}/" for name in bases]
    return [
        *reduced,
        lake.pca_stats_uri(root, batch),
        lake.legacy_pca_uri(root, batch),
        lake.quarantine_uri(root, batch),
        lake.features_uri(root, batch),
        lake.reports_uri(root, batch),
        lake.derived_uri(root, batch),
        lake.raw_uri(root, batch),
    ]


def _first_sweep_batches(store: Any, root: str, bases: list[str]) -> list[str]:
    """Without a watermark: the batches any area holds (a few listings, once per lake)."""
    areas = [
        lake.area_uri(root, "raw"),
        lake.pca_stats_root(root),
        lake.area_uri(root, "pca"),
        *(lake.area_uri(root, area) for area in BATCH_AREAS),
        *(f"{lake.pca_reduced_root(root)}{name}/" for name in bases),
    ]
    return sorted({batch for area in areas for batch in storage.batch_partitions(store, area)})


# --------------------------------------------------------------------------- deleting every version


def delete_prefix(store: Any, prefix_uri: str, *, dry_run: bool = False) -> int:
    """Delete every object under the prefix, every version and delete marker on S3; returns how many went."""
    return store.delete_prefix(prefix_uri, dry_run=dry_run)


# --------------------------------------------------------------------------- one batch, then the sweep


def stored_content_hashes(store: Any, root: str, batch: str) -> Iterator[str]:
    """The hashes of the stored (stripped) bytes the index also holds for the batch's photos (the ingestion
    records both: a photo re-sent with new metadata is found by either), from its ingestion report, streamed."""
    for _, outcome in storage.json_section(store, storage.ingestion_report_uri(root, batch), "files"):
        if outcome.get("outcome") == "uploaded" and outcome.get("content_sha256"):
            yield outcome["content_sha256"]


def photo_hashes(store: Any, root: str, batch: str) -> Iterator[str]:
    """Both hashes of each of the batch's photos, streamed: as received (its manifest), as stored (stripped)."""
    yield from (sha for _, sha in storage.json_section(store, storage.batch_manifest_uri(root, batch), "files"))
    yield from stored_content_hashes(store, root, batch)


def sweep_batch(
    store: Any, root: str, batch: str, bases: list[str], *, owner: str, dry_run: bool = False
) -> dict[str, Any]:
    """Delete everything of one expired batch under its lock. Index entries first (the manifest names them),
    then derived outputs, raw last, then the lock itself."""
    if not dry_run:
        locks.acquire(store, root, batch, owner)  # raises BatchLocked: an erasure or a run holds it
    photos = storage.manifest_photo_count(store, root, batch)
    dropped = 0 if dry_run else dedup_index.forget(store, root, batch, photo_hashes(store, root, batch))
    deleted = {prefix: delete_prefix(store, prefix, dry_run=dry_run) for prefix in batch_prefixes(root, batch, bases)}
    deleted = {prefix: count for prefix, count in deleted.items() if count}
    delete_prefix(store, lake.lock_uri(root, batch), dry_run=dry_run)  # ours now (or the batch's old one)
    return {
        "batch": batch,
        "objects_deleted": sum(deleted.values()),
        "prefixes": deleted,
        "photos_in_manifest": photos,
        "index_entries_dropped": dropped,
    }


def _pending(store: Any, root: str, through: str, watermark: str | None, bases: list[str]) -> list[str]:
    """The batch dates up to `through` not swept yet: after the watermark, or those the lake holds."""
    if watermark is None:
        return [b for b in _first_sweep_batches(store, root, bases) if b <= through]
    return _dates(watermark, through)


def original_bundles(store: Any, root: str, batch: str) -> list[str]:
    """The batch's photo bundles (its originals): those its manifest names (the upload's, or the Spark ingest
    job's run=<id>/ parts), any unnamed upload leftover, and what an ingest attempt left in `_ingest/` (its
    listing, its staged landing: originals with their metadata); not the manifest, not the ingestion report."""
    raw = lake.raw_uri(root, batch)
    named = {raw + name for name, _ in storage.manifest_bundles(store, root, batch)}  # streamed: ~170 MB at 1 M
    listed = set(store.list_files(raw))  # one listing: what is still there
    return sorted(
        uri
        for uri in listed
        if uri in named
        or storage.is_bundle_name(uri.rsplit("/", 1)[-1])
        or uri.startswith(raw + lakefiles.INGEST_FOLDER + "/")
    )


def featurized_whole(store: Any, root: str, batch: str) -> bool:
    """Whether the batch's committed features cover every bundle its manifest names now (streamed): those the
    featurize run recorded beside its files (lakefiles.COVERED_BUNDLES; an erasure may since have dropped some).
    A photo a rerun stored after that commit is not covered, so its original stays for the featurize that covers
    it. A marker naming no such file (features committed before it existed) covers the batch."""
    marker = lake.read_commit(store, lake.features_uri(root, batch))
    if not marker:
        return False
    if not marker.get(lakefiles.COVERED_BUNDLES_FIELD):
        return True
    covered = set(json.loads(store.read(marker["location"] + marker[lakefiles.COVERED_BUNDLES_FIELD])))
    return all(name in covered for name, _ in storage.manifest_bundles(store, root, batch))


def remove_batch_originals(store: Any, root: str, batch: str, *, owner: str, dry_run: bool = False) -> int | None:
    """Delete one batch's originals (original_bundles, and every version under its `_ingest/`: staged landing
    copies carry their metadata) under its lock, checked under it too (a rerun holding it may be adding photos);
    how many objects went, or None while its features do not cover them (its catch-up needs them). Raises
    BatchLocked."""
    with contextlib.nullcontext() if dry_run else locks.holding(store, root, batch, owner):
        bundles = original_bundles(store, root, batch)
        # Waits for its catch-up only when it holds photos: an attempt's leftovers alone need no featurize.
        photos = bundles and any(storage.json_section(store, storage.batch_manifest_uri(root, batch), "files"))
        if photos and not featurized_whole(store, root, batch):
            return None
        staged = lake.raw_uri(root, batch) + lakefiles.INGEST_FOLDER + "/"  # every version: the ingest leaves markers
        prefixes = [uri for uri in bundles if not uri.startswith(staged)] + [staged]
        return sum(store.delete_prefix(uri, dry_run=dry_run) for uri in prefixes)


def sweep_originals(
    store: Any,
    root: str,
    batch: str,
    original_retention_days: int,
    *,
    owner: str = "retention-sweep",
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """On the night of `batch` (bounded by sweep_night), delete the originals (photo bundles, every version)
    of the batches older than `oldest_retained(night, original_retention_days)`, oldest first, each under
    its lock; the watermark (index/retention-originals.json) moves after each. A batch whose features do not
    cover its bundles is `waiting` (its catch-up needs them). With 0 days the batches before tonight's are swept
    (tonight's go with its run: remove_featurized_originals). Returns {oldest_original_retained, expired, swept
    ({batch: bundles deleted}), locked, waiting, objects_deleted, dry_run}."""
    keep_from = oldest_retained(
        sweep_night(batch, storage.raw_batches(store, root), now=now), max(original_retention_days, 1)
    )
    through = (dt.date.fromisoformat(keep_from) - dt.timedelta(days=1)).isoformat()
    before = read_watermark(store, root, ORIGINALS_WATERMARK_NAME)
    expired = _pending(store, root, through, before, _bases(store, root))
    swept: dict[str, int] = {}
    locked: list[str] = []
    waiting: list[str] = []
    for day in expired:
        try:
            deleted = remove_batch_originals(store, root, day, owner=owner, dry_run=dry_run)
        except locks.BatchLocked as error:
            log.warning("retention of originals: %s; left for the next night", error)
            locked.append(day)
            continue
        if deleted is None:
            waiting.append(day)
            continue
        swept[day] = deleted
        if not locked and not waiting and not dry_run:
            _write_watermark(store, root, day, original_retention_days, ORIGINALS_WATERMARK_NAME)
    if before is None and not locked and not waiting and not dry_run and (not expired or expired[-1] < through):
        _write_watermark(store, root, through, original_retention_days, ORIGINALS_WATERMARK_NAME)
    report = {
        "batch": batch,
        "original_retention_days": original_retention_days,
        "oldest_original_retained": keep_from,
        "expired": expired,
        "swept": {day: count for day, count in swept.items() if count},
        "locked": locked,
        "waiting": waiting,
        "objects_deleted": sum(swept.values()),
        "dry_run": dry_run,
    }
    log.info(
        "retention of originals on %s (%d days, keeping %s on): %d bundle object(s) deleted%s%s",
        batch,
        original_retention_days,
        keep_from,
        report["objects_deleted"],
        f"; locked, left: {locked}" if locked else "",
        f"; not featurized yet, kept: {waiting}" if waiting else "",
    )
    return report


def remove_featurized_originals(
    store: Any, root: str, batches: list[str], *, owner: str, dry_run: bool = False
) -> dict[str, Any]:
    """With fruits_original_retention_days 0, after the run's jobs: delete the originals of the batches it
    featurized whose committed features now cover them (remove_batch_originals); the others stay for the
    next night's sweep. Returns {removed ({batch: objects}), waiting, locked, objects_deleted, dry_run}."""
    removed: dict[str, int] = {}
    waiting, locked = [], []
    for batch in batches:
        try:
            deleted = remove_batch_originals(store, root, batch, owner=owner, dry_run=dry_run)
        except locks.BatchLocked as error:
            log.warning("originals of %s: %s; left for the next night's sweep", batch, error)
            locked.append(batch)
            continue
        if deleted is None:
            waiting.append(batch)
        else:
            removed[batch] = deleted
    report = {
        "removed": removed,
        "waiting": waiting,
        "locked": locked,
        "objects_deleted": sum(removed.values()),
        "dry_run": dry_run,
    }
    log.info(
        "originals removed with their features' commit: %d object(s) of %s%s",
        report["objects_deleted"],
        sorted(removed),
        f"; features not covering them yet, kept: {waiting}" if waiting else "",
    )
    return report


def sweep_expired(
    store: Any,
    root: str,
    batch: str,
    retention_days: int,
    *,
    owner: str = "retention-sweep",
    dry_run: bool = False,
    max_batches: int = DEFAULT_MAX_BATCHES,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """On the night of `batch` (bounded by sweep_night), delete every output of the batches older than
    `oldest_retained(night, retention_days)` and not swept yet (after the watermark), oldest first, moving the
    watermark after each. More than `max_batches` of them: TooManyExpired, nothing deleted.

    Returns {batch, retention_days, oldest_retained, watermark_before, watermark_after, expired (dates
    considered), swept (per batch: objects_deleted, prefixes, index_entries_dropped), locked (dates left for
    the next night), objects_deleted, bases_deleted, dry_run}. A locked batch stops the watermark there."""
    ingested = storage.raw_batches(store, root)  # one short listing: raw/ holds only retained batches
    night = sweep_night(batch, ingested, now=now)
    keep_from = oldest_retained(night, retention_days)
    through = (dt.date.fromisoformat(keep_from) - dt.timedelta(days=1)).isoformat()
    before = read_watermark(store, root)
    bases = _bases(store, root)
    expired = _pending(store, root, through, before, bases)
    # Dates without photos (raw goes last, so a batch with anything left has raw) are not batches deleted.
    holding = expired if before is None else sorted(set(expired) & set(ingested))
    if len(holding) > max_batches:
        raise TooManyExpired(
            f"retention on {batch} (night {night}, keeping {keep_from} on) would delete {len(holding)} batches "
            f"({holding[0]} .. {holding[-1]}), more than the {max_batches} allowed in one night: nothing deleted. "
            f"If that is right (a catch-up), set the Variable {MAX_BATCHES_SETTING} to {len(holding)} for this run."
        )
    swept, locked, watermark = [], [], before
    for day in expired:
        try:
            swept.append(sweep_batch(store, root, day, bases, owner=owner, dry_run=dry_run))
        except locks.BatchLocked as error:
            log.warning("retention: %s; left for the next night", error)
            locked.append(day)
        if not locked and not dry_run:
            watermark = day
            _write_watermark(store, root, day, retention_days)
    if before is None and not locked and not dry_run and (watermark or "") < through:
        watermark = through  # nothing older exists: later nights start here, not from the dawn of time
        _write_watermark(store, root, through, retention_days)
    bases_deleted = [] if dry_run else drop_unused_bases(store, root)
    report = {
        "batch": batch,
        "night": night,
        "retention_days": retention_days,
        "oldest_retained": keep_from,
        "watermark_before": before,
        "watermark_after": watermark,
        "expired": expired,
        "swept": [s for s in swept if s["objects_deleted"] or s["index_entries_dropped"]],
        "locked": locked,
        "objects_deleted": sum(s["objects_deleted"] for s in swept),
        "bases_deleted": bases_deleted,
        "dry_run": dry_run,
    }
    log.info(
        "retention on %s (%d days, keeping %s on): %d expired date(s) swept, %d object(s) deleted, "
        "watermark %s -> %s%s",
        batch,
        retention_days,
        keep_from,
        len(expired) - len(locked),
        report["objects_deleted"],
        before,
        watermark,
        f"; locked, left: {locked}" if locked else "",
    )
    return report


def drop_unused_bases(store: Any, root: str) -> list[int]:
    """Older bases (below the current version) with no batch left on them: their model and reduced folders
    go (a basis is an aggregate of the photos it was fitted on). The current and newer ones always stay."""
    data = store.read_or_none(lake.pca_current_basis_uri(root))
    if not data:
        return []
    current = int(json.loads(data)["version"])
    dropped = []
    for name in _bases(store, root):
        version = lake.basis_version_of(name)
        reduced = f"{lake.pca_reduced_root(root)}{name}/"
        if version < current and not storage.batch_partitions(store, reduced):
            delete_prefix(store, lake.pca_basis_uri(root, version))
            delete_prefix(store, reduced)
            dropped.append(version)
    return dropped
