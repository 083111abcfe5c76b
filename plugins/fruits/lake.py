"""Where everything lives in the lake: one definition for the DAG, the jobs' arguments, the cost
report, erasure and the IAM policies. `root` is `s3://<bucket>` on AWS or a local folder URI
(`file:///...`) for the local target; one logical date (`ds`, a real calendar date YYYY-MM-DD) is
one batch.

Landing (outside the lake, `fruits_landing`): `<landing>/<YYYY-MM-DD>/[<Split>/]<Label>/<file>`;
a run for batch <ds> ingests `<landing>/<ds>/` only (a backfill takes its own date's photos). A
run's `landing` Param names one folder holding that batch's photos instead (manual runs, demo).

    raw/batch=<ds>/bundle-<hex>.parquet   the ORIGINALS (metadata stripped), up to 1,000 per bundle (fruits.upload):
                                          binaryFile's columns + sha256,
                                          path = <root>/raw/batch=<ds>/[<split>/]<label>/<file>;
                                          deleted once featurized: by the run that commits their features
                                          (`original_retention_days` 0, the default: the remove_originals task),
                                          else N nights later by fruits.retention.sweep_originals (docs/gdpr.md)
    raw/batch=<ds>/_uploads.json          the batch's manifest (conditional writes: If-Match/If-None-Match)
    raw/batch=<ds>/_ingestion.json        every landing file of the batch and where it went, with a reason
    raw/batch=<ds>/_ingestion_counts.json its counts by outcome (what the run report shows), written beside it
    index/                                the cross-batch duplicate index and the erased hashes (fruits.upload),
                                          retention.json: the retention sweep's watermark (fruits.retention)
    locks/batch=<ds>.json                 a batch's lock: one pipeline run or one erasure at a time

Job outputs are never renamed into place. Each job run writes under its own immutable folder
`<output>/run=<run id>/`, then commits it with ONE small object written last,
`<output>/_committed.json` (COMMIT_MARKER: the run folder, its files, its counts). Every reader
resolves the marker and reads only the files it lists; a folder without a marker holds nothing.

    derived/batch=<ds>/                   the DERIVATIVES kept for re-featurizing (Parquet rows: path = the
                                          original's raw/ path, sha256, derivative = featurize.derivative's
                                          bytes: upright, <= 320 px JPEG, no metadata), kept retention_days
    features/batch=<ds>/                  featurize output (Parquet) + _job_metrics.json   [committed]
    quarantine/batch=<ds>/                files featurize could not read (Parquet: path, reason) [committed]
    pca/stats/batch=<ds>/                 the batch's sufficient statistics (n, sum, X'X)    [committed]
    pca/bases/v=<NNNN>/                   a PCA basis: model/ (PipelineModel), basis.json    [committed]
    pca/bases/_current.json               which basis version new batches are projected on
    pca/reduced/basis=<NNNN>/batch=<ds>/  the batch on that basis: reduced/ (Parquet), pca_matrix/ (CSV parts),
                                          report.json, explained_variance.png               [committed]
    reports/batch=<ds>/                   run report (cost, throughput): run_report.json / .md, and its
                                          page run_report.html (fruits.report_page: photo thumbnails);
                                          pca_summary-basis=<NNNN>.json (the asset consumer's summary)
    code/<version>/spark_jobs/, code/<version>/bootstrap/, code/<version>/requirements/
    models/keras/<weights file>           MobileNetV2 weights the driver loads (+ recorded sha256)
    logs/emr/                             EMR cluster logs
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

import jobio

# The dataset's splits: a landing folder of one of these names above the label folder is kept in the
# photo's key, and featurize reads it back into the `split` column. spark_jobs/featurize.py holds the
# same tuple (the cluster does not ship this package); tests/test_upload.py checks they agree.
SPLITS = ("Training", "Test")
# The commit marker of a job output; spark_jobs/jobio.py writes it (same name, checked by a test).
COMMIT_MARKER = "_committed.json"
AREAS = ("raw", "derived", "index", "locks", "features", "quarantine", "pca", "reports", "code", "models", "logs")
# What the lake keeps of a photo (docs/gdpr.md, "What the lake keeps"): the stripped original for a short window,
# the model-ready derivative for the whole retention.
ORIGINALS_AREA, DERIVED_AREA = "raw", "derived"
# The derivative's column, in derived/ and in the bundle row of a photo the ingest pass decoded
# (spark_jobs/featurize.py's DERIVATIVE_COLUMN, checked equal by tests/test_report_page.py).
DERIVATIVE_COLUMN = "derivative"
# Names inside a committed PCA output (spark_jobs/pca.py writes them, the cluster ships no plugins: the
# job keeps its own copy, tests/test_erase.py checks they agree). Before per-basis outputs, one CSV file.
PCA_REDUCED_FOLDER = "reduced"
PCA_CSV_FOLDER = "pca_matrix"
PCA_REPORT_FILE = "report.json"
PCA_PLOT_FILE = "explained_variance.png"
LEGACY_PCA_MATRIX = "pca_matrix.csv"
# URI schemes naming S3: Spark's Hadoop connector writes s3a://, the rest of the pipeline s3://.
S3_SCHEMES = ("s3", "s3a")


def is_s3(uri: str | None) -> bool:
    """Whether `uri` names an S3 object or prefix (s3:// or s3a://)."""
    return (uri or "").split("://", 1)[0] in S3_SCHEMES and "://" in (uri or "")


def split_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket, key) of an `s3://` / `s3a://` URI, or ("file", "", absolute path) of a local one
    (`file:/x`, `file:///x`, `file://localhost/x` or `/x`). Verbatim, never URL-parsed: `#`, `?`, `%41`,
    tabs and newlines are characters of the name, as the landing's listing and the lake store them."""
    if is_s3(uri):
        scheme, rest = uri.split("://", 1)
        bucket, _, key = rest.partition("/")
        return "s3", bucket, key
    if uri.startswith("file:"):
        path = uri.removeprefix("file:")
        if path.startswith("//"):  # file://<host>/path: only the local host
            host, _, path = path[2:].partition("/")
            if host not in ("", "localhost"):
                raise ValueError(f"not a local file URI: {uri!r}")
        return "file", "", "/" + path.lstrip("/")
    scheme, separator, _ = uri.partition("://")
    if separator and "/" not in scheme:
        raise ValueError(f"not an s3:// URI or a local path / file: URI: {uri!r}")
    return "file", "", uri


def normal_uri(uri: str) -> str:
    """One spelling per object, for comparing: `s3://bucket/key` (s3a too) or `file:///abs/path` (Spark
    writes `file:/x`, the upload `file:///x`); the name itself is kept as stored."""
    scheme, bucket, key = split_uri(uri)
    return f"s3://{bucket}/{key}" if scheme == "s3" else "file://" + key


# The rules the jobs apply too (batch ids, the CSV's formula cells) are defined once, in spark_jobs/jobio.py
# (the cluster ships no plugins); fruits/__init__.py puts spark_jobs/ on the path.
# A batch id as a JSON-schema pattern (the run Param); check_batch also refuses dates that do not exist
# and dates later than tomorrow in Paris (latest_batch).
BATCH_PATTERN: str = jobio.BATCH_PATTERN
check_batch = jobio.check_batch
latest_batch = jobio.latest_batch


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def area_uri(root: str, area: str) -> str:
    if area not in AREAS:
        raise ValueError(f"unknown lake area {area!r}: one of {AREAS}")
    return _join(root, area) + "/"


def landing_uri(landing_root: str, batch: str) -> str:
    """Where the photos of `batch` arrive: `<landing>/<YYYY-MM-DD>/`."""
    return _join(landing_root, check_batch(batch)) + "/"


def raw_uri(root: str, batch: str) -> str:
    return _join(root, "raw", f"batch={check_batch(batch)}") + "/"


def derived_uri(root: str, batch: str) -> str:
    """One batch's derivatives (the lake keeps them for the retention; the originals only a short window)."""
    return _join(root, DERIVED_AREA, f"batch={check_batch(batch)}") + "/"


def features_uri(root: str, batch: str | None = None) -> str:
    """One batch's features, or the features area when batch is None."""
    return _join(root, "features", *([f"batch={check_batch(batch)}"] if batch else [])) + "/"


def quarantine_uri(root: str, batch: str) -> str:
    return _join(root, "quarantine", f"batch={check_batch(batch)}") + "/"


def pca_stats_uri(root: str, batch: str) -> str:
    return _join(root, "pca", "stats", f"batch={check_batch(batch)}") + "/"


def basis_version_name(version: int) -> str:
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"a basis version is a positive integer, not {version!r}")
    return f"{version:04d}"


def basis_version_of(folder_name: str) -> int | None:
    """The version a `basis=<NNNN>` folder holds, spelled exactly as basis_version_name writes it; None for
    anything else (`basis=tmp`, `basis=01`): such a folder is not a basis."""
    found = re.fullmatch(r"basis=(\d{4,})", folder_name)
    version = int(found.group(1)) if found else None
    return version if version and f"basis={basis_version_name(version)}" == folder_name else None


def pca_stats_root(root: str) -> str:
    """The statistics area (`--stats-root` of the pca job): one `batch=<ds>/` per batch."""
    return _join(root, "pca", "stats") + "/"


def pca_reduced_root(root: str) -> str:
    """The reduced area (`--reduced-root` of the pca job): `basis=<NNNN>/batch=<ds>/`."""
    return _join(root, "pca", "reduced") + "/"


def pca_bases_uri(root: str) -> str:
    return _join(root, "pca", "bases") + "/"


def pca_basis_uri(root: str, version: int) -> str:
    return pca_bases_uri(root) + f"v={basis_version_name(version)}/"


def pca_current_basis_uri(root: str) -> str:
    return pca_bases_uri(root) + "_current.json"


def pca_reduced_uri(root: str, version: int, batch: str | None = None) -> str:
    """One batch on basis `version`, or every batch on it when batch is None."""
    base = _join(root, "pca", "reduced", f"basis={basis_version_name(version)}")
    return _join(base, f"batch={check_batch(batch)}") + "/" if batch else base + "/"


def reports_uri(root: str, batch: str) -> str:
    return _join(root, "reports", f"batch={check_batch(batch)}") + "/"


def lock_uri(root: str, batch: str) -> str:
    return _join(root, "locks", f"batch={check_batch(batch)}.json")


def code_uri(root: str, version: str) -> str:
    return _join(root, "code", version) + "/"


def models_uri(root: str) -> str:
    return _join(root, "models", "keras") + "/"


def litert_payload_uri(root: str, weights_sha256: str) -> str:
    """The LiteRT flatbuffer converted from the weights with this sha256 (named by it: new weights, new file)."""
    return _join(root, "models", "litert", f"{weights_sha256}.tflite")


def logs_uri(root: str) -> str:
    return _join(root, "logs", "emr") + "/"


# ------------------------------------------------------------------ committed outputs (reader side)


class Readable(Protocol):
    def read_or_none(self, uri: str) -> bytes | None: ...


def commit_marker_uri(output_uri: str) -> str:
    return output_uri.rstrip("/") + "/" + COMMIT_MARKER


def read_commit(store: Readable, output_uri: str) -> dict[str, Any] | None:
    """The commit marker of a job output (None: nothing committed there). Its `location` is the
    run folder, `files` the names under it (relative), the rest the job's counts."""
    data = store.read_or_none(commit_marker_uri(output_uri))
    return json.loads(data) if data else None


def committed_files(store: Readable, output_uri: str) -> list[str]:
    """URIs of the files a committed output holds; [] when nothing is committed."""
    marker = read_commit(store, output_uri)
    if not marker:
        return []
    location = marker["location"].rstrip("/") + "/"
    return [location + name for name in marker["files"]]


def legacy_pca_uri(root: str, batch: str) -> str:
    """`pca/batch=<ds>/`: where PCA wrote before per-basis outputs (each held every batch's rows).
    Nothing writes there any more; erasure still cleans such folders in lakes that have them."""
    return _join(root, "pca", f"batch={check_batch(batch)}") + "/"
