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
    assert emr_args[emr_args.index("--py-files") :] == local[local.index("--py-files") :] == job.submit_args()
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


def test_featurize_passes_the_weights_and_their_sha256_when_given():
    weights = lake.models_uri(ROOT) + "w.h5"
    args = list(steps.featurize_job(ROOT, BATCH, CODE, weights=weights, weights_sha256="ab" * 32).args)
    assert args[args.index("--weights") + 1] == weights and args[args.index("--weights-sha256") + 1] == "ab" * 32
    with pytest.raises(ValueError, match="set weights too"):
        steps.featurize_job(ROOT, BATCH, CODE, weights_sha256="ab" * 32)


def _value(args, flag):
    return args[args.index(flag) + 1]


def test_pca_nightly_reads_only_its_batch_through_the_lake_roots():
    job = steps.pca_nightly_job(ROOT, BATCH, CODE, window=["2026-03-04", "2026-03-01", "2026-03-04"], variance=0.9)
    args = list(job.args)
    assert job.script == CODE + "spark_jobs/pca.py" and args[:3] == ["nightly", "--batch", BATCH]
    # Roots end with '/': the job appends batch=<ds>/ (features, stats) or basis=<NNNN>/batch=<ds>/.
    assert _value(args, "--features-root") == lake.features_uri(ROOT) == ROOT + "/features/"
    assert _value(args, "--stats-root") == lake.pca_stats_root(ROOT) == ROOT + "/pca/stats/"
    assert _value(args, "--bases") == lake.pca_bases_uri(ROOT) == ROOT + "/pca/bases/"
    assert _value(args, "--reduced-root") == lake.pca_reduced_root(ROOT) == ROOT + "/pca/reduced/"
    assert lake.pca_stats_uri(ROOT, BATCH) == lake.pca_stats_root(ROOT) + f"batch={BATCH}/"
    assert lake.pca_reduced_uri(ROOT, 3, BATCH).startswith(lake.pca_reduced_root(ROOT) + "basis=0003/")
    assert _value(args, "--window") == "2026-03-01,2026-03-04"  # sorted, once each
    assert _value(args, "--mode") == steps.PCA_AUTO and _value(args, "--variance") == "0.9"
    assert "--k" not in args and "--drift-threshold" not in args and "--input" not in args


def test_pca_nightly_defaults_leave_the_choices_to_the_job():
    args = list(steps.pca_nightly_job(ROOT, BATCH, CODE).args)
    assert _value(args, "--mode") == "auto"
    assert not {"--window", "--variance", "--k", "--drift-threshold"} & set(args)


def test_pca_k_wins_over_variance_and_the_drift_threshold_is_passed():
    args = list(
        steps.pca_nightly_job(ROOT, BATCH, CODE, mode=steps.PCA_REFIT, variance=0.95, k=20, drift_threshold=0.1).args
    )
    assert _value(args, "--k") == "20" and "--variance" not in args
    assert _value(args, "--mode") == "refit" and _value(args, "--drift-threshold") == "0.1"


def test_reexpress_lists_the_batches_once_in_date_order():
    job = steps.reexpress_job(ROOT, ["2026-03-04", "2026-02-28", "2026-03-01"], CODE)
    args = list(job.args)
    assert job.name == steps.REEXPRESS and args[0] == "reexpress"
    assert _value(args, "--batches") == "2026-02-28,2026-03-01,2026-03-04"
    assert (_value(args, "--features-root"), _value(args, "--bases"), _value(args, "--reduced-root")) == (
        lake.features_uri(ROOT),
        lake.pca_bases_uri(ROOT),
        lake.pca_reduced_root(ROOT),
    )
    assert _value(args, "--stats-root") == lake.pca_stats_root(ROOT)  # optional: each batch's drift figures
    step = steps.emr_step(job, batch=BATCH)
    assert step["Name"] == f"fruits-reexpress-{BATCH}"
    validate_parameters({"JobFlowId": "j-1", "Steps": [step]}, _emr_input_shape("AddJobFlowSteps"))
    with pytest.raises(ValueError, match="at least one batch"):
        steps.reexpress_job(ROOT, [], CODE)


def test_the_old_pca_layout_is_gone():
    assert not hasattr(lake, "pca_uri") and not hasattr(steps, "pca_inputs") and not hasattr(steps, "pca_model_uri")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "sometimes"}, "pca mode"),
        ({"variance": 1.5}, "variance"),
        ({"variance": 0}, "variance"),
        ({"k": 1281}, "k must be"),
        ({"drift_threshold": 0}, "drift threshold"),
        ({"window": ["2026-02-30"]}, "real calendar date"),
    ],
)
def test_bad_pca_options_are_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        steps.pca_nightly_job(ROOT, BATCH, CODE, **kwargs)


def test_a_batch_that_is_not_a_date_never_reaches_a_path():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        steps.featurize_job(ROOT, "../../etc", CODE)
