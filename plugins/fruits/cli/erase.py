"""Erase one photo and every row derived from it from the lake (GDPR right to erasure, docs/gdpr.md).

    python -m fruits.cli.erase --root s3://<bucket> --path raw/batch=2026-11-22/Training/Banana/img_001.jpg --dry-run
    python -m fruits.cli.erase --root file:///data/lake --path <sha256 of the photo>

Prints a JSON report of every object deleted, file rewritten (with row counts), version purged and landing file
deleted. Exit 1 when nothing matches, the batch is locked by a pipeline run, or the root is not a lake; exit 3
(the report printed, and what is left on stderr) when a copy could not be removed: run it again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fruits import lake, locks
from fruits.erase import ErasureIncomplete, erase


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fruits.cli.erase",
        description=__doc__.split("\n\n")[0],
        epilog="--dry-run first: it reports the same without changing anything (and takes no lock).",
    )
    parser.add_argument("--root", required=True, help="the lake root: s3://<bucket>, or a local folder / file:// URI")
    parser.add_argument(
        "--path",
        required=True,
        help="the photo: its key under the root (raw/batch=<ds>/[<split>/]<label>/<file>), its full "
        "URI as the `path` column holds it, or its sha256 (every copy of that content)",
    )
    parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    parser.add_argument("--region", default=None, help="the bucket's region (default: the AWS configuration's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    s3_client = None
    if lake.is_s3(args.root):
        import boto3

        s3_client = boto3.client("s3", region_name=args.region)
    try:
        report = erase(args.root, args.path, dry_run=args.dry_run, s3_client=s3_client)
    except (ValueError, LookupError, locks.BatchLocked) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ErasureIncomplete as error:
        print(json.dumps(error.report, indent=2))
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
