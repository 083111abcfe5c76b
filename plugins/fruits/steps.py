"""The Spark jobs' command lines: one definition, used by both targets.

`ingest_job` (the night's landing into the lake), `featurize_job`, `pca_nightly_job` (`pca.py nightly`) and
`reexpress_job` (`pca.py reexpress`) build a job's invocation (entry script, `--py-files`, the job's own
arguments, all paths from `fruits.lake`).
`emr_step` wraps it in a `command-runner.jar` step for `EmrAddStepsOperator` (`spark-submit
--deploy-mode cluster`); `local_command` prefixes the local `spark-submit --master local[2]`. The job
arguments are the same list in both: only the lake root (`s3://<bucket>` or `file:///...`) differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fruits import lake

INGEST = "ingest"
FEATURIZE = "featurize"
PCA = "pca"
REEXPRESS = "reexpress"
JOB_KINDS = (INGEST, FEATURIZE, PCA, REEXPRESS)  # the order a run executes them in

# PCA modes (a run Param, the pca job's --mode): "auto" projects on the current basis and fits a new
# one only when there is none or the batch drifted past the threshold; "project" never fits; "refit"
# always fits a new basis from the statistics of the retained batches.
PCA_AUTO = "auto"
PCA_PROJECT = "project"
PCA_REFIT = "refit"
PCA_MODES = (PCA_AUTO, PCA_PROJECT, PCA_REFIT)
LOCAL_MASTER = "local[2]"  # the local target's Spark: two cores, as the tests' sessions
# spark_jobs/ modules the jobs import, shipped with --py-files (fruits.release.helper_modules lists them).
HELPER_MODULES = ("jobio.py", "lakefiles.py", "lakeindex.py", "photos.py")
FEATURIZE_SCRIPT = "featurize.py"
FEATURE_DIMENSIONS = 1280  # MobileNetV2's pooled features: the most components a basis can have


@dataclass(frozen=True)
class SparkJob:
    """One job's invocation: what follows `spark-submit [launcher options]`."""

    name: str
    script: str
    py_files: tuple[str, ...]
    args: tuple[str, ...]

    def submit_args(self) -> list[str]:
        py_files = ["--py-files", ",".join(self.py_files)] if self.py_files else []
        return [*py_files, self.script, *self.args]


def _code_files(code_uri: str, helper_modules: Sequence[str], script: str) -> tuple[str, tuple[str, ...]]:
    jobs = code_uri.rstrip("/") + "/spark_jobs/"
    return jobs + script, tuple(jobs + module for module in helper_modules)


def ingest_job(
    root: str,
    batch: str,
    code_uri: str,
    helper_modules: Sequence[str] = HELPER_MODULES,
    *,
    listing: str,
    landing: str,
    retention_days: int | None = None,
    max_photo_bytes: int | None = None,
    landing_after: str = "keep",
    keep_originals: bool = False,
) -> SparkJob:
    """`ingest.py`: the per-photo work of an ingestion (fruits.upload.write_listing wrote `listing`, whose
    sources are under `landing`) into the batch's raw folder, the index updated; `keep_originals`: the decoded
    photos' stripped bytes kept in raw/ too (a fruits_original_retention_days window)."""
    # The pass decodes the big photos for featurize, with featurize's own functions.
    script, py_files = _code_files(code_uri, [*helper_modules, FEATURIZE_SCRIPT], "ingest.py")
    args = [
        "--listing",
        listing,
        "--landing",
        landing,
        "--raw",
        lake.raw_uri(root, batch),
        "--index",
        lake.area_uri(root, "index"),
        "--batch-id",
        batch,
    ]
    if retention_days:
        args += ["--retention-days", str(int(retention_days))]
    if max_photo_bytes:
        args += ["--max-photo-bytes", str(int(max_photo_bytes))]
    if landing_after != "keep":
        args += ["--landing-after", landing_after]
    if keep_originals:
        args += ["--keep-originals"]
    return SparkJob(INGEST, script, py_files, tuple(args))


def featurize_job(
    root: str,
    batch: str,
    code_uri: str,
    helper_modules: Sequence[str] = HELPER_MODULES,
    *,
    weights: str | None = None,
    weights_sha256: str | None = None,
    model_payload: str | None = None,
    model_payload_sha256: str | None = None,
    runtime: str | None = None,
    batch_size: int | None = None,
    keep_originals: bool = False,
) -> SparkJob:
    script, py_files = _code_files(code_uri, helper_modules, FEATURIZE_SCRIPT)
    args = [
        # The raw lake holds Parquet bundles of photos (fruits.upload), not one file per photo.
        "--input",
        lake.raw_uri(root, batch),
        "--input-format",
        "bundles",
        "--output",
        lake.features_uri(root, batch),
        "--quarantine",
        lake.quarantine_uri(root, batch),
        "--batch-id",
        batch,
        # The derivative kept for re-featurizing when the model changes (docs/gdpr.md): originals go within days.
        "--derived",
        lake.derived_uri(root, batch),
    ]
    if weights:
        args += ["--weights", weights]
        if weights_sha256:
            args += ["--weights-sha256", weights_sha256]
    elif weights_sha256:
        raise ValueError("weights_sha256 checks the file named by weights: set weights too")
    if model_payload:  # the release command's conversion of these weights: the job skips TensorFlow
        args += ["--model-payload", model_payload]
        if model_payload_sha256:
            args += ["--model-payload-sha256", model_payload_sha256]
    if runtime:
        args += ["--runtime", runtime]
    if batch_size:
        args += ["--batch-size", str(int(batch_size))]
    if keep_originals:  # the ingest step's --keep-originals: the bundles hold the decoded photos' bytes too
        args += ["--keep-originals"]
    return SparkJob(FEATURIZE, script, py_files, tuple(args))


def _pca_options(mode: str, variance: float | None, k: int | None, drift_threshold: float | None) -> list[str]:
    if mode not in PCA_MODES:
        raise ValueError(f"pca mode must be one of {PCA_MODES}, not {mode!r}")
    args = ["--mode", mode]
    if k:
        if not 1 <= int(k) <= FEATURE_DIMENSIONS:
            raise ValueError(f"pca k must be in [1, {FEATURE_DIMENSIONS}], not {k!r}")
        args += ["--k", str(int(k))]
    elif variance is not None:
        if not 0 < float(variance) <= 1:
            raise ValueError(f"pca variance must be in (0, 1], not {variance!r}")
        args += ["--variance", str(float(variance))]
    if drift_threshold is not None:
        if not float(drift_threshold) > 0:
            raise ValueError(f"pca drift threshold must be > 0, not {drift_threshold!r}")
        args += ["--drift-threshold", str(float(drift_threshold))]
    return args


def _pca_areas(root: str) -> list[str]:
    """The lake areas both PCA subcommands read and write."""
    return [
        "--features-root",
        lake.features_uri(root),
        "--stats-root",
        lake.pca_stats_root(root),
        "--bases",
        lake.pca_bases_uri(root),
        "--reduced-root",
        lake.pca_reduced_root(root),
    ]


def pca_nightly_job(
    root: str,
    batch: str,
    code_uri: str,
    helper_modules: Sequence[str] = HELPER_MODULES,
    *,
    window: Sequence[str] = (),
    mode: str = PCA_AUTO,
    variance: float | None = None,
    k: int | None = None,
    drift_threshold: float | None = None,
) -> SparkJob:
    """`pca.py nightly`: statistics of this batch's committed features, then the batch on the current
    basis (a new basis first when mode and drift say so). `window`: the batches a refit may merge
    the statistics of (retained, with committed statistics or computed earlier in this run)."""
    script, py_files = _code_files(code_uri, helper_modules, "pca.py")
    args = [
        "nightly",
        "--batch",
        lake.check_batch(batch),
        *_pca_areas(root),
    ]
    if window:
        args += ["--window", ",".join(sorted({lake.check_batch(b) for b in window}))]
    args += _pca_options(mode, variance, k, drift_threshold)
    return SparkJob(PCA, script, py_files, tuple(args))


def reexpress_job(
    root: str,
    batches: Sequence[str],
    code_uri: str,
    helper_modules: Sequence[str] = HELPER_MODULES,
) -> SparkJob:
    """`pca.py reexpress`: each listed batch not yet committed on the current basis is projected on
    it (a no-op when all are, so every run ends with it); the statistics give each its drift figures."""
    if not batches:
        raise ValueError("reexpress needs at least one batch")
    script, py_files = _code_files(code_uri, helper_modules, "pca.py")
    args = [
        "reexpress",
        "--batches",
        ",".join(sorted({lake.check_batch(b) for b in batches})),
        *_pca_areas(root),
    ]
    return SparkJob(REEXPRESS, script, py_files, tuple(args))


def emr_step(job: SparkJob, *, batch: str, action_on_failure: str = "TERMINATE_CLUSTER") -> dict[str, Any]:
    """An EMR step running the job in cluster mode. A failed step terminates the cluster itself
    (TERMINATE_CLUSTER), so billing stops even if Airflow is down when it happens; the DAG's
    teardown terminates it in every other case."""
    return {
        "Name": f"fruits-{job.name}-{batch}",
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": ["spark-submit", "--deploy-mode", "cluster", *job.submit_args()],
        },
    }


def local_command(
    job: SparkJob, *, spark_submit: str, master: str = LOCAL_MASTER, spark_conf: dict[str, str] | None = None
) -> list[str]:
    """The same job through a local spark-submit (the local target)."""
    conf = {"spark.ui.enabled": "false", **(spark_conf or {})}
    conf_args = [arg for key, value in sorted(conf.items()) for arg in ("--conf", f"{key}={value}")]
    return [spark_submit, "--master", master, *conf_args, *job.submit_args()]
