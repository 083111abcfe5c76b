"""What the run report page costs to build on a big batch: the reduced-output passes of fruits.report_page.

    PYTHONPATH=plugins .venv/bin/python benchmarks/report_page_build.py --rows 200000 [--k 200] [--files 4]

Writes a synthetic reduced output (random pca vectors, 30 labels) into a temporary local lake, then times
`reduced_sample` (the scatter's sample) and `nearest_neighbours` (exact, a second streamed pass) and prints
the peak memory of the process. Result quoted in docs/operations.md ("The run report page").
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fruits import report_page, storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = storage.LocalStore(folder)
        rng = np.random.default_rng(0)
        files = []
        for part in range(args.files):
            n = args.rows // args.files
            vectors = rng.normal(size=(n, args.k)).astype(np.float32)
            offsets = pa.array(np.arange(0, n * args.k + 1, args.k, dtype=np.int32))
            table = pa.table(
                {
                    "path": [f"{store.root}/raw/batch=2026-11-21/L{i % 30}/{part}_{i}.jpg" for i in range(n)],
                    "label": [f"L{i % 30}" for i in range(n)],
                    "pca": pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel())),
                }
            )
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            files.append(f"{store.root}/reduced/part-{part}.parquet")
            store.put(files[-1], buffer.getvalue(), "-")
        started = time.monotonic()
        sample = report_page.reduced_sample(store, files, seed=1)
        sampled = time.monotonic()
        chosen = report_page.pick_examples(sample["label"])
        report_page.nearest_neighbours(sample["pca"][chosen], [sample["path"][i] for i in chosen], sample, store, files)
        done = time.monotonic()
    print(
        f"rows={args.rows:,} k={args.k} files={args.files}: sample {sampled - started:.1f} s, neighbours "
        f"{done - sampled:.1f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
