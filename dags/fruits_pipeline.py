"""Fruits! nightly pipeline: new photos -> cluster -> featurize -> PCA -> sensors -> terminate.

check_gdpr (the Params parsed once, the GDPR guard) -> lock_batch (setup) -> list_landing (metadata only: the
per-photo work is the cluster's) -> sweep_expired_batches (retention by batch date) -> plan_jobs (failed nights
to catch up, PCA window, estimate) -> stop_if_nothing_to_do (a dry run or an empty night: no cluster) ->
approve_new_basis (waits for an operator only when fruits_basis_approval=required and the plan replaces the
basis) -> create_cluster (setup) -> per job kind (ingest, featurize, PCA nightly, reexpress) add steps -> wait
-> terminate_cluster, report_cost, publish_assets, remove_originals (with fruits_original_retention_days=0, the
default: the originals of what the run featurized), unlock_batch: Airflow teardowns, so they run whatever happened
upstream, are skipped with their setup, and leave the run's state to the work (a failed step fails the run).
Each run is one night, its partition key (the 03:00 run: the previous Paris day), due by fruits_deadline.
Target (env FRUITS_TARGET, fruits.settings): "emr" = transient EMR cluster; "local" = the same jobs through
a local spark-submit, lake in a folder. Settings: Airflow Variables `fruits_*`; credentials: `aws_default`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.sdk import DAG, CronPartitionTimetable, Param, Variable, chain, task

from fruits import assets, run_params, steps
from fruits import deadline as night
from fruits import pipeline_tasks as tasks
from fruits.approval import NewBasisApproval
from fruits.settings import target_from_environment
from fruits.step_failures import ExplainedEmrStepSensor

TARGET = target_from_environment()
STEP_TIMEOUT = timedelta(hours=3)  # per job kind: ingesting or featurizing a whole night takes well under an hour
POKE = timedelta(minutes=1)

with DAG(
    dag_id="fruits_pipeline",
    # Day D's 03:00 run is partition D-1 (the previous tick's date): its folder is complete. Not 02:00: on
    # the spring-forward night that tick does not exist and Airflow keys it D, skipping D-1 (docs/operations.md).
    schedule=CronPartitionTimetable(
        "0 3 * * *", timezone="Europe/Paris", run_offset=-1, key_format=run_params.PARTITION_KEY_FORMAT
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Paris"),
    catchup=False,  # past dates run as explicit backfills
    max_active_runs=1,  # one cluster at a time; the basis changes in date order
    deadline=night.alert(),  # done by fruits_deadline (07:00 Paris), else the operator is told
    params={name: Param(**spec) for name, spec in run_params.param_specs(TARGET).items()},
    # Retries cover transient AWS errors; a local failure is deterministic, retrying only delays it.
    default_args={
        "owner": "fruits-data",
        "retries": 2 if TARGET == "emr" else 0,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
    },
    tags=["fruits", TARGET],
    doc_md=__doc__,
):

    @task
    def check_gdpr(params=None, dag_run=None) -> dict:
        with tasks.config_errors_fail_now():
            run = tasks.start_run(Variable.get, params, night=dag_run.partition_key, target=TARGET)
            tasks.guard(run.settings, lambda: tasks.s3_client(run.settings))  # before any other AWS call
        return run.as_xcom()

    # Held by another run or an erasure: fails at once naming the holder; AWS hiccups are retried.
    @task(pre_execute=assets.lineage("lock_batch"))
    def lock_batch(checked: dict, run_id=None) -> dict:
        run = tasks.Run.from_xcom(checked)
        with tasks.config_errors_fail_now():
            return tasks.lock_batch(run.settings, tasks.lake_client(run.settings), run.batch, owner=run_id)

    @task(pre_execute=assets.lineage("list_landing"))
    def list_landing(checked: dict) -> dict:
        run = tasks.Run.from_xcom(checked)
        return tasks.list_landing(
            run.settings,
            tasks.lake_client(run.settings),
            run.batch,
            dry_run=run.params.dry_run,
            explicit_landing=run.params.explicit_landing,
        )

    @task(pre_execute=assets.lineage("sweep_expired_batches"))  # by batch date; skipped nights caught up
    def sweep_expired_batches(checked: dict, run_id=None) -> dict:
        run = tasks.Run.from_xcom(checked)
        client = tasks.lake_client(run.settings)
        return tasks.sweep_retention(run.settings, client, run.batch, dry_run=run.params.dry_run, owner=run_id)

    @task(multiple_outputs=True, pre_execute=assets.lineage("plan_jobs"))
    def plan_jobs(checked: dict, listed: dict, run_id=None) -> dict:
        run = tasks.Run.from_xcom(checked)
        with tasks.config_errors_fail_now():
            return tasks.plan_run(
                run, tasks.lake_client(run.settings), listed, run_name=f"fruits-{run.batch}-{run_id}"[:256]
            )

    @task.short_circuit(retries=0)  # skips the work; the teardowns still run (or skip with their setup)
    def stop_if_nothing_to_do(run_jobs: bool) -> bool:
        return run_jobs

    @task(retries=0)
    def run_local_jobs(commands: list[list[str]], name: str) -> None:
        from fruits import local_target

        for command in commands:  # in the planned order, the first failure stops the rest
            local_target.run(command, name=name)

    # fruits_original_retention_days=0: the originals go once the features committed tonight cover them.
    @task(pre_execute=assets.lineage("remove_originals"))
    def remove_originals(checked: dict, ti=None, run_id=None) -> dict:
        run = tasks.Run.from_xcom(checked)
        work = ti.xcom_pull(task_ids="plan_jobs", key="work")
        client = tasks.lake_client(run.settings)
        return tasks.remove_originals(run.settings, client, work, dry_run=run.params.dry_run, owner=run_id)

    @task(pre_execute=assets.lineage("report_cost"))  # what the run cost and how fast, failed runs included
    def report_cost(checked: dict, ti=None, dag_run=None) -> dict:
        pulled = {key: ti.xcom_pull(task_ids="plan_jobs", key=key) for key in ("estimate", "work", "run_jobs")}
        return tasks.report_cost(
            tasks.Run.from_xcom(checked),
            ti.xcom_pull(task_ids="create_cluster"),
            pulled["estimate"],
            pulled["work"],
            bool(pulled["run_jobs"]),
            airflow_run=tasks.airflow_run_stamp(ti, dag_run),
        )

    # The run's committed outputs as asset events (fruits.assets), what a failed run did commit included.
    @task(outlets=list(assets.aliases().values()), pre_execute=assets.lineage("publish_assets"))
    def publish_assets(ti=None, outlet_events=None) -> list[dict]:
        return assets.publish_run(ti, outlet_events)

    @task(pre_execute=assets.lineage("unlock_batch"))
    def unlock_batch(checked: dict, run_id=None) -> bool:
        run = tasks.Run.from_xcom(checked)
        return tasks.unlock_batch(run.settings, tasks.lake_client(run.settings), run.batch, owner=run_id)

    checked = check_gdpr()
    lock, listed = lock_batch(checked), list_landing(checked)
    plan = plan_jobs(checked, listed)
    if TARGET == "emr":
        aws = {"aws_conn_id": plan["aws_conn_id"], "region_name": plan["region"]}
        create = EmrCreateJobFlowOperator(
            task_id="create_cluster", emr_conn_id=None, job_flow_overrides=plan["job_flow"], **aws
        )
        work = [create]
        for job in steps.JOB_KINDS:  # each kind's steps in one call; the sensor waits for its last one
            add = EmrAddStepsOperator(
                task_id=f"add_{job}_step",
                job_flow_id=create.output,
                steps=plan[f"{job}_steps"],
                retries=0,
                pre_execute=assets.lineage(job),
                **aws,
            )
            # A failure shows EMR's reason and the step's stderr tail; killing the task cancels the step.
            wait = ExplainedEmrStepSensor(
                task_id=f"wait_{job}",
                job_flow_id=create.output,
                retries=0,
                step_id=f"{{{{ ti.xcom_pull(task_ids='add_{job}_step')[-1] }}}}",
                deferrable=True,
                poke_interval=POKE.total_seconds(),
                max_attempts=int(STEP_TIMEOUT / POKE),
                timeout=STEP_TIMEOUT,
                **aws,
            )
            work += [add, wait]
        # Skipped when no cluster was asked for; not run when RunJobFlow failed (no cluster to end). Not
        # on_failure_fail_dagrun: that would make it the run's leaf and hide a failed step behind its success.
        teardown = [
            EmrTerminateJobFlowOperator(task_id="terminate_cluster", job_flow_id=create.output, **aws).as_teardown(
                setups=create
            )
        ]
    else:
        work = [
            run_local_jobs.override(task_id=job, pre_execute=assets.lineage(job))(plan[f"{job}_commands"], job)
            for job in steps.JOB_KINDS
        ]
        teardown = []

    chain(
        checked,
        lock,
        listed,
        sweep_expired_batches(checked),
        plan,
        stop_if_nothing_to_do(plan["run_jobs"]),
        NewBasisApproval(task_id="approve_new_basis", retries=0),  # asks only when fruits_basis_approval=required
        *work,
        *teardown,
        report_cost(checked).as_teardown(setups=lock),
        publish_assets().as_teardown(setups=lock),
        remove_originals(checked).as_teardown(setups=lock),  # after the report: its page draws from them
        unlock_batch(checked).as_teardown(setups=lock),
    )
