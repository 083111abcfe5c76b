"""Ingest one batch's landing on the cluster: the per-photo work of fruits.upload, distributed.

    spark-submit spark_jobs/ingest.py --listing URI --landing URI --raw URI --index URI --batch-id DS
        [--retention-days N] [--max-photo-bytes N] [--landing-after keep|archive|delete] [--keep-originals]

The Airflow side listed the landing (metadata only) and wrote the listing (fruits.upload.write_listing:
Parquet rows `uri` (the landing file's name as stored, UTF-8 bytes), `source` (where its bytes are read: the
landing itself, or the lake's staging copy of a landing outside S3), `key`, `size`, `reason` (set for the
files their name or size refuse)).
Then, here, with one read of each landing photo:
1. executors: each listed photo read from its source with one GET (the listing is the batch's own date only),
   `photos.examine`d (identify, strip, hash both ways) in mapInPandas, and, when storable and not already in the
   batch's manifest, streamed with its key as a Parquet bundle row (binaryFile's columns + sha256) into the job's
   run folder `raw/batch=<ds>/run=<run id>/`; a photo bigger than its model pixels is decoded there, its one
   decode of the night, and its row carries featurize's DECODED_COLUMNS instead of its bytes (featurize reads
   those, not the photo; `--keep-originals`: its bytes too); the small columns go to the driver through an
   accumulator;
2. driver: each landing file's outcome (`decide`): rejected, already in this batch, already in another batch
   that keeps it long enough (one index read per shard touched), or new; the few bundles holding a photo the
   decision does not store (a twin in the night, a photo another batch holds) rewritten without it;
3. driver: `_uploads.json` (conditional write, the commit: it names the bundles), the index (conditional
   writes), then `_ingestion.json` (one outcome per landing file);
4. executors: the landing files now in the lake archived or deleted when `--landing-after` says so.
A failed run removes its run folder (jobio.discard_run): nothing half-written is ever named.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import lakefiles
import lakeindex
import photos

try:  # the driver imports this module as a script; workers import it from --py-files
    import featurize
    import jobio
except ImportError:  # pragma: no cover - run as `python -m spark_jobs.ingest`
    from spark_jobs import featurize, jobio

UPLOADS_MANIFEST = "_uploads.json"  # fruits.storage's names, checked equal by a test
INGESTION_REPORT = lakefiles.INGESTION_REPORT
ERASED = "erased.json"
MANIFEST_ATTEMPTS = 20
BUNDLE_MAX_PHOTOS = 1000  # fruits.storage.BUNDLE_MAX_PHOTOS: photos per bundle file
BUNDLE_MAX_BYTES = 128 * 1024 * 1024  # fruits.storage.BUNDLE_MAX_BYTES: bytes of photos per bundle file
# Photos per read task (a phone photo is ~50 ms of work: a task of seconds to a minute; half a bundle, so that the
# two tasks write_bundles coalesces into a bundle fill one file, not a full one and a sliver) and per Arrow frame
# a worker yields (its memory: 16 x 3 MB photos, not a task's).
PHOTOS_PER_TASK = BUNDLE_MAX_PHOTOS // 2
PHOTOS_PER_FRAME = 16
# What the driver decides on, per photo read (no content), through an accumulator of the write's own stage.
EXAMINED_COLUMNS = ("uri", "key", "sha256", "content_sha256", "format", "metadata", "reason", "detail")
BUNDLE_PHOTO_SCHEMA = f"path string, length bigint, content binary, sha256 string, {featurize.DECODED_COLUMNS}"
KEY_COLLISION = "its name and the first 8 hex digits of its hash are another photo's; rename it and rerun"


def spark_spelling(uri: str) -> str:
    """`file:///x` as Spark's file sources spell it (`file:/x`); any other URI as it is."""
    return re.sub(r"^file:/+", "file:/", uri)


def alternate_key(key: str, sha256: str) -> str:
    path = PurePosixPath(key)
    return str(path.with_name(f"{path.stem}-{sha256[:8]}{path.suffix}"))


# ------------------------------------------------------------------------------------ executors


def stored_key(key: str, sha256: str, contested: frozenset[str]) -> str:
    """The photo's key in the batch: the listing's, or, for a name the batch's manifest already holds or two
    landing files share, `alternate_key` (decided before the read: the bundles are written in the same pass)."""
    return alternate_key(key, sha256) if key in contested else key


def contested_keys(listed: list[dict[str, Any]], recorded: dict[str, str]) -> frozenset[str]:
    """The listing's keys a photo may not take as they are: held by the batch's manifest, or listed twice."""
    counted = Counter(row["key"] for row in listed if not row["reason"])
    return frozenset(key for key, times in counted.items() if times > 1 or key in recorded)


def examine_and_bundle(
    erased: frozenset[str],
    max_photo_bytes: int,
    raw_uri: str,
    contested: frozenset[str],
    recorded,
    examined,
    reads,
    keep_originals: bool = False,
):
    """The mapInPandas function of the one pass over the landing: each listed photo read from its `source` with
    one GET (the listing already listed it: no listing, no HEAD) and examined; its small columns go to the
    driver through `examined` (an accumulator); a storable photo (no reason, not in `recorded`, a broadcast of
    the batch's manifest hashes) is yielded as a bundle row in this same pass: its stripped bytes, or, for a
    photo bigger than its model pixels, decoded here, those pixels and its derivative (+ its stripped bytes only
    with `keep_originals`: a fruits_original_retention_days window). A photo gone since the listing has no row
    (its outcome says so); any other read error fails the task."""

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        files, columns = None, [c.split()[0] for c in BUNDLE_PHOTO_SCHEMA.split(", ")]
        for frame in frames:
            rows, small = [], []
            for uri, source, key in zip(frame["uri"], frame["source"], frame["key"], strict=True):
                files = files or lakefiles.open_files(source)
                data = files.read_or_none(source)
                reads.add(1)
                if data is None:
                    continue
                if len(data) > max_photo_bytes:  # grew since the listing
                    verdict = photos.Verdict(photos.sha256_hex(data), reason="too_large")
                else:
                    try:
                        verdict = photos.examine(data, erased)
                    except Exception as error:  # noqa: BLE001 - one odd file never fails the night
                        verdict = photos.Verdict(photos.sha256_hex(data), reason="unreadable", detail=repr(error))
                path_key = stored_key(key, verdict.sha256, contested)
                small.append(
                    (uri, path_key, verdict.sha256, verdict.content_sha256)
                    + (verdict.format, verdict.metadata, verdict.reason, verdict.detail)
                )
                if not verdict.reason and recorded.value.isdisjoint((verdict.sha256, verdict.content_sha256)):
                    decoded = featurize.decoded_columns(verdict.content)  # a big photo's one decode of the night
                    rows.append(
                        {
                            "path": raw_uri + path_key,
                            "length": len(verdict.content),
                            "content": verdict.content if keep_originals or decoded is None else None,
                            "sha256": verdict.sha256,
                            "content_sha256": verdict.content_sha256,
                            **(decoded or dict.fromkeys(featurize.DECODED_INPUT)),
                        }
                    )
                if len(rows) == PHOTOS_PER_FRAME:  # a worker holds this many photos' bytes at once, not a task's
                    yield pd.DataFrame(rows, columns=columns)
                    rows = []
            examined.add(small)
            yield pd.DataFrame(rows, columns=columns)

    return run


def bundled_bytes(listed: list[dict[str, Any]], keep_originals: bool) -> int:
    """What the bundles of the listing's candidates will hold (from the listing's sizes): a photo bigger than its
    model pixels brings them, and its own bytes only with keep_originals; a smaller photo its bytes."""
    pixels = featurize.PIXELS_BYTES
    return sum(
        pixels + (size if keep_originals else 0) if size > pixels else size
        for size in (row["size"] for row in listed if not row["reason"])
    )


def bundle_landing(spark, listing, job: dict[str, Any], candidates: int, bundle_bytes: int, written_at):
    """The bundle rows (binaryFile's columns + sha256 + featurize's DECODED_COLUMNS) of the listing's storable
    photos (no reason from the listing), read and examined on the executors in tasks of at most PHOTOS_PER_TASK
    photos and BUNDLE_MAX_BYTES of `bundle_bytes` (a task's photos make one bundle); `job`: examine_and_bundle's
    arguments."""
    from pyspark.sql import functions as F

    wanted = listing.where(F.col("reason") == "").select(F.decode("uri", "UTF-8").alias("uri"), "source", "key")
    tasks = max(1, -(-candidates // PHOTOS_PER_TASK), -(-bundle_bytes // BUNDLE_MAX_BYTES))
    photos_read = wanted.repartition(tasks).mapInPandas(examine_and_bundle(**job), BUNDLE_PHOTO_SCHEMA)
    return photos_read.select(
        "path",
        F.lit(written_at).cast("timestamp").alias("modificationTime"),
        "length",  # of the stored bytes, in the bundle or not
        "content",
        "sha256",
        *featurize.DECODED_NAMES,
    ).sortWithinPartitions("path")


def write_bundles(rows, folder: str, parts: int, mode: str = "errorifexists") -> None:
    # Photos are compressed already: no codec; at most BUNDLE_MAX_PHOTOS a file.
    rows.coalesce(parts).write.mode(mode).option("compression", "none").option(
        "maxRecordsPerFile", BUNDLE_MAX_PHOTOS
    ).parquet(folder)


def bundled_photos(spark, run_folder: str) -> dict[str, list[tuple[str, str]]]:
    """{bundle file URI: its photos' (path, sha256)} of the run folder (those two columns only are read)."""
    from pyspark.sql import functions as F

    if not any(name.endswith(".parquet") for name, _ in jobio.HadoopFiles(spark).list_files(run_folder)):
        return {}
    found: dict[str, list[tuple[str, str]]] = {}
    for row in spark.read.parquet(run_folder).select(F.input_file_name().alias("file"), "path", "sha256").collect():
        found.setdefault(row.file, []).append((row.path, row.sha256))
    return found


def keep_only_stored(spark, run_folder: str, bundled: dict[str, list[tuple[str, str]]], stored: dict[str, str]):
    """The run folder's bundles holding each `stored` photo ({path: sha256}) once and nothing else: a bundle
    holding another photo (a twin in the night, a photo another batch holds, known only after the pass) or a
    second copy of one is rewritten without it, then deleted; returns bundled_photos after."""
    from pyspark.sql import functions as F

    times = Counter(path for photos_in in bundled.values() for path, _ in photos_in)
    dirty = {
        file
        for file, photos_in in bundled.items()
        if any(stored.get(path) != sha or times[path] > 1 for path, sha in photos_in)
    }
    if not dirty:
        return bundled
    wanted = sorted({(path, sha) for file in dirty for path, sha in bundled[file] if stored.get(path) == sha})
    if wanted:
        pairs = F.broadcast(spark.createDataFrame(wanted, "path string, sha256 string"))
        bundles = spark.read.parquet(*sorted(dirty))
        kept = bundles.join(pairs, ["path", "sha256"], "left_semi").dropDuplicates(["path"])
        rows = kept.select(*bundles.columns).sortWithinPartitions("path")  # the join put its keys first
        write_bundles(rows, run_folder, len(dirty), mode="append")  # no more bytes than the bundles they replace
    for file in dirty:
        jobio.delete(spark, file)
    return bundled_photos(spark, run_folder)


# ------------------------------------------------------------------------------------ driver


def decide(
    listing: list[dict[str, Any]],
    examined: dict[str, dict[str, Any]],
    recorded: dict[str, str],
    batch: str,
    holders: Any,
    retention_days: int | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(every landing file's outcome, {landing uri: key} of the photos to store). `examined`: each photo read,
    with its key (`stored_key`); `recorded`: the batch's manifest files {key: sha256}; `holders(hashes)`: the
    index's {hash: batches holding it}."""
    outcomes: dict[str, dict[str, Any]] = {}
    seen = {sha: key for key, sha in recorded.items()}
    taken = set(recorded)
    candidates: dict[str, str] = {}
    for row in sorted(listing, key=lambda r: r["uri"]):
        uri = row["uri"]
        if row["reason"]:
            outcomes[uri] = {
                "outcome": "rejected",
                "reason": row["reason"],
                **({"bytes": row["size"]} if row["size"] else {}),
            }
            continue
        found = examined.get(uri)
        if found is None:
            outcomes[uri] = {"outcome": "rejected", "reason": "unreadable", "detail": "listed, then not found"}
            continue
        sha, content_sha, key = found["sha256"], found["content_sha256"], found["key"]
        if found["reason"]:
            detail = {"detail": found["detail"]} if found["detail"] else {}
            outcomes[uri] = {"outcome": "rejected", "reason": found["reason"], "sha256": sha, **detail}
            continue
        same = seen.get(sha) or seen.get(content_sha)
        if same:
            outcomes[uri] = {"outcome": "already_in_lake", "sha256": sha, "batch": batch, "key": same}
            continue
        if key in taken:  # two contents under one alternate key: the second is not stored over the first
            outcomes[uri] = {"outcome": "rejected", "reason": "unreadable", "sha256": sha, "detail": KEY_COLLISION}
            continue
        taken.add(key)
        seen[sha] = seen[content_sha] = key
        candidates[uri] = key
        outcomes[uri] = {
            "outcome": "uploaded",
            "sha256": sha,
            "content_sha256": content_sha,
            "key": key,
            "format": found["format"],
            "metadata": found["metadata"],
        }
    hashes = {h for uri in candidates for h in (outcomes[uri]["sha256"], outcomes[uri]["content_sha256"])}
    known = holders(hashes) if hashes else {}
    for uri in list(candidates):
        outcome = outcomes[uri]
        homes = [
            home
            for h in (outcome["sha256"], outcome["content_sha256"])
            for home in known.get(h, [])
            if home != batch and lakeindex.counts_as_stored(home, batch, retention_days)
        ]
        if homes:
            outcomes[uri] = {"outcome": "already_in_lake", "sha256": outcome["sha256"], "batch": max(homes)}
            del candidates[uri]
    return outcomes, candidates


def commit_manifest(
    store: Any, raw_uri: str, batch: str, files: dict[str, str], bundles: dict[str, list[str]]
) -> dict[str, Any]:
    """Add this run's photos and bundles to `_uploads.json` with a conditional write; another attempt's
    additions are merged, unless they overlap this run's (the batch lock excludes that: fail, rerun)."""
    uri = raw_uri + UPLOADS_MANIFEST
    for _ in range(MANIFEST_ATTEMPTS):
        data, etag = store.read_with_etag(uri)
        current = json.loads(data) if data else {"files": {}, "bundles": {}}
        overlap = (files.keys() & current["files"].keys()) | (set(files.values()) & set(current["files"].values()))
        if overlap:
            raise RuntimeError(f"{uri}: another attempt recorded {len(overlap)} of this run's photos; rerun")
        merged = {
            **current,
            "files": {**current["files"], **files},
            "bundles": {**current.get("bundles", {}), **bundles},
        }
        body = lakefiles.manifest_json(batch, merged["files"], merged["bundles"])
        if store.put_if_match(uri, body, etag) if etag else store.put_if_absent(uri, body):
            return merged
    raise RuntimeError(f"{uri}: {MANIFEST_ATTEMPTS} conditional writes lost in a row; nothing was lost, rerun")


def write_report(
    store: Any, raw_uri: str, batch: str, landing_uri: str, outcomes: dict[str, dict[str, Any]], counts: dict
) -> str:
    """`_ingestion.json` (every landing file the batch has seen and its outcome) and its counts beside it."""
    return lakefiles.write_ingestion_report(store, raw_uri, batch, landing_uri, outcomes, counts, photos.REJECT_REASONS)


def tidy_landing(spark, landing_uri: str, outcomes: dict[str, dict[str, Any]], landing_after: str) -> int:
    """After the report's commit, on the executors: the landing files now in the lake archived or deleted
    (`landing_after`); refused files always stay. A staged landing (the listing's sources are the lake's copy
    of a landing outside S3) is not reachable from here: its files are left as they are."""
    landing_uri = landing_uri.rstrip("/") + "/"
    done = sorted(
        uri
        for uri, outcome in outcomes.items()
        if outcome["outcome"] in ("uploaded", "already_in_lake") and uri.startswith(landing_uri)
    )
    if landing_after == "keep" or not done:
        return 0

    def tidy(uris: Iterator[str]) -> None:
        files = None
        for uri in uris:
            files = files or lakefiles.open_files(uri)
            lakefiles.tidy_landing_file(files, landing_uri, uri, landing_after)

    spark.sparkContext.parallelize(done, max(1, len(done) // BUNDLE_MAX_PHOTOS)).foreachPartition(tidy)
    return len(done)


def counts_of(outcomes: dict[str, dict[str, Any]], batch: str, bundles: dict[str, list[str]]) -> dict[str, Any]:
    """The attempt's counts: the ingestion report's (lakefiles.outcome_counts), the copies found in other batches
    and the bundles written."""
    return {
        **lakefiles.outcome_counts(outcomes),
        "in_other_batch": sum(o["outcome"] == "already_in_lake" and o["batch"] != batch for o in outcomes.values()),
        "bundles_written": len(bundles),
    }


def run(spark, args: argparse.Namespace, store: Any = None) -> dict[str, Any]:
    """Ingest the listing's landing files into `args.raw`; returns the counts. `store`: the lake's reads
    and conditional writes (lakefiles.open_files by default)."""
    log = jobio.get_logger("ingest")
    batch, raw_uri = args.batch_id, args.raw.rstrip("/") + "/"
    store = store or lakefiles.open_files(raw_uri)
    index_uri = args.index.rstrip("/") + "/"
    erased_data = store.read_or_none(index_uri + ERASED)
    erased = frozenset(json.loads(erased_data)["sha256s"]) if erased_data else frozenset()
    listing = spark.read.parquet(args.listing)
    listed = [
        {**row.asDict(), "uri": bytes(row.uri).decode("utf-8", "surrogateescape")}
        for row in listing.select("uri", "key", "size", "reason").collect()
    ]
    # No candidate (an empty landing, a night of catch-ups only, or only refused names): the landing is not read.
    candidates = sum(not row["reason"] for row in listed)
    bundle_bytes = bundled_bytes(listed, args.keep_originals)
    manifest_data = store.read_or_none(raw_uri + UPLOADS_MANIFEST)
    recorded = json.loads(manifest_data)["files"] if manifest_data else {}
    files, sc = jobio.HadoopFiles(spark), spark.sparkContext
    run_folder = jobio.run_uri(raw_uri, jobio.new_run_id())
    examined, reads = sc.accumulator([], jobio.ListParam()), sc.accumulator(0)
    recorded_hashes = sc.broadcast(frozenset(recorded.values()))
    committed = False
    try:
        clock = [time.monotonic()]

        def lap() -> float:
            clock.append(time.monotonic())
            return round(clock[-1] - clock[-2], 2)

        # One read of each photo (a million phone photos: terabytes, more than the workers' disks hold): its
        # stripped bytes go into the bundles in the same pass, before the driver decides; what the decision
        # does not store (rare: twins, photos another batch holds) is then rewritten out of its bundles.
        bundled = {}
        if candidates:
            job = {
                "erased": erased,
                "max_photo_bytes": args.max_photo_bytes,
                "raw_uri": raw_uri,
                "contested": contested_keys(listed, recorded),
                "recorded": recorded_hashes,
                "examined": examined,
                "reads": reads,
                "keep_originals": args.keep_originals,
            }
            rows = bundle_landing(spark, listing, job, candidates, bundle_bytes, dt.datetime.now(dt.UTC))
            write_bundles(
                rows, run_folder, max(1, -(-candidates // BUNDLE_MAX_PHOTOS), -(-bundle_bytes // BUNDLE_MAX_BYTES))
            )
            bundled = bundled_photos(spark, run_folder)
        small = {row[0]: dict(zip(EXAMINED_COLUMNS, row, strict=True)) for row in examined.value}
        seconds = {"read_and_bundle": lap()}
        outcomes, _ = decide(
            listed,
            small,
            recorded,
            batch,
            lambda hashes: lakeindex.lookup(store, index_uri, hashes),
            args.retention_days,
        )
        seconds["decide"] = lap()
        stored = {o["key"]: o["sha256"] for o in outcomes.values() if o["outcome"] == "uploaded"}
        bundles: dict[str, list[str]] = {}
        if stored:
            bundled = keep_only_stored(spark, run_folder, bundled, {raw_uri + k: sha for k, sha in stored.items()})
            prefix = spark_spelling(jobio.qualified_uri(spark, raw_uri).rstrip("/") + "/")
            for file, photos_in in bundled.items():
                bundles[spark_spelling(file).removeprefix(prefix)] = [path[len(raw_uri) :] for path, _ in photos_in]
            missing = stored.keys() - {key for keys in bundles.values() for key in keys}
            if missing:  # never expected: every stored photo was written in the pass; nothing is committed
                raise RuntimeError(
                    f"{len(missing)} photos decided stored are not in the bundles: {sorted(missing)[:5]}"
                )
            seconds["bundles"] = lap()
            commit_manifest(store, raw_uri, batch, stored, bundles)
            committed = True  # the manifest names the run folder's bundles: a later failure must not discard them
        else:
            jobio.discard_runs(files, [(raw_uri, run_folder)])  # nothing new: the pass's rows were twins or known
            if manifest_data is None:  # and no photo yet: featurize finds an empty batch, not none
                commit_manifest(store, raw_uri, batch, {}, {})
        # The index after the manifest: an entry always names a committed photo (both of its hashes).
        lakeindex.record(
            store,
            index_uri,
            batch,
            {h for o in outcomes.values() if o["outcome"] == "uploaded" for h in (o["sha256"], o["content_sha256"])},
        )
        counts = {
            **counts_of(outcomes, batch, bundles),
            "landing_reads": reads.value,
            "seconds": {**seconds, "commit": lap()},
        }
        write_report(store, raw_uri, batch, args.landing, outcomes, counts)
        try:  # housekeeping after the commit: a landing file left behind is only a file kept
            tidied = tidy_landing(spark, args.landing, outcomes, args.landing_after)
        except Exception as error:  # noqa: BLE001 - the night is committed; the next tidy or a person finishes it
            log.warning("could not tidy the landing %s (%s): its files stay", args.landing, error)
            tidied = 0
        counts = {**counts, "landing_tidied": tidied, "seconds": {**counts["seconds"], "tidy": lap()}}
        log.info("ingested batch %s: %s", batch, counts)
        return counts
    except BaseException:
        if not committed:
            jobio.discard_runs(files, [(raw_uri, run_folder)])
        raise
    finally:
        recorded_hashes.unpersist()
        # The planner's files are this attempt's alone; staged originals still carry their metadata.
        for planned in (args.listing, args.landing):
            if planned.startswith(raw_uri + lakefiles.INGEST_FOLDER + "/"):
                jobio.delete(spark, planned)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listing", required=True, help="the planner's listing (Parquet: uri, key, size, reason)")
    parser.add_argument("--landing", required=True, help="the folder the listing's sources are in (one date)")
    parser.add_argument("--raw", required=True, help="the batch's raw folder, raw/batch=<ds>/")
    parser.add_argument("--index", required=True, help="the lake's index area, index/")
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--retention-days", type=int, default=None)
    parser.add_argument("--max-photo-bytes", type=int, default=50 * 1024 * 1024)
    parser.add_argument(
        "--landing-after", choices=lakefiles.LANDING_AFTER, default="keep", help="the landing files now in the lake"
    )
    parser.add_argument(
        "--keep-originals",
        action="store_true",
        help="keep a decoded photo's stripped bytes in its bundle row too (a fruits_original_retention_days window)",
    )
    args = parser.parse_args(argv)
    dt.date.fromisoformat(args.batch_id)
    return args


def main(argv: list[str] | None = None) -> int:
    from pyspark.sql import SparkSession

    args = parse_args(argv)
    spark = SparkSession.builder.appName(f"fruits-ingest-{args.batch_id}").getOrCreate()
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
