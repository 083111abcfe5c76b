"""Upload one batch's landing photos into the lake, as the DAG's first task does, under the batch lock.

    python -m fruits.cli.upload --landing s3://<landing>/incoming/2026-11-22/ --lake s3://<bucket> --batch 2026-11-22

Prints the counts as JSON (uploaded, already in the lake, rejected with reasons). Exit 2: not a real date;
exit 3: the batch is locked (a pipeline run or an erasure holds it). Every landing file's outcome is listed
in raw/batch=<ds>/_ingestion.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from fruits import lake, locks, storage
from fruits.upload import LANDING_AFTER, MAX_PHOTO_BYTES, upload_new_images


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        lake.check_batch(args.batch)
    except ValueError as error:
        print(f"error: {error}; nothing uploaded", file=sys.stderr)
        return 2
    s3_client = None
    if lake.is_s3(args.lake) or lake.is_s3(args.landing):
        import boto3

        s3_client = boto3.client("s3", region_name=args.region)
    if lake.is_s3(args.lake):
        lake_store = storage.open_lake(args.lake, s3_client)  # writes with the bucket's own KMS key
    else:
        lake_store, _ = storage.open_store(args.lake)
    landing_store, landing_uri = storage.open_store(args.landing, s3_client)
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
