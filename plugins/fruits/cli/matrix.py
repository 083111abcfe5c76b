"""Write the analysts' matrix: one CSV path,label,pc_1..pc_k for a range of batches, all on one PCA basis.

    python -m fruits.cli.matrix --lake s3://<bucket> --from 2026-11-21 --to 2026-11-22 --output matrix.csv

Reads only committed outputs; refuses to mix bases (exit 2, naming the batch and the re-expression to run);
lists the dates without output. Prints a JSON summary (basis, k, rows per batch).
"""

from __future__ import annotations

import argparse
import json
import sys

from fruits import lake, storage
from fruits.matrix import MatrixError, write_matrix


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fruits.cli.matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lake",
        required=True,
        help="the lake root: s3://<bucket> (boto3's default credentials) or a local lake folder",
    )
    parser.add_argument(
        "--from", dest="first", required=True, type=lake.check_batch, help="the first batch of the range, YYYY-MM-DD"
    )
    parser.add_argument(
        "--to",
        dest="last",
        required=True,
        type=lake.check_batch,
        help="the last batch of the range (included), YYYY-MM-DD",
    )
    parser.add_argument("--basis", type=int, help="the PCA basis version (default: the current one)")
    parser.add_argument("--output", required=True, help="the CSV file to write (replaced whole, never half written)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store, _ = storage.open_store(args.lake)
    try:
        summary = write_matrix(store, store.root, args.first, args.last, args.output, args.basis)
    except MatrixError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
