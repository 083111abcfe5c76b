"""The two Spark jobs' command lines: one definition, used by both targets.

`featurize_job` / `pca_job` build the job's invocation (entry script, `--py-files`, the job's own
arguments, all paths from `fruits.lake`). `emr_step` wraps it in a `command-runner.jar` step for
`EmrAddStepsOperator` (`spark-submit --deploy-mode cluster`); `local_command` prefixes the local
`spark-submit --master local[2]`. The job arguments are the same list in both: only the lake root
(`s3://<bucket>` or `file:///...`) differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from fruits import lake

FEATURIZE = "featurize"
PCA = "pca"

# PCA modes (a run Param): "refit" fits a new PCA on every batch up to and including this one, so
# each batch's output is a complete, comparable projection of everything seen so far; "project"
# reuses a model saved by an earlier run and only projects this batch (cheap, stable axes).
PCA_REFIT = "refit"
PCA_PROJECT = "project"
PCA_MODES = (PCA_REFIT, PCA_PROJECT)


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


def featurize_job(
    root: str,
    batch: str,
    code_uri: str,
    helper_modules: Sequence[str] = ("jobio.py",),
    *,
    weights: str | None = None,
    runtime: str | None = None,
    batch_size: int | None = None,
) -> SparkJob:
    script, py_files = _code_files(code_uri, helper_modules, "featurize.py")
    args = [
        # The raw lake holds Parquet bundles of photos (fruits.upload), not one file per photo.
        "--input", lake.raw_uri(root, batch), "--input-format", "bundles",
        "--output", lake.features_uri(root, batch),
        "--quarantine", lake.quarantine_uri(root, batch),
        "--batch-id", batch,
    ]
    if weights:
        args += ["--weights", weights]
    if runtime:
        args += ["--runtime", runtime]
    if batch_size:
        args += ["--batch-size", str(int(batch_size))]
    return SparkJob(FEATURIZE, script, py_files, tuple(args))


def pca_inputs(root: str, batch: str, mode: str, existing_batches: Sequence[str] = ()) -> list[str]:
    """Feature partitions the PCA reads. Refit: every batch up to and including `batch` (never a
    later one, so a backfill gives the same result in any order); project: this batch only."""
    lake.check_batch(batch)
    if mode == PCA_PROJECT:
        return [lake.features_uri(root, batch)]
    if mode != PCA_REFIT:
        raise ValueError(f"pca mode must be one of {PCA_MODES}, not {mode!r}")
    earlier = sorted({lake.check_batch(b) for b in existing_batches if b < batch})
    return [lake.features_uri(root, b) for b in [*earlier, batch]]


def pca_model_uri(root: str, model_batch: str) -> str:
    """Where the run for `model_batch` saved its fitted PCA (what `--model` reuses)."""
    return lake.pca_uri(root, model_batch) + "model/"


def pca_job(
    root: str,
    batch: str,
    code_uri: str,
    helper_modules: Sequence[str] = ("jobio.py",),
    *,
    mode: str = PCA_REFIT,
    existing_batches: Sequence[str] = (),
    variance: float | None = 0.95,
    k: int | None = None,
    model_batch: str | None = None,
) -> SparkJob:
    script, py_files = _code_files(code_uri, helper_modules, "pca.py")
    args = [
        "--input", ",".join(pca_inputs(root, batch, mode, existing_batches)),
        "--output", lake.pca_uri(root, batch),
    ]
    if mode == PCA_PROJECT:
        if not model_batch:
            raise ValueError("pca mode 'project' needs pca_model_batch: the batch whose saved model to reuse")
        args += ["--model", pca_model_uri(root, model_batch)]
    elif k:
        args += ["--k", str(int(k))]
    else:
        if variance is None or not 0 < float(variance) <= 1:
            raise ValueError(f"pca variance must be in (0, 1], not {variance!r}")
        args += ["--variance", str(float(variance))]
    return SparkJob(PCA, script, py_files, tuple(args))


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
    job: SparkJob, *, spark_submit: str, master: str = "local[2]", spark_conf: dict[str, str] | None = None
) -> list[str]:
    """The same job through a local spark-submit (the local target)."""
    conf = {"spark.ui.enabled": "false", **(spark_conf or {})}
    conf_args = [arg for key, value in sorted(conf.items()) for arg in ("--conf", f"{key}={value}")]
    return [spark_submit, "--master", master, *conf_args, *job.submit_args()]
