"""The analysts' matrix: one CSV `path,label,pc_1..pc_k` for a range of batches, all on ONE PCA basis (a text
cell a spreadsheet would run as a formula starts with a single quote: docs/pipeline.md, "The analysts' CSV").

The command: `python -m fruits.cli.matrix --lake URI --from YYYY-MM-DD --to YYYY-MM-DD [--basis N] --output f.csv`.

Reads the COMMITTED reduced Parquet of each batch in the range (through its `_committed.json`) on basis N,
by default the current one (`pca/bases/_current.json`). Refuses to mix bases: a batch of the range that has
outputs only on other bases (not re-expressed yet) is an error naming it and the `reexpress` to run; a date
without any output (no photos that night, or expired) is skipped and listed. Streams: one Parquet file and one
Arrow record batch at a time, never the whole range. Plain python + pyarrow: runs on an analyst's laptop with
read access to the lake.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jobio
from fruits import lake

REDUCED_FOLDER = lake.PCA_REDUCED_FOLDER + "/"  # the Parquet files of a committed output
ROWS_PER_CHUNK = 8192


def spreadsheet_text(column: Any) -> Any:
    """An Arrow string column as a spreadsheet shows it, never runs it (jobio.CSV_FORMULA_START)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rule = jobio  # the PCA job's CSV parts apply the same rule
    prefix, nothing = pa.scalar(rule.CSV_TEXT_PREFIX, column.type), pa.scalar("", column.type)
    formula = pc.match_substring_regex(column, rule.CSV_FORMULA_START)
    return pc.if_else(formula, pc.binary_join_element_wise(prefix, column, nothing), column)


class MatrixError(ValueError):
    """The range cannot be given as one matrix on one basis (the message says why and what to run)."""


def dates(first: str, last: str) -> Iterator[str]:
    day, end = dt.date.fromisoformat(lake.check_batch(first)), dt.date.fromisoformat(lake.check_batch(last))
    if end < day:
        raise MatrixError(f"--to {last} is before --from {first}")
    while day <= end:
        yield day.isoformat()
        day += dt.timedelta(days=1)


def current_version(store: Any, root: str) -> int:
    data = store.read_or_none(lake.pca_current_basis_uri(root))
    if not data:
        raise MatrixError(f"no PCA basis yet: {lake.pca_current_basis_uri(root)} does not exist")
    return int(json.loads(data)["version"])


def basis_versions(store: Any, root: str) -> list[int]:
    """Every basis with reduced outputs in the lake."""
    names = store.list_children(lake.area_uri(root, "pca") + "reduced/")
    return sorted(v for v in map(lake.basis_version_of, names) if v is not None)  # strays like basis=tmp skipped


def plan(store: Any, root: str, first: str, last: str, version: int) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """([(batch, its committed Parquet URIs on `version`)], [dates without any output]); raises MatrixError
    when a batch of the range is committed on other bases only."""
    others = [v for v in basis_versions(store, root) if v != version]
    batches, empty, missing = [], [], {}
    for batch in dates(first, last):
        marker = lake.read_commit(store, lake.pca_reduced_uri(root, version, batch))
        if marker:
            location = marker["location"].rstrip("/") + "/"
            batches.append(
                (
                    batch,
                    [
                        location + name
                        for name in marker["files"]
                        if name.startswith(REDUCED_FOLDER) and name.endswith(".parquet")
                    ],
                )
            )
            continue
        on = [v for v in others if lake.read_commit(store, lake.pca_reduced_uri(root, v, batch))]
        if on:
            missing[batch] = on
        else:
            empty.append(batch)
    if missing:
        listed = ", ".join(f"{batch} (on basis {', '.join(map(str, on))})" for batch, on in missing.items())
        raise MatrixError(
            f"{len(missing)} batch(es) of the range are not on basis {version}: {listed}. Refusing to mix bases: "
            f"run `pca.py reexpress --batches {','.join(missing)}` (when {version} is the current basis) or choose "
            f"another --basis or range"
        )
    return batches, empty


def rows(store: Any, parquet_uris: list[str], version: int) -> Iterator[Any]:
    """The reduced rows as Arrow record batches of path, label, pc_1..pc_k, one file at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for uri in parquet_uris:
        data = store.read_or_none(uri)
        if data is None:
            raise MatrixError(f"{uri} is listed by its commit marker but missing")
        for batch in pq.ParquetFile(io.BytesIO(data)).iter_batches(
            ROWS_PER_CHUNK, columns=["path", "label", "basis", "pca"]
        ):
            if not len(batch):
                continue
            bases = set(batch.column("basis").unique().to_pylist())
            if bases != {version}:
                raise MatrixError(f"{uri} holds rows of basis {sorted(bases)}, not {version}")
            pcs = batch.column("pca")
            k = len(pcs[0])
            values = pcs.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), k)
            text = [spreadsheet_text(batch.column(name)) for name in ("path", "label")]
            columns = [*text, *(pa.array(values[:, i]) for i in range(k))]
            yield pa.RecordBatch.from_arrays(columns, ["path", "label", *(f"pc_{i}" for i in range(1, k + 1))])


def write_matrix(store: Any, root: str, first: str, last: str, output: str | Path, basis: int | None = None) -> dict:
    """Write the matrix to `output` (a local file; written beside it, then renamed: never half a CSV)."""
    import pyarrow.csv as pacsv

    version = basis if basis is not None else current_version(store, root)
    batches, empty = plan(store, root, first, last, version)
    if not batches:
        raise MatrixError(f"no batch from {first} to {last} has a committed output on basis {version}")
    output = Path(output)
    partial = output.with_name(f".{output.name}.partial")
    writer, writer_schema, counts, k = None, None, {}, None
    try:
        with open(partial, "wb") as sink:
            for batch, uris in batches:
                counts[batch] = 0
                for chunk in rows(store, uris, version):
                    if writer is None:
                        k, writer_schema = chunk.num_columns - 2, chunk.schema
                        writer = pacsv.CSVWriter(sink, writer_schema)
                    elif chunk.schema != writer_schema:
                        raise MatrixError(f"batch {batch} has {chunk.num_columns - 2} components, not {k}")
                    writer.write_batch(chunk)
                    counts[batch] += len(chunk)
            if writer is not None:
                writer.close()
        os.replace(partial, output)
    finally:
        if partial.exists():
            partial.unlink()
    return {
        "basis": version,
        "k": k,
        "rows": sum(counts.values()),
        "rows_per_batch": counts,
        "dates_without_output": empty,
        "output": str(output),
    }
