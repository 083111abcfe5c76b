"""Where everything lives in the lake: one definition for the DAG, the jobs' arguments, the cost
report and the erasure command. `root` is `s3://<bucket>` on AWS or a local folder URI
(`file:///...`) for the local target; one logical date (`ds`, YYYY-MM-DD) is one batch.

    raw/batch=<ds>/bundle-<hex>.parquet  photos uploaded for that batch, up to 1,000 per bundle
                                         (fruits.upload): one row per photo, binaryFile's columns,
                                         path = <root>/raw/batch=<ds>/[<split>/]<label>/<file>
    raw/batch=<ds>/_uploads.json         the batch's manifest: {key: sha256}, {bundle: [keys]}
    features/batch=<ds>/                 featurize output (Parquet), + _job_metrics.json
    quarantine/batch=<ds>/               files featurize could not read (Parquet: path, reason)
    pca/batch=<ds>/                      PCA output: reduced/ (Parquet), pca_matrix.csv,
                                         report.json, explained_variance.png, model/
    reports/batch=<ds>/                  run report (cost, throughput): run_report.json / .md
    code/<version>/spark_jobs/, code/<version>/bootstrap/, code/<version>/requirements/
    models/keras/<weights file>          MobileNetV2 weights the driver loads (optional)
    logs/emr/                            EMR cluster logs
"""

from __future__ import annotations

import re

_BATCH = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The dataset's splits: a landing folder of one of these names above the label folder is kept in the
# photo's key, and featurize reads it back into the `split` column. spark_jobs/featurize.py holds the
# same tuple (the cluster does not ship this package); tests/test_upload.py checks they agree.
SPLITS = ("Training", "Test")


def check_batch(batch: str) -> str:
    """A batch id is a logical date, YYYY-MM-DD: it names partitions, so nothing else gets in."""
    if not _BATCH.match(batch or ""):
        raise ValueError(f"batch must be a date YYYY-MM-DD, not {batch!r}")
    return batch


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def raw_uri(root: str, batch: str) -> str:
    return _join(root, "raw", f"batch={check_batch(batch)}") + "/"


def features_uri(root: str, batch: str | None = None) -> str:
    """One batch's features, or every batch's (the PCA refit input) when batch is None."""
    return _join(root, "features", *( [f"batch={check_batch(batch)}"] if batch else [] )) + "/"


def quarantine_uri(root: str, batch: str) -> str:
    return _join(root, "quarantine", f"batch={check_batch(batch)}") + "/"


def pca_uri(root: str, batch: str) -> str:
    return _join(root, "pca", f"batch={check_batch(batch)}") + "/"


def reports_uri(root: str, batch: str) -> str:
    return _join(root, "reports", f"batch={check_batch(batch)}") + "/"


def code_uri(root: str, version: str) -> str:
    return _join(root, "code", version) + "/"


def models_uri(root: str) -> str:
    return _join(root, "models", "keras") + "/"


def logs_uri(root: str) -> str:
    return _join(root, "logs", "emr") + "/"
