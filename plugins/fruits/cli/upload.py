"""Upload one batch's landing photos into the lake, as the DAG's first task does, under the batch lock.

    python -m fruits.cli.upload --landing s3://<landing>/incoming/2026-11-22/ --lake s3://<bucket> --batch 2026-11-22

Prints the counts as JSON (uploaded, already in the lake, rejected with reasons). Exit 2: not a real date;
exit 3: the batch is locked (a pipeline run or an erasure holds it). Every landing file's outcome is listed
in raw/batch=<ds>/_ingestion.json.

    python -m fruits.cli.upload audit --landing s3://<landing>/incoming --lake s3://<bucket> --batch 2026-11-22

lists the files of the batch's landing folder (<landing>/<batch>/) that its _ingestion.json gives no outcome;
exit 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from fruits import lake, locks, storage
from fruits.upload import LANDING_AFTER, MAX_PHOTO_BYTES, unaccounted_landing_files, upload_new_images

# How many unaccounted files the audit prints (its count is always whole).
AUDIT_PRINTED = 1000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fruits.cli.upload", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--landing",
        required=True,
        help="the batch's landing folder: s3://<bucket>/<prefix>/ or a local folder, laid out "
        "[<anything>/][<Split>/]<Label>/<file>",
    )
    parser.add_argument("--lake", required=True, help="the lake root: s3://<bucket> or a local folder")
    parser.add_argument("--batch", required=True, help="the batch, a real date YYYY-MM-DD (raw/batch=<ds>/)")
    parser.add_argument("--dry-run", action="store_true", help="classify and count every file; write nothing")
    parser.add_argument(
        "--max-photo-bytes",
        type=int,
        default=MAX_PHOTO_BYTES,
        help="larger files are rejected as too_large (default: %(default)s)",
    )
    parser.add_argument(
        "--landing-after",
        choices=LANDING_AFTER,
        default="keep",
        help="what becomes of landing files once in the lake (default: %(default)s; "
        "archive moves them under _ingested/)",
    )
    parser.add_argument("--region", default=None, help="the buckets' region (default: the AWS configuration's)")
    return parser


def build_audit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fruits.cli.upload audit",
        description="List the landing files of a batch that its _ingestion.json gives no outcome; exit 1 if any.",
    )
    parser.add_argument(
        "--landing",
        required=True,
        help="the landing root (Variable fruits_landing): the batch's folder is <landing>/<batch>/",
    )
    parser.add_argument("--lake", required=True, help="the lake root: s3://<bucket> or a local folder")
    parser.add_argument("--batch", required=True, type=lake.check_batch, help="the batch, a real date YYYY-MM-DD")
    parser.add_argument("--region", default=None, help="the buckets' region (default: the AWS configuration's)")
    return parser


def _stores(lake_uri: str, landing_uri: str, region: str | None):
    s3_client = None
    if lake.is_s3(lake_uri) or lake.is_s3(landing_uri):
        import boto3

        s3_client = boto3.client("s3", region_name=region)
    if lake.is_s3(lake_uri):
        lake_store = storage.open_lake(lake_uri, s3_client)  # writes with the bucket's own KMS key
    else:
        lake_store, _ = storage.open_store(lake_uri)
    landing_store, landing = storage.open_store(landing_uri, s3_client)
    return lake_store, landing_store, landing


def audit(argv: list[str]) -> int:
    args = build_audit_parser().parse_args(argv)
    lake_store, landing_store, landing_root = _stores(args.lake, args.landing, args.region)
    found = unaccounted_landing_files(lake_store, landing_store, lake.landing_uri(landing_root, args.batch), args.batch)
    unaccounted = found["unaccounted"]
    print(
        json.dumps(
            {**found, "unaccounted": unaccounted[:AUDIT_PRINTED], "unaccounted_count": len(unaccounted)}, indent=1
        )
    )
    if unaccounted:
        print(
            f"error: {len(unaccounted)} landing file(s) of {args.batch} have no outcome in its _ingestion.json",
            file=sys.stderr,
        )
    return 1 if unaccounted else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["audit"]:
        return audit(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        lake.check_batch(args.batch)
    except ValueError as error:
        print(f"error: {error}; nothing uploaded", file=sys.stderr)
        return 2
    lake_store, landing_store, landing_uri = _stores(args.lake, args.landing, args.region)
    owner = f"upload-cli-{os.getpid()}@{os.uname().nodename}"
    if not args.dry_run:
        try:
            locks.acquire(lake_store, lake_store.root, args.batch, owner)
        except locks.BatchLocked as error:
            print(f"error: {error}; nothing uploaded", file=sys.stderr)
            return 3
    try:
        counts = upload_new_images(
            lake_store,
            landing_store,
            landing_uri,
            args.batch,
            dry_run=args.dry_run,
            max_photo_bytes=args.max_photo_bytes,
            landing_after=args.landing_after,
        )
    finally:
        if not args.dry_run:
            locks.release(lake_store, lake_store.root, args.batch, owner)
    print(json.dumps(counts, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
