"""The run's plan as plain Python: Params checked before anything is uploaded or started (#13.8), the
reconciliation that catches failed nights up (#13.4) on a local lake and on S3 (moto), the PCA nightly
and reexpress jobs in date order, the estimate on what the run will read, the batch lock, and the
local jobs' environment. The lake states are written with the jobs' own commit writer (jobio.commit)."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import boto3
import ingest as ingest_job
import pytest
from conftest import account_clients, commit_output, emr_network
from moto import mock_aws

from fruits import emr_cluster, lake, local_target, pipeline_tasks, release, run_params, steps, storage
from fruits.emr_cluster import worker_vcpus
from fruits.run_params import RunParams
from fruits.settings import PipelineSettings, load_settings

REGION = "eu-west-3"
BUCKET = "fruits-lake-plan-test"
TONIGHT = "2026-03-10"
CODE = {"code_uri": lake.code_uri(f"s3://{BUCKET}", "abc"), "helper_modules": ["jobio.py"]}
EMR = PipelineSettings(bucket=BUCKET, region=REGION)
DEFAULTS = {name: spec["default"] for name, spec in run_params.param_specs("emr").items()}


def params(**overrides):
    """The raw Params of a run, as Airflow hands them to the first task."""
    return {**DEFAULTS, **overrides}


def parsed(settings=EMR, **overrides) -> RunParams:
    return run_params.parse(params(**overrides), night=TONIGHT, settings=settings)


# ------------------------------------------------------------------------------ the night (#23.3)


def test_the_batch_is_the_runs_partition_key_and_a_run_without_one_must_name_its_night():
    assert run_params.parse(params(), night="2026-03-01", settings=EMR).batch == "2026-03-01"
    assert run_params.parse(params(batch="2026-03-01"), night=None, settings=EMR).batch == "2026-03-01"
    assert run_params.parse(params(batch="2026-03-01"), night="2026-03-01", settings=EMR).batch == "2026-03-01"
    with pytest.raises(ValueError, match="Param batch: empty, and the run has no partition key"):
        run_params.parse(params(), night=None, settings=EMR)
    with pytest.raises(ValueError, match="Param batch: '2026-03-02' is not the run's partition key '2026-03-01'"):
        run_params.parse(params(batch="2026-03-02"), night="2026-03-01", settings=EMR)


# ------------------------------------------------------------------------------ Params (#13.8)


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"pca_k": 1281}, "Param pca_k"),
        ({"pca_k": 0}, "Param pca_k"),
        ({"pca_k": 10, "pca_mode": "project"}, "Param pca_k"),
        ({"pca_mode": "sometimes"}, "Param pca_mode"),
        ({"pca_variance": 1.5}, "Param pca_variance"),
        ({"pca_drift_threshold": -1}, "Param pca_drift_threshold"),
        ({"weights": "https://example.com/w.h5"}, "Param weights"),
        ({"weights": "/airflow/worker/disk/w.h5"}, "Param weights"),  # the cluster cannot read it
        ({"weights": "s3://someone-elses-bucket/w.h5"}, "Param weights"),
        ({"weights_sha256": "ab" * 32}, "Param weights_sha256"),  # without weights
        ({"weights": f"s3://{BUCKET}/models/keras/w.h5", "weights_sha256": "XYZ"}, "Param weights_sha256"),
        ({"landing": "s3://someone-elses-bucket/incoming/"}, "Param landing"),
        ({"landing": "ftp://host/photos/"}, "Param landing"),
    ],
)
def test_each_bad_param_is_refused_before_anything_runs_naming_the_param(overrides, named):
    with pytest.raises(ValueError, match=named):
        pipeline_tasks.start_run({"fruits_bucket": BUCKET}.get, params(**overrides), night=TONIGHT, target="emr")


def test_good_params_pass_and_the_allow_list_opens_other_eu_buckets():
    given = params(
        weights=f"s3://{BUCKET}/models/keras/w.h5",
        weights_sha256="ab" * 32,
        pca_k=50,
        landing="s3://fruits-landing-eu/2026-03-10/",
        pca_mode="refit",
        pca_drift_threshold=0.2,
    )
    variables = {"fruits_bucket": BUCKET, "fruits_allowed_buckets": "fruits-landing-eu, other"}
    run = pipeline_tasks.start_run(variables.get, given, night=TONIGHT, target="emr")
    assert (run.params.pca_k, run.params.pca_mode, run.params.weights_sha256) == (50, "refit", "ab" * 32)
    with pytest.raises(ValueError, match=r"Param landing.*fruits_allowed_buckets"):
        pipeline_tasks.start_run({"fruits_bucket": BUCKET}.get, given, night=TONIGHT, target="emr")
    # The local target reads local weights; a local landing folder is fine on both targets.
    local = {**given, "weights": "file:///shared/w.h5", "landing": "/data/photos"}
    assert pipeline_tasks.start_run({}.get, local, night=TONIGHT, target="local").settings.target == "local"


def test_the_variables_landing_is_checked_too():
    with pytest.raises(ValueError, match=r"Variable fruits_landing"):
        pipeline_tasks.start_run({"fruits_landing": "s3://elsewhere/in/"}.get, params(), night=TONIGHT, target="emr")


def test_bad_values_fail_the_task_at_once():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="Param pca_k"), pipeline_tasks.config_errors_fail_now():
        parsed(pca_k=5000)


@pytest.mark.parametrize("batch", ["2026-13-45", "2026-02-30", "../x", "2026-3-1"])
def test_a_batch_must_be_a_real_date(batch):
    with pytest.raises(ValueError, match="Param batch"):
        parsed(batch=batch)
    assert parsed(batch=None).batch == TONIGHT  # the run's partition key
    assert run_params.parse(params(batch="2026-02-28"), night=None, settings=EMR).batch == "2026-02-28"


def test_the_landing_param_names_the_batch_folder_else_the_variable_is_the_dated_landing():
    variables = {"fruits_landing": "s3://fruits-lake-eu-west-3/incoming/"}
    run = pipeline_tasks.start_run(variables.get, params(), night=TONIGHT, target="emr")
    # The upload reads <landing>/<batch>/ (lake.landing_uri) unless the Param named the folder.
    assert run.settings.landing == "s3://fruits-lake-eu-west-3/incoming/" and not run.params.explicit_landing
    run = pipeline_tasks.start_run(variables.get, params(landing="/tmp/photos"), night=TONIGHT, target="emr")
    assert run.settings.landing == "/tmp/photos" and run.params.explicit_landing


def test_settings_parse_retention_and_drift_threshold_from_variables():
    settings = load_settings({"fruits_retention_days": "30", "fruits_pca_drift_threshold": "0.25"}.get)
    assert settings.retention_days == 30 and settings.drift_threshold == 0.25
    assert load_settings({}.get).retention_days == 365 and load_settings({}.get).drift_threshold is None
    for bad, message in (("fruits_retention_days", "integer"), ("fruits_pca_drift_threshold", "number")):
        with pytest.raises(ValueError, match=message):
            load_settings({bad: "soon"}.get)
    with pytest.raises(ValueError, match="at least 1"):
        load_settings({"fruits_retention_days": "0"}.get)
    assert load_settings({}.get).original_retention_days == 0  # removed by the run that commits their features
    assert load_settings({"fruits_original_retention_days": "3"}.get).original_retention_days == 3
    for bad in ("-1", "366"):  # originals never outlive the batch's retention
        with pytest.raises(ValueError, match="fruits_original_retention_days must be between 0 and"):
            load_settings({"fruits_original_retention_days": bad}.get)
    assert load_settings({"fruits_landing_after": "archive"}.get).landing_after == "archive"
    with pytest.raises(ValueError, match="fruits_landing_after must be one of"):
        load_settings({"fruits_landing_after": "shred"}.get)


# ------------------------------------------------------------------------------ the lake, as the jobs leave it


def commit(store, output, rows):
    commit_output(store, output, {"part-0.parquet": b"rows"}, {"rows": rows})


def raw_batch(store, batch, photos):
    files = {f"Apple/{i}.jpg": f"{batch}-{i}" for i in range(photos)}
    manifest = storage.BatchManifest(files, {"bundle-0.parquet": list(files)})
    storage.write_batch_manifest(store, store.root, batch, manifest)


def build_lake(store, *, old_batches: int = 0):
    """Tonight 2026-03-10 with 5 new photos; 30 days retained (since 2026-02-09)."""
    root = store.root
    for day in range(old_batches):  # history beyond retention: never read
        old = f"2025-{1 + day // 28:02d}-{1 + day % 28:02d}"
        raw_batch(store, old, 2)
    raw_batch(store, "2026-01-01", 2)  # beyond retention, never featurized: left to expire
    raw_batch(store, "2026-03-01", 10)
    commit(store, lake.features_uri(root, "2026-03-01"), 10)
    commit(store, lake.pca_stats_uri(root, "2026-03-01"), 10)
    raw_batch(store, "2026-03-02", 3)  # failed night: featurize never committed
    store.put(lake.raw_uri(root, "2026-03-03") + "_ingestion.json", b"{}", "x")  # a night without photos
    raw_batch(store, "2026-03-04", 4)  # featurize died after writing its run folder
    store.put(lake.features_uri(root, "2026-03-04") + "run=x/part-0.parquet", b"half", "x")
    raw_batch(store, "2026-03-05", 7)  # featurized, but its PCA failed: no statistics
    commit(store, lake.features_uri(root, "2026-03-05"), 7)
    store.put(lake.pca_stats_uri(root, "2026-03-05") + "run=y/part-0", b"half", "x")
    raw_batch(store, "2026-03-06", 2)  # nothing readable: committed with no row, nothing for the PCA
    commit(store, lake.features_uri(root, "2026-03-06"), 0)
    raw_batch(store, "2026-03-12", 1)  # a later night: not tonight's business
    raw_batch(store, TONIGHT, 5)
    store.put(lake.pca_current_basis_uri(root), json.dumps({"version": 2, "location": "x"}).encode(), "x")


EXPECTED = {
    "retained_since": "2026-02-09",
    "catch_up": ["2026-03-02", "2026-03-04"],
    "catch_up_images": {"2026-03-02": 3, "2026-03-04": 4},
    "pca_catch_up": ["2026-03-05"],
    "featurize": ["2026-03-02", "2026-03-04", TONIGHT],
    "featurize_images": 3 + 4 + 5,
    "nightly": ["2026-03-02", "2026-03-04", "2026-03-05", TONIGHT],
    "nightly_rows": 3 + 4 + 7 + 5,
    "reexpress": ["2026-03-01", "2026-03-02", "2026-03-04", "2026-03-05", TONIGHT],
    "reexpress_rows": 10,
    "current_basis": 2,
}


def check_work(work):
    assert {key: work[key] for key in EXPECTED} == EXPECTED
    # Each nightly may refit on the batches with statistics so far: committed ones, then this run's.
    assert work["windows"] == {
        "2026-03-02": ["2026-03-01", "2026-03-02"],
        "2026-03-04": ["2026-03-01", "2026-03-02", "2026-03-04"],
        "2026-03-05": ["2026-03-01", "2026-03-02", "2026-03-04", "2026-03-05"],
        TONIGHT: ["2026-03-01", "2026-03-02", "2026-03-04", "2026-03-05", TONIGHT],
    }


def test_reconcile_on_a_local_lake_catches_failed_nights_up_in_date_order(tmp_path):
    store = storage.LocalStore(tmp_path / "lake")
    build_lake(store)
    check_work(pipeline_tasks.reconcile(store, store.root, TONIGHT, landing_files=5, retention_days=30))


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


def _count_gets(client):
    gets = []
    client.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"]))
    return gets


def test_reconcile_on_s3_reads_a_bounded_number_of_small_objects_whatever_the_history(s3):
    store = storage.S3Store(s3, BUCKET)
    build_lake(store)
    gets = _count_gets(s3)
    check_work(pipeline_tasks.reconcile(store, store.root, TONIGHT, landing_files=5, retention_days=30))
    # 4 features markers (listed partitions), 2 statistics markers, 3 manifests (tonight's, batches to catch up
    # or without photos; 2026-03-03 has none: manifests are streamed, a HEAD says so), the current basis: what
    # the retained window holds, not the history.
    assert sorted(gets) == sorted(
        [
            *(f"features/batch={b}/_committed.json" for b in ("2026-03-01", "2026-03-04", "2026-03-05", "2026-03-06")),
            *(f"pca/stats/batch={b}/_committed.json" for b in ("2026-03-01", "2026-03-05")),
            *(f"raw/batch={b}/_uploads.json" for b in ("2026-03-02", "2026-03-04", TONIGHT)),
            "pca/bases/_current.json",
        ]
    )

    build_lake(store, old_batches=100)  # 100 more nights, all beyond retention
    gets.clear()
    check_work(pipeline_tasks.reconcile(store, store.root, TONIGHT, landing_files=5, retention_days=30))
    assert len(gets) == 10


def test_an_empty_night_with_nothing_to_catch_up_starts_no_cluster(tmp_path):
    store = storage.LocalStore(tmp_path / "lake")
    work = pipeline_tasks.reconcile(store, store.root, TONIGHT, landing_files=0, retention_days=365)
    assert work["featurize"] == work["nightly"] == work["reexpress"] == [] and work["current_basis"] is None
    assert not pipeline_tasks.has_work(dry_run=False, work=work, batch=TONIGHT)
    # ...but an empty night with a failed one behind it catches it up.
    raw_batch(store, "2026-03-09", 2)
    work = pipeline_tasks.reconcile(store, store.root, TONIGHT, landing_files=0, retention_days=365)
    assert work["featurize"] == work["nightly"] == work["reexpress"] == ["2026-03-09"]
    assert pipeline_tasks.has_work(dry_run=False, work=work, batch=TONIGHT)
    assert not pipeline_tasks.has_work(dry_run=True, work=work, batch=TONIGHT)


# ------------------------------------------------------------------------------ the plan


@pytest.fixture
def work(tmp_path):
    store = storage.LocalStore(tmp_path / "lake")
    build_lake(store)
    return pipeline_tasks.reconcile(store, store.root, TONIGHT, landing_files=5, retention_days=30)


def _args(step):
    return step["HadoopJarStep"]["Args"]


def test_emr_plan_lists_each_kinds_steps_in_date_order(work):
    plan = pipeline_tasks.plan_jobs(
        EMR, parsed(weights=f"s3://{BUCKET}/models/keras/w.h5", weights_sha256="cd" * 32), CODE, work, run_name="r"
    )
    root = f"s3://{BUCKET}"
    assert [s["Name"] for s in plan["featurize_steps"]] == [f"fruits-featurize-{b}" for b in EXPECTED["featurize"]]
    for step, batch in zip(plan["featurize_steps"], EXPECTED["featurize"]):
        args = _args(step)
        assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
        assert args[args.index("--input") + 1] == lake.raw_uri(root, batch)
        assert args[args.index("--weights-sha256") + 1] == "cd" * 32
    assert [s["Name"] for s in plan["pca_steps"]] == [f"fruits-pca-{b}" for b in EXPECTED["nightly"]]
    last = _args(plan["pca_steps"][-1])
    assert last[last.index("nightly") + 2] == TONIGHT and last[last.index("--mode") + 1] == "auto"
    assert last[last.index("--window") + 1] == ",".join(work["windows"][TONIGHT])
    (reexpress,) = plan["reexpress_steps"]
    assert _args(reexpress)[_args(reexpress).index("--batches") + 1] == ",".join(EXPECTED["reexpress"])
    assert plan["work"]["catch_up"] == EXPECTED["catch_up"] and "job_flow" in plan


def test_the_drift_threshold_param_wins_over_the_variable(work):
    settings = load_settings({"fruits_bucket": BUCKET, "fruits_pca_drift_threshold": "0.25"}.get)
    for given, expected in ((parsed(), "0.25"), (parsed(pca_drift_threshold=0.5), "0.5")):
        args = _args(pipeline_tasks.plan_jobs(settings, given, CODE, work, run_name="r")["pca_steps"][-1])
        assert args[args.index("--drift-threshold") + 1] == expected


def test_local_plan_runs_the_same_jobs_as_commands(tmp_path, work):
    settings = PipelineSettings(target="local", local_lake=str(tmp_path / "lake"))
    listed = _listed(5)["landing"]
    plan = pipeline_tasks.plan_jobs(
        settings, parsed(settings, pca_mode="project"), CODE, work, run_name="r", listing=listed
    )
    assert [len(plan[f"{kind}_commands"]) for kind in steps.JOB_KINDS] == [1, 3, 4, 1]
    (ingest,) = plan["ingest_commands"]  # tonight's landing, into tonight's raw batch, first
    assert ingest[ingest.index("--listing") + 1] == listed["listing"]
    assert ingest[ingest.index("--landing") + 1] == listed["landing"]
    assert ingest[ingest.index("--raw") + 1] == lake.raw_uri(storage.file_uri(tmp_path / "lake"), TONIGHT)
    assert "--landing-after" not in ingest  # keep, the default
    # No fruits_original_retention_days window, the default: a decoded photo's bytes stay out of raw/; a window
    # keeps them (the ingest job's --keep-originals).
    assert "--keep-originals" not in ingest
    window = dataclasses.replace(settings, original_retention_days=2)
    (kept,) = pipeline_tasks.plan_jobs(window, parsed(window), CODE, work, run_name="r", listing=listed)[
        "ingest_commands"
    ]
    assert kept == [*ingest, "--keep-originals"]
    assert ingest_job.parse_args(kept[kept.index("--listing") :]).keep_originals
    windowed = pipeline_tasks.plan_jobs(window, parsed(window), CODE, work, run_name="r", listing=listed)
    assert all(command[-1] == "--keep-originals" for command in windowed["featurize_commands"])  # reads around them
    assert not any("--keep-originals" in command for command in plan["featurize_commands"])
    # Without a listing (a dry run lists without writing one) there is nothing to ingest.
    assert pipeline_tasks.plan_jobs(settings, parsed(settings), CODE, work, run_name="r")["ingest_commands"] == []
    assert all("--window" not in command for command in plan["pca_commands"])  # project never fits
    assert plan["reexpress_commands"][0][-1].endswith("pca/reduced/")


def test_pca_k_is_checked_against_the_rows_a_fit_of_this_run_may_use(work):
    # A basis exists (v2): a refit merges the first nightly's window, 2026-03-01 + 2026-03-02 = 13 rows.
    pipeline_tasks.plan_jobs(EMR, parsed(pca_k=13), CODE, work, run_name="r")
    with pytest.raises(ValueError, match=r"Param pca_k=14.*13 rows"):
        pipeline_tasks.plan_jobs(EMR, parsed(pca_k=14), CODE, work, run_name="r")
    # No basis yet: auto fits the first nightly batch alone (3 photos).
    first = {**work, "current_basis": None}
    with pytest.raises(ValueError, match=r"Param pca_k=4.*3 rows.*2026-03-02\)"):
        pipeline_tasks.plan_jobs(EMR, parsed(pca_k=4), CODE, first, run_name="r")
    with pytest.raises(ValueError, match="Param pca_mode=project: there is no basis"):
        pipeline_tasks.plan_jobs(EMR, parsed(pca_mode="project"), CODE, first, run_name="r")


def test_the_estimate_counts_what_the_run_will_read(work):
    import inspect

    from fruits import costs

    if "reexpress_rows" not in inspect.signature(costs.estimate_for_run).parameters:
        pytest.skip("estimate_for_run's catchup_images/reexpress_rows/refit_batches come with the costs workstream")
    auto = pipeline_tasks.estimate_cost(EMR, parsed(), work)
    refit = pipeline_tasks.estimate_cost(EMR, parsed(pca_mode="refit"), work)
    # Featurize tonight's 5 photos and the caught-up nights' 7; the PCA reads the 4 nightly batches'
    # rows; a forced refit merges the window's 5 statistics and re-expresses the other retained rows.
    assert auto["reads"] == {
        "images": 5,
        "catchup_images": 7,
        "pca_rows": 19,
        "reexpress_rows": 0,
        "refit_batches": 0,
        "featurize_batches": EXPECTED["featurize"],
        "forced_refit": False,
    }
    assert (refit["reads"]["reexpress_rows"], refit["reads"]["refit_batches"]) == (10, 5)
    sizing = parsed().sizing
    expected = costs.estimate_for_run(
        5, sizing, region=REGION, pca_rows=19, catchup_images=7, reexpress_rows=10, refit_batches=5
    )
    assert refit["seconds"] == expected["seconds"] and refit["cost"] == expected["cost"]
    year = {**work, "nightly_rows": 1_000_000, "reexpress_rows": 364_000_000}
    assert (
        pipeline_tasks.estimate_cost(EMR, parsed(pca_mode="refit"), year)["cost"]["total_usd"]
        > pipeline_tasks.estimate_cost(EMR, parsed(), year)["cost"]["total_usd"]
    )
    assert pipeline_tasks.estimate_cost(PipelineSettings(target="local"), parsed(), work) is None


# ------------------------------------------------------------------------------ the batch lock


def test_a_second_run_of_the_same_batch_fails_fast_naming_the_holder(tmp_path):
    pytest.importorskip("fruits.locks", reason="fruits.locks comes with the ingest workstream (branch ingest)")
    settings = PipelineSettings(target="local", local_lake=str(tmp_path / "lake"))
    pipeline_tasks.lock_batch(settings, None, TONIGHT, owner="run-1")
    with pytest.raises(ValueError, match="run-1"):
        pipeline_tasks.lock_batch(settings, None, TONIGHT, owner="run-2")
    assert pipeline_tasks.unlock_batch(settings, None, TONIGHT, owner="run-2") is False  # not its lock
    assert pipeline_tasks.unlock_batch(settings, None, TONIGHT, owner="run-1") is True
    pipeline_tasks.lock_batch(settings, None, TONIGHT, owner="run-2")


# ------------------------------------------------------------------------------ the local jobs' environment


def test_the_local_jobs_get_no_airflow_secret():
    environ = {
        "PATH": "/bin",
        "KERAS_HOME": "/k",
        "PYTHONPATH": "/p",
        "JAVA_HOME": "/j",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:pw@db/airflow",
        "AIRFLOW__CORE__FERNET_KEY": "f",
        "AIRFLOW__API_AUTH__JWT_SECRET": "j",
        "POSTGRES_PASSWORD": "pw",
        "AIRFLOW_VAR_FRUITS_LANDING": "/l",
        "AWS_SECRET_ACCESS_KEY": "a",
        "GITHUB_TOKEN": "t",
    }
    env = local_target.job_environment(environ)
    assert {"PATH", "KERAS_HOME", "PYTHONPATH", "JAVA_HOME", "PYSPARK_PYTHON"} <= set(env)
    assert not {name for name in environ if name not in ("PATH", "KERAS_HOME", "PYTHONPATH", "JAVA_HOME")} & set(env)


def test_the_demo_summary_reads_the_committed_outputs(tmp_path):
    from fruits.cli import demo

    store = storage.LocalStore(tmp_path / "lake")
    metrics = {"featurized": 3, "quarantined": 1, "images_per_second": 2.5}
    commit_output(
        store, lake.features_uri(store.root, TONIGHT), {"part-0.parquet": b"p"}, {"rows": 3, "metrics": metrics}
    )
    report = {"k": 2, "total_explained_variance": 0.96}
    parts = {
        "pca_matrix/part-0.csv": b"path,label,pc_1,pc_2\na,A,1,2\nb,B,3,4\n",
        "pca_matrix/part-1.csv": b"path,label,pc_1,pc_2\nc,C,5,6\n",
        "report.json": json.dumps(report).encode(),
    }
    commit_output(store, lake.pca_reduced_uri(store.root, 2, TONIGHT), parts)
    store.put(lake.pca_current_basis_uri(store.root), json.dumps({"version": 2}).encode(), "-")
    lines = "\n".join(demo.summarize(tmp_path / "lake", TONIGHT))
    assert "(3 rows; 3 featurized, 1 quarantined, 2.5 images/s)" in lines
    assert "2 CSV part(s)" in lines and "(3 rows x 2 components, basis 2)" in lines and "v=0002" in lines


def test_a_basis_size_set_on_an_auto_run_fits_a_new_basis_once_one_exists():
    assert parsed().mode_for(current_basis=1) == "auto"
    assert parsed(pca_k=2).mode_for(current_basis=1) == "refit"
    assert parsed(pca_variance=0.9).mode_for(current_basis=1) == "refit"
    assert parsed(pca_k=2).mode_for(current_basis=None) == "auto"  # the first fit takes it anyway
    assert parsed(pca_mode="project").mode_for(current_basis=1) == "project"


# ------------------------------------------------------------------------------ the Params, parsed once


def test_the_parsed_params_travel_by_xcom_and_come_back_equal():
    run = pipeline_tasks.start_run(
        {"fruits_bucket": BUCKET}.get,
        params(
            pca_k=7,
            pca_mode="refit",
            weights=f"s3://{BUCKET}/w.h5",
            weights_sha256="ef" * 32,
            runtime="keras",
            core_count=2,
            worker_instance_types=["c7g.2xlarge"],
            dry_run=True,
        ),
        night=TONIGHT,
        target="emr",
    )
    through_xcom = json.loads(json.dumps(run.as_xcom()))  # what XCom stores: JSON, tuples become lists
    assert pipeline_tasks.Run.from_xcom(through_xcom) == run
    assert run.params.sizing.core_count == 2 and run.params.sizing.worker_types == ("c7g.2xlarge",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.params.pca_k = 8


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"core_count": 0}, "core_count"),
        ({"architecture": "x86_64", "worker_instance_types": ["c7g.2xlarge"]}, "worker_instance_types"),
        ({"pca_k": True}, "Param pca_k"),  # a bool is not a component count
        ({"pca_variance": "0.9"}, "Param pca_variance"),
        ({"runtime": "onnx"}, "Param runtime"),
    ],
)
def test_sizing_and_typed_values_are_refused_at_the_first_task(overrides, named):
    with pytest.raises(ValueError, match=named):
        parsed(**overrides)


def test_the_target_comes_from_the_environment_only():
    from fruits import settings

    assert settings.target_from_environment({}) == "emr"
    assert settings.target_from_environment({"FRUITS_TARGET": "local"}) == "local"
    with pytest.raises(ValueError, match="FRUITS_TARGET"):
        settings.target_from_environment({"FRUITS_TARGET": "moon"})
    # A fruits_target Variable is not a setting: it cannot contradict the DAG's target.
    assert "target" not in settings.variable_names()
    assert load_settings({"fruits_target": "local"}.get, target="emr").target == "emr"


# ------------------------------------------------------------------------------ what the cluster needs (#13.6)


def _listed(files: int, photo_bytes: int = 4_668) -> dict:
    """list_landing's answer for a landing of `files` files (the listing itself is read by the ingest job only)."""
    listing = f"s3://{BUCKET}/raw/batch={TONIGHT}/_ingest/listing-0.parquet" if files else None
    landing = {"listing": listing, "landing": f"s3://landing/{TONIGHT}/", "files": files, "candidates": files}
    return {"landing": {**landing, "bytes": files * photo_bytes}, "code": CODE}


def _emr_plan(settings: PipelineSettings, s3, images: int, photo_bytes: int = 4_668, **overrides) -> dict:
    """plan_run on the EMR target in an account whose network and quotas pass fruits.preflight (moto)."""
    network = emr_network(REGION)
    ready = dataclasses.replace(settings, vpc_id=network["fruits_vpc_id"], subnet_ids=network["fruits_subnet_ids"])
    run = pipeline_tasks.Run(ready, parsed(ready, **overrides))
    listed = _listed(images, photo_bytes)
    return pipeline_tasks.plan_run(run, s3, listed, run_name="r", client=account_clients(REGION))


def test_an_emr_plan_needs_the_published_wheelhouse_and_weights_before_any_cluster(s3):
    store = storage.S3Store(s3, BUCKET)
    raw_batch(store, TONIGHT, 5)
    with pytest.raises(FileNotFoundError, match=r"make wheelhouse.*fruits\.release publish-wheelhouse"):
        _emr_plan(EMR, s3, 5)
    lock = (pipeline_tasks.REPO_ROOT / release.NODE_LOCK).read_bytes()
    store.put(release.wheelhouse_uri(store.root, lock) + release.WHEELHOUSE_MANIFEST, b"{}", "-")
    with pytest.raises(FileNotFoundError, match="publish-weights"):
        _emr_plan(EMR, s3, 5)
    published = release.publish_weights(store, store.root, b"weights")
    plan = _emr_plan(EMR, s3, 5)
    args = _args(plan["featurize_steps"][0])
    assert (
        args[args.index("--weights") + 1]
        == published["weights"]
        == store.root + "/models/keras/" + (release.DEFAULT_WEIGHTS_FILE)
    )
    assert args[args.index("--weights-sha256") + 1] == published["weights_sha256"] == release.sha256_bytes(b"weights")
    assert "--model-payload" not in args  # published without its conversion: the job converts
    assert plan["run_jobs"] is True
    # Published with their LiteRT conversion (the release command's default): every night broadcasts it.
    converted = release.publish_weights(store, store.root, b"weights", payload=b"flatbuffer")
    args = _args(_emr_plan(EMR, s3, 5)["featurize_steps"][0])
    assert args[args.index("--model-payload") + 1] == converted["model_payload"]
    assert args[args.index("--model-payload-sha256") + 1] == release.sha256_bytes(b"flatbuffer")
    # The cluster grows with tonight's landing (emr_cluster.sized_for_night on the listing's bytes and photos): three
    # nights of a million phone photos (a missed weekend) need more than the default.
    fleets = {f["InstanceFleetType"]: f for f in plan["job_flow"]["Instances"]["InstanceFleets"]}
    asked = parsed(EMR).sizing
    assert fleets["TASK"]["TargetSpotCapacity"] == asked.task_count  # five thumbnails: the default
    big = _emr_plan(EMR, s3, 3_000_000, photo_bytes=2_850_000)
    fleets = {f["InstanceFleetType"]: f for f in big["job_flow"]["Instances"]["InstanceFleets"]}
    grown = emr_cluster.sized_for_night(asked, 3_000_000 * 2_850_000, 3_000_000)
    assert fleets["TASK"]["TargetSpotCapacity"] == grown.task_count > asked.task_count
    assert big["estimate"]["executor_vcpus"] == worker_vcpus(grown)
    # Weights named by the run win over the lake's copy.
    args = _args(_emr_plan(EMR, s3, 5, weights=f"s3://{BUCKET}/other.h5")["featurize_steps"][0])
    assert args[args.index("--weights") + 1] == f"s3://{BUCKET}/other.h5" and "--weights-sha256" not in args


def test_a_default_night_of_a_million_phone_photos_runs_on_the_cost_model_s_cheapest_task_count(s3):
    from fruits import cost_compare, costs
    from fruits.cli import costs as costs_cli

    store = storage.S3Store(s3, BUCKET)
    lock = (pipeline_tasks.REPO_ROOT / release.NODE_LOCK).read_bytes()
    store.put(release.wheelhouse_uri(store.root, lock) + release.WHEELHOUSE_MANIFEST, b"{}", "-")
    release.publish_weights(store, store.root, b"weights")
    args = costs_cli.build_parser().parse_args(["bill", "--photo-mix", "phone", "--region", REGION])
    phone = costs.night_workload(costs_cli.workload_of(args), costs.RETENTION_DAYS)
    assert phone.original_retention_days == EMR.original_retention_days == 0  # the default: no originals window
    plan = _emr_plan(EMR, s3, phone.images, photo_bytes=round(phone.landing_image_bytes))
    fleets = {f["InstanceFleetType"]: f for f in plan["job_flow"]["Instances"]["InstanceFleets"]}
    planned = fleets["TASK"]["TargetSpotCapacity"]
    asked = parsed(EMR).sizing
    prices = costs.PriceBook.load()
    cheapest = cost_compare.cheapest_task_count(phone, asked, region=REGION, prices=prices)
    assert abs(planned - cheapest) <= 1 and planned > asked.task_count
    # On the plan's nodes the night stays within issue 22's hours.
    sized = dataclasses.replace(asked, task_count=planned)
    night = costs.estimate_emr(phone, sized, region=REGION, prices=prices, as_asked=True)
    assert night["seconds"]["wall_s"] <= cost_compare.PHOTO_MIX_TARGETS["phone"]["wall_minutes"] * 60


def test_an_empty_night_needs_nothing_published_and_the_local_target_no_wheelhouse(s3, tmp_path):
    empty = _emr_plan(EMR, s3, 0)
    assert empty["run_jobs"] is False and empty["featurize_steps"] == []
    local = PipelineSettings(target="local", local_lake=str(tmp_path / "lake"))
    raw_batch(storage.LocalStore(tmp_path / "lake"), TONIGHT, 5)
    plan = pipeline_tasks.plan_run(pipeline_tasks.Run(local, parsed(local)), None, _listed(5), run_name="r")
    (command,) = plan["featurize_commands"]
    assert plan["run_jobs"] is True and "--weights" not in command  # the job's own default (Keras' cache)


def test_the_airflow_side_s3_client_names_the_lake_account(s3):
    from unittest import mock

    from fruits import gdpr

    sent = []
    s3.meta.events.register("before-call.s3.HeadBucket", lambda params, **_: sent.append(params))
    settings = PipelineSettings(bucket=BUCKET, region=REGION, bucket_owner="123456789012")
    with mock.patch("airflow.providers.amazon.aws.hooks.s3.S3Hook.get_conn", return_value=s3):
        client = pipeline_tasks.s3_client(settings)
    assert client is s3
    with contextlib.suppress(Exception):  # moto may refuse the owner it does not know; what was sent is the point
        client.head_bucket(Bucket=BUCKET)
    assert sent and sent[-1]["headers"]["x-amz-expected-bucket-owner"] == "123456789012"
    assert gdpr.owner_args("") == {}


def test_the_nights_deadline_is_the_next_deadline_hour_in_paris_and_a_bad_one_is_named():
    import datetime as dt
    from zoneinfo import ZoneInfo

    from fruits import deadline
    from fruits.settings import load_settings, parse_deadline

    paris, seven = ZoneInfo("Europe/Paris"), parse_deadline("07:00")
    at = deadline.deadline_after(dt.datetime(2026, 3, 2, 3, tzinfo=paris), seven)  # the 03:00 run
    assert at == dt.datetime(2026, 3, 2, 7, tzinfo=paris) and at.tzinfo == dt.UTC
    late = deadline.deadline_after(dt.datetime(2026, 3, 2, 7, tzinfo=paris), seven)  # a run created at 07:00
    assert late == dt.datetime(2026, 3, 3, 7, tzinfo=paris)
    summer = deadline.deadline_after(dt.datetime(2026, 3, 29, 3, tzinfo=paris), seven)  # the clocks changed at 02:00
    assert summer - dt.datetime(2026, 3, 29, 3, tzinfo=paris) == dt.timedelta(hours=4)
    with pytest.raises(ValueError, match="fruits_deadline must be HH:MM"):
        load_settings({"fruits_deadline": "7h"}.get)


def test_with_approval_required_no_basis_changes_unasked_and_a_refit_asks_with_its_figures():
    from fruits import approval

    work = {
        "batch": TONIGHT,
        "nightly": [TONIGHT],
        "windows": {TONIGHT: ["2026-03-09", TONIGHT]},
        "rows": {"2026-03-09": 40, TONIGHT: 60},
        "reexpress": ["2026-03-09", TONIGHT],
        "current_basis": 3,
    }
    required = PipelineSettings(bucket=BUCKET, region=REGION, basis_approval="required")
    # Off (the default): the plan is the product's, nothing is asked.
    assert approval.request(EMR, parsed(pca_mode="refit"), work) is None
    assert approval.effective_mode(EMR, parsed(), 3) == steps.PCA_AUTO
    # Required: an auto night projects on its basis; the first basis replaces nothing and is not asked for.
    assert approval.effective_mode(required, parsed(), 3) == steps.PCA_PROJECT
    assert approval.request(required, parsed(), work) is None
    assert approval.request(required, parsed(pca_mode="refit"), {**work, "current_basis": None}) is None
    drift = {"batch": "2026-03-09", "captured_share": 0.71, "captured_share_at_fit": 0.83, "crossed": True}
    asked = approval.request(required, parsed(pca_mode="refit", pca_k=20), work, drift)
    figures = asked["figures"]
    assert (figures["current_basis"], figures["fit_rows"], figures["k"]) == (3, 100, 20)
    assert figures["fit_batches"] == ["2026-03-09", TONIGHT] and figures["last_drift_on_current_basis"] == drift
    assert "replace basis 3" in asked["body"] and '"captured_share": 0.71' in asked["body"]
    # A refit asked by a basis size is asked for too, and the plan's PCA steps keep refit.
    assert approval.request(required, parsed(pca_k=20), work)["figures"]["asked_by"] == "Param pca_k / pca_variance"


def test_list_landing_writes_the_listing_the_ingest_job_reads_and_an_empty_night_removes_it(tmp_path):
    import pyarrow.parquet as pq

    landing = tmp_path / "landing"
    (landing / TONIGHT / "Kiwi").mkdir(parents=True)
    (landing / TONIGHT / "Kiwi" / "k 1.jpg").write_bytes(b"\xff\xd8 not decoded here")
    (landing / TONIGHT / "notes.txt").write_bytes(b"")
    settings = PipelineSettings(target="local", local_lake=str(tmp_path / "lake"), landing=str(landing))
    run = pipeline_tasks.Run(settings, parsed(settings))
    listed = pipeline_tasks.list_landing(settings, None, TONIGHT, dry_run=False, repo_root=pipeline_tasks.REPO_ROOT)
    rows = pq.read_table(storage.LocalStore(tmp_path / "lake")._path(listed["landing"]["listing"])).to_pylist()
    assert sorted(bytes(r["uri"]).decode().rsplit("/", 2)[-1] for r in rows) == ["k 1.jpg", "notes.txt"]
    assert {r["key"]: r["reason"] for r in rows}["Kiwi/k 1.jpg"] == ""  # decided by the job, from its bytes
    assert (listed["landing"]["files"], listed["landing"]["landing"]) == (2, storage.file_uri(landing / TONIGHT) + "/")
    plan = pipeline_tasks.plan_run(run, None, listed, run_name="r")
    assert plan["run_jobs"] is True and len(plan["ingest_commands"]) == len(plan["featurize_commands"]) == 1
    # A dry run writes nothing; an empty night starts nothing and leaves no listing behind.
    dry = pipeline_tasks.list_landing(settings, None, TONIGHT, dry_run=True, repo_root=pipeline_tasks.REPO_ROOT)
    assert dry["landing"]["listing"] is None and dry["landing"]["files"] == 2
    empty = pipeline_tasks.list_landing(settings, None, "2026-03-11", dry_run=False, repo_root=pipeline_tasks.REPO_ROOT)
    listing = storage.LocalStore(tmp_path / "lake")._path(empty["landing"]["listing"])
    assert listing.is_file() and empty["landing"]["files"] == 0
    other = pipeline_tasks.Run(settings, run_params.parse(params(), night="2026-03-11", settings=settings))
    assert pipeline_tasks.plan_run(other, None, empty, run_name="r")["run_jobs"] is False
    assert not listing.exists()


def test_a_landing_the_cluster_cannot_reach_cannot_be_archived_or_cleared_by_it(tmp_path):
    """On EMR a landing outside S3 is staged into the lake: the cluster could not tidy it, so the setting that
    asks it to is refused before anything is listed or copied."""
    (tmp_path / "landing" / TONIGHT).mkdir(parents=True)
    settings = dataclasses.replace(EMR, landing=str(tmp_path / "landing"), landing_after="delete")
    with pytest.raises(ValueError, match="fruits_landing_after=delete needs a landing the cluster reaches"):
        pipeline_tasks.list_landing(settings, None, TONIGHT, dry_run=False)
