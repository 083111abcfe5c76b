"""The DAG file, as the scheduler sees it: imports, no cycles, shape, owners, retries, trigger rules,
schedule and Params, for both targets; and parsing it reads no Variable and calls no AWS API."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from airflow.sdk import TriggerRule

from fruits import emr_cluster, steps
from fruits.cli import demo

HEAD = [
    "check_gdpr",
    "lock_batch",
    "list_landing",
    "sweep_expired_batches",
    "plan_jobs",
    "stop_if_nothing_to_do",
    "approve_new_basis",
]
EMR_CHAIN = [
    *HEAD,
    "create_cluster",
    "add_ingest_step",
    "wait_ingest",
    "add_featurize_step",
    "wait_featurize",
    "add_pca_step",
    "wait_pca",
    "add_reexpress_step",
    "wait_reexpress",
    "terminate_cluster",
    "report_cost",
    "publish_assets",
    "remove_originals",
    "unlock_batch",
]
LOCAL_CHAIN = [
    *HEAD,
    *("ingest", "featurize", "pca", "reexpress"),
    *("report_cost", "publish_assets", "remove_originals", "unlock_batch"),
]
# Airflow teardowns: run whatever happened upstream, skipped when their setup was (setup -> teardowns).
# publish_assets announces the run's committed outputs (fruits.assets), a failed run's included; remove_originals
# deletes only what committed features cover.
RUN_END = {"remove_originals", "report_cost", "publish_assets", "unlock_batch"}
TEARDOWNS = {"emr": {"create_cluster": {"terminate_cluster"}, "lock_batch": RUN_END}, "local": {"lock_batch": RUN_END}}


@pytest.fixture(params=["emr", "local"])
def target_dag(request, airflow_home, monkeypatch):
    monkeypatch.setenv("FRUITS_TARGET", request.param)
    return request.param, demo.load_dag(request.param)


def test_parsing_reads_no_variable_and_calls_no_aws(airflow_home, monkeypatch):
    """The scheduler parses dags/ constantly: settings are resolved in the first task, not here."""
    monkeypatch.setenv("FRUITS_TARGET", "emr")
    with (
        mock.patch("airflow.sdk.Variable.get", side_effect=AssertionError("Variable read at parse time")) as var,
        mock.patch(
            "botocore.client.BaseClient._make_api_call", side_effect=AssertionError("AWS call at parse time")
        ) as aws,
    ):
        dag = demo.load_dag("emr")
    assert dag.task_dict and not var.called and not aws.called


def test_shape_is_the_documented_chain_and_has_no_cycle(target_dag):
    target, dag = target_dag
    chain_ids = EMR_CHAIN if target == "emr" else LOCAL_CHAIN
    assert set(dag.task_dict) == set(chain_ids)
    dag.check_cycle()  # raises on a cycle
    for upstream, downstream in zip(chain_ids, chain_ids[1:]):
        assert upstream in dag.task_dict[downstream].upstream_task_ids, f"{upstream} -> {downstream}"
    # The GDPR check is the only root: nothing touches AWS before it.
    assert [t.task_id for t in dag.tasks if not t.upstream_task_ids] == ["check_gdpr"]
    # The run's state is decided by the work alone: its one effective leaf is the last job.
    teardowns = set().union(*TEARDOWNS[target].values())
    leaves = [t.task_id for t in dag.tasks if not t.is_teardown and t.downstream_task_ids <= teardowns]
    assert leaves == [chain_ids[-6 if target == "emr" else -5]]


def test_owner_retries_and_trigger_rules(target_dag):
    target, dag = target_dag
    for task in dag.tasks:
        assert task.owner == "fruits-data", task.task_id
    rules = {t.task_id: TriggerRule(t.trigger_rule).value for t in dag.tasks}
    # The cluster's end, the cost report (a failed cluster bills too) and the unlock run whatever happened.
    for setup, teardowns in TEARDOWNS[target].items():
        assert dag.task_dict[setup].is_setup
        for teardown in teardowns:
            assert dag.task_dict[teardown].is_teardown and setup in dag.task_dict[teardown].upstream_task_ids
            assert rules.pop(teardown) == "all_done_setup_success"
    # No teardown decides the run's state (one that did would be the leaf and hide a failed step).
    assert not [t.task_id for t in dag.tasks if t.is_teardown and t.on_failure_fail_dagrun]
    assert set(rules.values()) == {"all_success"}
    retries = {t.task_id: t.retries for t in dag.tasks}
    # Nothing retries what cannot succeed on retry: a failed step, the dry-run gate.
    never = {
        "stop_if_nothing_to_do",
        "approve_new_basis",
        *steps.JOB_KINDS,
        *(f"add_{kind}_step" for kind in steps.JOB_KINDS),
        *(f"wait_{kind}" for kind in steps.JOB_KINDS),
    }
    for task_id, count in retries.items():
        expected = 0 if task_id in never or target == "local" else 2
        assert count == expected, (task_id, count)


def test_emr_operators_are_the_providers_sensors_deferrable_with_timeouts(airflow_home, monkeypatch):
    monkeypatch.setenv("FRUITS_TARGET", "emr")
    dag = demo.load_dag("emr")
    kinds = {t.task_id: type(t).__name__ for t in dag.tasks}
    assert kinds["create_cluster"] == "EmrCreateJobFlowOperator"
    assert {kinds[f"add_{kind}_step"] for kind in steps.JOB_KINDS} == {"EmrAddStepsOperator"}
    assert {kinds[f"wait_{kind}"] for kind in steps.JOB_KINDS} == {"ExplainedEmrStepSensor"}  # an EmrStepSensor
    assert kinds["terminate_cluster"] == "EmrTerminateJobFlowOperator"
    for kind in steps.JOB_KINDS:
        sensor = dag.task_dict[f"wait_{kind}"]
        assert sensor.deferrable and timedelta(0) < timedelta(seconds=sensor.timeout) <= timedelta(hours=6)
        assert sensor.max_attempts * sensor.poke_interval == sensor.timeout
        # Each kind's steps go in one AddJobFlowSteps call; its sensor waits for the LAST of them.
        assert sensor.step_id.endswith(f"xcom_pull(task_ids='add_{kind}_step')[-1] }}}}")
    # The short-circuit skips the work downstream, never a teardown (Airflow's own rule).
    assert dag.task_dict["stop_if_nothing_to_do"].ignore_downstream_trigger_rules is True


def test_schedule_params_and_runs(airflow_home, monkeypatch):
    monkeypatch.setenv("FRUITS_TARGET", "emr")
    dag = demo.load_dag("emr")
    from airflow.serialization.encoders import encode_timetable

    timetable = next(v for k, v in encode_timetable(dag.timetable).items() if str(k).endswith("VAR"))
    assert (timetable["expression"], timetable["timezone"]) == ("0 3 * * *", "Europe/Paris")  # nightly, Paris
    assert (timetable["run_offset"], timetable["key_format"]) == (-1, "%Y-%m-%d")  # the night before, by date
    assert dag.catchup is False and dag.max_active_runs == 1
    params = dag.params
    params.validate()  # every default is valid: scheduled runs and backfills use them
    # The defaults are the product: a scheduled run projects on the current basis (auto), the job
    # chooses variance and drift threshold, the weights are the lake's, the landing is dated.
    assert params["pca_mode"] == steps.PCA_AUTO and params["dry_run"] is False
    for name in (
        "batch",
        "landing",
        "pca_variance",
        "pca_k",
        "pca_drift_threshold",
        "weights",
        "weights_sha256",
        "runtime",
    ):
        assert params[name] is None, name
    assert "pca_model_batch" not in params
    sizing = emr_cluster.ClusterSizing()
    assert params["core_count"] == sizing.core_count and params["spot"] is sizing.spot
    assert params["architecture"] == sizing.architecture
    schema = dag.params.get_param("pca_mode").schema
    assert schema["enum"] == list(steps.PCA_MODES)


def test_a_bad_target_is_an_import_error_not_a_silent_default(airflow_home, monkeypatch):
    monkeypatch.setenv("FRUITS_TARGET", "moon")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(demo.REPO_ROOT / "dags" / "fruits_pipeline.py"))
    assert any("FRUITS_TARGET" in error for error in bag.import_errors.values())


def test_dag_serializes_for_the_scheduler(target_dag):
    from airflow.serialization.serialized_objects import DagSerialization

    _, dag = target_dag
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    assert set(restored.task_dict) == set(dag.task_dict)


def test_each_run_addresses_a_night_by_partition_key_the_0300_run_the_previous_paris_day(airflow_home, monkeypatch):
    import datetime as dt
    import zoneinfo

    monkeypatch.setenv("FRUITS_TARGET", "emr")
    dag = demo.load_dag("emr")
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    # Every night of a year, both clock changes included: each run's key is the Paris day that has ended,
    # and no night is skipped or run twice (at 02:00 the spring-forward night would be keyed 03-29 twice).
    day, keys = dt.date(2026, 1, 1), []
    while day.year == 2026:
        info = demo.night_run_info(dag, scheduled_at=dt.datetime.combine(day, dt.time(0), tzinfo=paris))
        assert info.run_after.astimezone(paris).date() == day and info.run_after.astimezone(paris).hour == 3
        keys.append(info.partition_key)
        day += dt.timedelta(days=1)
    assert keys == [(dt.date(2025, 12, 31) + dt.timedelta(days=n)).isoformat() for n in range(365)]
    # A backfill addresses each night it covers by that night's key (what `airflow backfill create` makes).
    assert demo.night_run_info(dag, "2026-03-01").partition_key == "2026-03-01"
