"""Ingest one batch's landing on the cluster: the per-photo work of fruits.upload, distributed.

    spark-submit spark_jobs/ingest.py --listing URI --landing URI --raw URI --index URI --batch-id DS
        [--retention-days N] [--max-photo-bytes N] [--landing-after keep|archive|delete]

The Airflow side listed the landing (metadata only) and wrote the listing (fruits.upload.write_listing:
Parquet rows `uri` (the landing file's name as stored, UTF-8 bytes), `source` (where its bytes are read: the
landing itself, or the lake's staging copy of a landing outside S3), `key`, `size`, `reason` (set for the
files their name or size refuse)).
Then, here:
1. executors: each listed photo read from its source with one GET (the listing is the batch's own date only),
   then `photos.examine` (identify, strip, hash both ways) in mapInPandas; only the small columns come back;
2. driver: the small columns only (no content); each landing file's outcome (`decide`): rejected, already
   in this batch, already in another batch that keeps it long enough (one index read per shard touched),
   or new;
3. executors: the new photos (held on the workers' disks since step 1 for a night up to HOLD_MAX_BYTES, else
   read and stripped again: a second GET, no photo held between the passes), checked to be the bytes decided
   on, streamed as Parquet bundles (binaryFile's columns + sha256) in the job's run folder
   `raw/batch=<ds>/run=<run id>/`;
4. driver, once the bundles are complete: `_uploads.json` (conditional write, the commit: it names the
   bundles), the index (conditional writes), then `_ingestion.json` (one outcome per landing file);
5. executors: the landing files now in the lake archived or deleted when `--landing-after` says so.
A failed run removes its run folder (jobio.discard_run): nothing half-written is ever named.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import lakefiles
import lakeindex
import photos

try:  # the driver imports this module as a script; workers import it from --py-files
    import jobio
except ImportError:  # pragma: no cover - run as `python -m spark_jobs.ingest`
    from spark_jobs import jobio

UPLOADS_MANIFEST = "_uploads.json"  # fruits.storage's names, checked equal by a test
INGESTION_REPORT = lakefiles.INGESTION_REPORT
ERASED = "erased.json"
MANIFEST_ATTEMPTS = 20
BUNDLE_MAX_PHOTOS = 1000  # fruits.storage.BUNDLE_MAX_PHOTOS: photos per bundle file
BUNDLE_MAX_BYTES = 128 * 1024 * 1024  # fruits.storage.BUNDLE_MAX_BYTES: bytes of photos per bundle file
# A night's photos up to this many bytes are held on the workers' disks between deciding and bundling (the
# default two workers' volumes hold them several times over); above, a new photo is read INGEST_PASSES times:
# the first pass hashes it, the second (after the driver's decision) bundles it.
HOLD_MAX_BYTES = 16 * 1024**3
CHANGED_BETWEEN_READS = "changed or gone between the ingest job's two reads (or its twin was); rerun the night"
INGEST_PASSES = 2
# Photos per read task (a phone photo is ~50 ms of work: a task of seconds to a minute) and per Arrow frame a
# worker yields (its memory: 16 x 3 MB photos, not a task's).
PHOTOS_PER_TASK = 512
PHOTOS_PER_FRAME = 16
EXAMINED_SCHEMA = (
    "uri string, sha256 string, content_sha256 string, format string, metadata string, reason string, "
    "detail string, content binary"
)


def spark_spelling(uri: str) -> str:
    """`file:///x` as Spark's file sources spell it (`file:/x`); any other URI as it is."""
    return re.sub(r"^file:/+", "file:/", uri)


def alternate_key(key: str, sha256: str) -> str:
    path = PurePosixPath(key)
    return str(path.with_name(f"{path.stem}-{sha256[:8]}{path.suffix}"))


# ------------------------------------------------------------------------------------ executors


def examine_batches(erased: frozenset[str], max_photo_bytes: int, keep_content: bool = False):
    """The mapInPandas function: each listed photo read from its `source` with one GET (the listing already
    listed it: no listing, no HEAD), examined, one output row per photo found; the stripped bytes in `content`
    only with `keep_content`. A photo gone since the listing has no row (its outcome says so); any other read
    error fails the task."""

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        columns = [c.split()[0] for c in EXAMINED_SCHEMA.split(", ")]
        files = None
        for frame in frames:
            rows = []
            for uri, source in zip(frame["uri"], frame["source"], strict=True):
                files = files or lakefiles.open_files(source)
                data = files.read_or_none(source)
                if data is None:
                    continue
                if len(data) > max_photo_bytes:  # grew since the listing
                    verdict = photos.Verdict(photos.sha256_hex(data), reason="too_large")
                else:
                    try:
                        verdict = photos.examine(data, erased)
                    except Exception as error:  # noqa: BLE001 - one odd file never fails the night
                        verdict = photos.Verdict(photos.sha256_hex(data), reason="unreadable", detail=repr(error))
                rows.append(
                    {
                        "uri": uri,
                        "sha256": verdict.sha256,
                        "content_sha256": verdict.content_sha256,
                        "format": verdict.format,
                        "metadata": verdict.metadata,
                        "reason": verdict.reason,
                        "detail": verdict.detail,
                        "content": verdict.content if keep_content else None,
                    }
                )
                if len(rows) == PHOTOS_PER_FRAME:  # a worker holds this many photos' bytes at once, not a task's
                    yield pd.DataFrame(rows, columns=columns)
                    rows = []
            yield pd.DataFrame(rows, columns=columns)

    return run


def examine_landing(
    spark,
    listing,
    erased: frozenset[str],
    max_photo_bytes: int,
    candidates: int,
    candidate_bytes: int,
    *,
    keep_content: bool = False,
    only: frozenset[str] | None = None,
):
    """The listing's photos (no reason from the listing; `only` these landing uris), spread over tasks of at
    most PHOTOS_PER_TASK photos and BUNDLE_MAX_BYTES (a task's photos make one bundle), each read and examined
    on the executors, their stripped bytes kept with `keep_content`."""
    from pyspark.sql import functions as F

    wanted = listing.where(F.col("reason") == "").select(F.decode("uri", "UTF-8").alias("uri"), "source")
    if only is not None:
        wanted = wanted.join(F.broadcast(spark.createDataFrame([(u,) for u in sorted(only)], "uri string")), "uri")
    tasks = max(1, -(-candidates // PHOTOS_PER_TASK), -(-candidate_bytes // BUNDLE_MAX_BYTES))
    return wanted.repartition(tasks).mapInPandas(
        examine_batches(erased, max_photo_bytes, keep_content=keep_content), EXAMINED_SCHEMA
    )


def to_store(examined, keep: dict[str, dict[str, str]]):
    """The examined photos the driver decided to store (`keep`: {landing uri: {key, sha256}}), each with its key,
    and only if its bytes are still those the decision was made on."""
    from pyspark.sql import functions as F

    decided = examined.sparkSession.createDataFrame(
        [(uri, k["key"], k["sha256"]) for uri, k in sorted(keep.items())], "uri string, key string, decided string"
    )
    unchanged = (F.col("sha256") == F.col("decided")) & (F.col("reason") == "")
    return examined.join(F.broadcast(decided), "uri").where(unchanged)


def bundle_rows(kept, raw_uri: str, written_at: dt.datetime):
    """The new photos' bundle rows (examine_landing's second pass): binaryFile's columns (`path` = raw batch URI +
    key) + sha256."""
    from pyspark.sql import functions as F

    return kept.select(
        F.concat(F.lit(raw_uri), "key").alias("path"),
        F.lit(written_at).cast("timestamp").alias("modificationTime"),
        F.length("content").cast("long").alias("length"),
        "content",
        "sha256",
    ).sortWithinPartitions("path")


# ------------------------------------------------------------------------------------ driver


def decide(
    listing: list[dict[str, Any]],
    examined: dict[str, dict[str, Any]],
    recorded: dict[str, str],
    batch: str,
    holders: Any,
    retention_days: int | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(every landing file's outcome, {landing uri: key} of the photos to store). `recorded`: the batch's
    manifest files {key: sha256}; `holders(hashes)`: the index's {hash: batches holding it}."""
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
        sha, content_sha = found["sha256"], found["content_sha256"]
        if found["reason"]:
            detail = {"detail": found["detail"]} if found["detail"] else {}
            outcomes[uri] = {"outcome": "rejected", "reason": found["reason"], "sha256": sha, **detail}
            continue
        same = seen.get(sha) or seen.get(content_sha)
        if same:
            outcomes[uri] = {"outcome": "already_in_lake", "sha256": sha, "batch": batch, "key": same}
            continue
        key = row["key"] if row["key"] not in taken else alternate_key(row["key"], sha)
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
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

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
    files = jobio.HadoopFiles(spark)
    run_folder = jobio.run_uri(raw_uri, jobio.new_run_id())
    examined, committed = None, False
    try:
        clock = [time.monotonic()]

        def lap() -> float:
            clock.append(time.monotonic())
            return round(clock[-1] - clock[-2], 2)

        # A night that fits the workers' disks is read once and held there while the driver decides; a bigger
        # one (a million phone photos: terabytes) is read twice, nothing held: the first pass hashes (its rows
        # are small), the second reads again only the photos to store and streams them into the bundles.
        sizes = {row["uri"]: row["size"] for row in listed}
        candidate_bytes = sum(row["size"] for row in listed if not row["reason"])
        hold = candidate_bytes <= HOLD_MAX_BYTES
        examined = (
            examine_landing(
                spark, listing, erased, args.max_photo_bytes, candidates, candidate_bytes, keep_content=hold
            )
            if candidates
            else None
        )
        if examined is not None and hold:
            examined = examined.persist(StorageLevel.DISK_ONLY)
        small = {row.uri: row.asDict() for row in examined.drop("content").collect()} if examined else {}
        seconds = {"examine": lap()}
        manifest_data = store.read_or_none(raw_uri + UPLOADS_MANIFEST)
        recorded = json.loads(manifest_data)["files"] if manifest_data else {}
        outcomes, new = decide(
            listed,
            small,
            recorded,
            batch,
            lambda hashes: lakeindex.lookup(store, index_uri, hashes),
            args.retention_days,
        )
        bundles: dict[str, list[str]] = {}
        seconds["decide"] = lap()
        if new:
            keep = {uri: {"key": key, "sha256": outcomes[uri]["sha256"]} for uri, key in new.items()}
            new_bytes = sum(sizes[uri] for uri in new)
            if not hold:
                examined = examine_landing(
                    spark,
                    listing,
                    erased,
                    args.max_photo_bytes,
                    len(new),
                    new_bytes,
                    keep_content=True,
                    only=frozenset(keep),
                )
            rows = bundle_rows(to_store(examined, keep), raw_uri, dt.datetime.now(dt.UTC))
            parts = max(1, -(-len(new) // BUNDLE_MAX_PHOTOS), -(-new_bytes // BUNDLE_MAX_BYTES))
            # Photos are compressed already: no codec; at most BUNDLE_MAX_PHOTOS a file; no shuffle of bytes.
            rows.coalesce(parts).write.option("compression", "none").option(
                "maxRecordsPerFile", BUNDLE_MAX_PHOTOS
            ).parquet(run_folder)
            written = spark.read.parquet(run_folder).select(F.input_file_name().alias("file"), "path").collect()
            prefix = jobio.qualified_uri(spark, raw_uri).rstrip("/") + "/"
            for row in written:
                name = spark_spelling(row.file).removeprefix(spark_spelling(prefix))
                bundles.setdefault(name, []).append(row.path[len(raw_uri) :])
            in_bundles = {key for keys in bundles.values() for key in keys}
            dropped = {key for key in new.values() if key not in in_bundles}
            for uri, outcome in list(outcomes.items()):  # changed or gone between the two reads, or its twin
                pointed = outcome["outcome"] == "already_in_lake" and outcome.get("batch") == batch
                if outcome.get("key") in dropped and (uri in new or pointed):
                    outcomes[uri] = {
                        "outcome": "rejected",
                        "reason": "unreadable",
                        "sha256": outcome["sha256"],
                        "detail": CHANGED_BETWEEN_READS,
                    }
            stored = {o["key"]: o["sha256"] for o in outcomes.values() if o["outcome"] == "uploaded"}
            seconds["bundles"] = lap()
            commit_manifest(store, raw_uri, batch, stored, bundles)
            committed = True  # the manifest names the run folder's bundles: a later failure must not discard them
        elif manifest_data is None:  # nothing new and no photo yet: featurize finds an empty batch, not none
            commit_manifest(store, raw_uri, batch, {}, {})
        # The index after the manifest: an entry always names a committed photo (both of its hashes).
        lakeindex.record(
            store,
            index_uri,
            batch,
            {h for o in outcomes.values() if o["outcome"] == "uploaded" for h in (o["sha256"], o["content_sha256"])},
        )
        counts = {**counts_of(outcomes, batch, bundles), "seconds": {**seconds, "commit": lap()}}
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
        if examined is not None:
            examined.unpersist()
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
