"""fruits.steps: the jobs' command lines, one definition for EMR steps and the local spark-submit."""

from __future__ import annotations

import botocore.session
import pytest
from botocore.validate import ParamValidationError, validate_parameters

from fruits import lake, steps

ROOT = "s3://fruits-lake-test"
CODE = lake.code_uri(ROOT, "abc123")
BATCH = "2026-03-04"


def _emr_input_shape(operation: str):
    return botocore.session.get_session().get_service_model("emr").operation_model(operation).input_shape


def test_featurize_arguments_come_from_the_lake_layout():
    job = steps.featurize_job(ROOT, BATCH, CODE, ["jobio.py"], runtime="litert", batch_size=16)
    args = list(job.args)
    assert args[args.index("--input") + 1] == lake.raw_uri(ROOT, BATCH)
    assert args[args.index("--input-format") + 1] == "bundles"  # the raw lake holds Parquet bundles
    assert args[args.index("--output") + 1] == lake.features_uri(ROOT, BATCH)
    assert args[args.index("--quarantine") + 1] == lake.quarantine_uri(ROOT, BATCH)
    assert args[args.index("--batch-id") + 1] == BATCH
    assert args[args.index("--runtime") + 1] == "litert" and args[args.index("--batch-size") + 1] == "16"
    assert "--weights" not in args  # the job's default unless asked
    assert job.script == CODE + "spark_jobs/featurize.py"
    assert job.py_files == (CODE + "spark_jobs/jobio.py",)


def test_emr_step_and_local_command_run_the_same_job_arguments():
    job = steps.featurize_job(ROOT, BATCH, CODE, ["jobio.py", "other.py"])
    step = steps.emr_step(job, batch=BATCH)
    local = steps.local_command(job, spark_submit="/venv/bin/spark-submit")

    emr_args = step["HadoopJarStep"]["Args"]
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    assert emr_args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert local[:3] == ["/venv/bin/spark-submit", "--master", "local[2]"]
    # Everything from --py-files on is identical: same script, same helpers, same job arguments.
    assert emr_args[emr_args.index("--py-files"):] == local[local.index("--py-files"):] == job.submit_args()
    assert job.submit_args()[1] == f"{CODE}spark_jobs/jobio.py,{CODE}spark_jobs/other.py"
    assert "spark.ui.enabled=false" in local
    # A failed step ends the cluster on its own even if Airflow is gone.
    assert step["ActionOnFailure"] == "TERMINATE_CLUSTER"
    validate_parameters({"JobFlowId": "j-1", "Steps": [step]}, _emr_input_shape("AddJobFlowSteps"))


def test_botocore_validation_would_catch_a_malformed_step():
    step = steps.emr_step(steps.featurize_job(ROOT, BATCH, CODE), batch=BATCH)
    step["HadoopJarStep"]["Args"] = "not a list"
    with pytest.raises(ParamValidationError):
        validate_parameters({"JobFlowId": "j-1", "Steps": [step]}, _emr_input_shape("AddJobFlowSteps"))


def test_pca_refit_reads_every_batch_up_to_its_own_and_never_a_later_one():
    existing = ["2026-03-05", "2026-03-01", "2026-03-04", "2026-02-28"]
    inputs = steps.pca_inputs(ROOT, BATCH, steps.PCA_REFIT, existing)
    assert inputs == [lake.features_uri(ROOT, b) for b in ("2026-02-28", "2026-03-01", "2026-03-04")]
    job = steps.pca_job(ROOT, BATCH, CODE, mode=steps.PCA_REFIT, existing_batches=existing, variance=0.9)
    args = list(job.args)
    assert args[args.index("--input") + 1] == ",".join(inputs)
    assert args[args.index("--output") + 1] == lake.pca_uri(ROOT, BATCH)
    assert args[args.index("--variance") + 1] == "0.9" and "--k" not in args and "--model" not in args


def test_pca_k_wins_over_variance():
    args = list(steps.pca_job(ROOT, BATCH, CODE, variance=0.95, k=20).args)
    assert args[args.index("--k") + 1] == "20" and "--variance" not in args


def test_pca_project_reuses_the_named_batch_model_on_this_batch_only():
    args = list(steps.pca_job(ROOT, BATCH, CODE, mode=steps.PCA_PROJECT, existing_batches=["2026-03-01"],
                              model_batch="2026-03-01").args)
    assert args[args.index("--input") + 1] == lake.features_uri(ROOT, BATCH)
    assert args[args.index("--model") + 1] == lake.pca_uri(ROOT, "2026-03-01") + "model/"
    assert "--variance" not in args and "--k" not in args


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": steps.PCA_PROJECT}, "pca_model_batch"),
        ({"mode": "sometimes"}, "pca mode"),
        ({"variance": 1.5}, "variance"),
        ({"variance": 0}, "variance"),
    ],
)
def test_bad_pca_options_are_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        steps.pca_job(ROOT, BATCH, CODE, **kwargs)


def test_a_batch_that_is_not_a_date_never_reaches_a_path():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        steps.featurize_job(ROOT, "../../etc", CODE)
