"""Fruits! nightly pipeline: new photos -> MobileNetV2 features -> PCA, one batch per logical date.

check_gdpr (Params checked too) -> lock_batch -> upload_new_images -> plan_jobs (catch-up of failed
nights, PCA window, estimate) -> stop_if_nothing_to_do (a dry run, or nothing to featurize: no cluster)
-> create_cluster -> featurize steps -> sensor -> PCA nightly steps -> sensor -> reexpress step -> sensor
-> terminate_cluster (ALL_DONE) -> report_cost (ALL_DONE) -> unlock_batch (ALL_DONE)
-> fail_if_anything_failed (fails the run when anything upstream failed).
Target (env FRUITS_TARGET, read at parse time because it changes the graph; default "emr"):
"emr" = transient EMR cluster; "local" = the same jobs through a local spark-submit, lake in a folder.
Settings: Airflow Variables `fruits_*` (fruits.settings), AWS credentials: the `aws_default` connection.
PCA: each night projects on the current versioned basis (pca_mode=auto); drift or pca_mode=refit fits a
new one from the retained batches' statistics, and the reexpress step puts them on it.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.sdk import (
    DAG,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    Variable,
    chain,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException
from fruits import assets
from fruits import pipeline_tasks as tasks
from fruits import steps
from fruits.settings import PipelineSettings
from fruits.step_failures import ExplainedEmrStepSensor

TARGET = os.environ.get("FRUITS_TARGET", "emr")
if TARGET not in tasks.TARGETS:
    raise ValueError(f"FRUITS_TARGET must be one of {tasks.TARGETS}, not {TARGET!r}")
STEP_TIMEOUT = timedelta(hours=3)  # per job kind: a featurize of a whole night's photos takes well under an hour
POKE = timedelta(minutes=1)


with DAG(
    dag_id="fruits_pipeline",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="Europe/Paris"),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Paris"),
    catchup=False,  # past dates run as explicit backfills
    max_active_runs=1,  # one cluster at a time; the basis changes in date order
    params={name: Param(**spec) for name, spec in tasks.param_specs(TARGET).items()},
    # Retries cover transient AWS errors; a local failure is deterministic, retrying only delays it.
    default_args={"owner": "fruits-data", "retries": 2 if TARGET == "emr" else 0,
                  "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True},
    tags=["fruits", TARGET],
    doc_md=__doc__,
) as dag:

    @task
    def check_gdpr(params=None, ds=None) -> dict:
        with tasks.config_errors_fail_now():
            batch = tasks.run_batch(params, ds)
            settings = tasks.resolve_settings(Variable.get, params, TARGET)
            tasks.check_params(settings, params)
            tasks.guard(settings, lambda: tasks.s3_client(settings))  # raises before any other AWS call
        return {"settings": settings.as_dict(), "batch": batch}

    def _clients(settings: PipelineSettings):
        return tasks.s3_client(settings) if TARGET == "emr" or tasks.is_s3(settings.landing) else None

    # Held by another run or an erasure: fails at once naming the holder; AWS hiccups are retried.
    @task(pre_execute=assets.lineage("lock_batch"))
    def lock_batch(checked: dict, run_id=None) -> dict:
        settings = PipelineSettings(**checked["settings"])
        with tasks.config_errors_fail_now():
            return tasks.lock_batch(settings, _clients(settings), checked["batch"], owner=run_id)

    @task(pre_execute=assets.lineage("upload_new_images"))
    def upload_new_images(checked: dict, params=None) -> dict:
        settings = PipelineSettings(**checked["settings"])
        return tasks.upload_batch(settings, _clients(settings), checked["batch"], dry_run=params["dry_run"],
                                  explicit_landing=tasks.explicit_landing(params))

    @task(multiple_outputs=True, pre_execute=assets.lineage("plan_jobs"))
    def plan_jobs(checked: dict, uploaded: dict, params=None, run_id=None) -> dict:
        settings, batch = PipelineSettings(**checked["settings"]), checked["batch"]
        lake_store = tasks.open_lake(settings, _clients(settings))
        work = tasks.reconcile(lake_store, tasks.lake_root(settings), batch, retention_days=settings.retention_days,
                               images_in_batch=uploaded["images"]["images_in_batch"])
        with tasks.config_errors_fail_now():
            plan = tasks.plan_jobs(settings, params, batch, uploaded["code"], work,
                                   run_name=f"fruits-{batch}-{run_id}"[:256])
        return {**plan, "estimate": tasks.estimate_cost(settings, params, work),
                "run_jobs": tasks.has_work(dry_run=params["dry_run"], work=work, batch=batch)}

    # Skips only its direct downstream: the ALL_DONE tasks after it still run (and skip themselves when
    # nothing ran), so unlock_batch releases the lock of a dry run or an empty night too.
    @task.short_circuit(retries=0, ignore_downstream_trigger_rules=False)
    def stop_if_nothing_to_do(run_jobs: bool) -> bool:
        return run_jobs

    checked = check_gdpr()
    uploaded = upload_new_images(checked)
    plan = plan_jobs(checked, uploaded)
    start = [lock_batch(checked), uploaded, plan, stop_if_nothing_to_do(plan["run_jobs"])]

    if TARGET == "emr":
        aws = {"aws_conn_id": plan["aws_conn_id"], "region_name": plan["region"]}
        create = EmrCreateJobFlowOperator(task_id="create_cluster", emr_conn_id=None,
                                          job_flow_overrides=plan["job_flow"], **aws)
        work = [create]
        for job in steps.JOB_KINDS:  # each kind's steps in one call; the sensor waits for its last one
            add = EmrAddStepsOperator(task_id=f"add_{job}_step", job_flow_id=create.output,
                                      steps=plan[f"{job}_steps"], retries=0, pre_execute=assets.lineage(job), **aws)
            # A failure shows EMR's reason and the step's stderr tail; killing the task cancels the step.
            wait = ExplainedEmrStepSensor(task_id=f"wait_{job}", job_flow_id=create.output, retries=0,
                                 step_id=f"{{{{ ti.xcom_pull(task_ids='add_{job}_step')[-1] }}}}",
                                 deferrable=True, poke_interval=POKE.total_seconds(),
                                 max_attempts=int(STEP_TIMEOUT / POKE), timeout=STEP_TIMEOUT, **aws)
            work += [add, wait]
        # Teardown: runs whatever happened upstream, so no run leaves a cluster billing; skipped only
        # when no cluster exists (the create operator itself terminates one it made and then failed).
        teardown = [EmrTerminateJobFlowOperator(
            task_id="terminate_cluster", trigger_rule=TriggerRule.ALL_DONE, pre_execute=tasks.skip_without_cluster,
            job_flow_id=tasks.pulled("create_cluster"), aws_conn_id=tasks.pulled("plan_jobs", "aws_conn_id"),
            region_name=tasks.pulled("plan_jobs", "region"))]
        create >> teardown
    else:
        @task(retries=0)
        def run_local_jobs(commands: list[list[str]], name: str) -> None:
            from fruits import local_target

            for command in commands:  # in the planned order, the first failure stops the rest
                local_target.run(command, name=name)

        work = [run_local_jobs.override(task_id=job, pre_execute=assets.lineage(job))(plan[f"{job}_commands"], job)
                for job in steps.JOB_KINDS]
        teardown = []

    @task(trigger_rule=TriggerRule.ALL_DONE, pre_execute=assets.lineage("report_cost"))
    def report_cost(ti=None) -> dict:  # what the run cost and how fast it went, failed runs included
        return tasks.report_cost(ti.xcom_pull(task_ids="check_gdpr"), ti.xcom_pull(task_ids="create_cluster"),
                                 ti.xcom_pull(task_ids="plan_jobs", key="estimate"),
                                 ti.xcom_pull(task_ids="plan_jobs", key="work"),
                                 bool(ti.xcom_pull(task_ids="plan_jobs", key="run_jobs")))

    @task(trigger_rule=TriggerRule.ALL_DONE, pre_execute=assets.lineage("unlock_batch"))
    def unlock_batch(ti=None, run_id=None) -> bool:  # after the teardown, whatever happened
        checked = ti.xcom_pull(task_ids="check_gdpr")
        if not checked:
            raise AirflowSkipException("the run stopped before taking the lock")
        settings = PipelineSettings(**checked["settings"])
        return tasks.unlock_batch(settings, _clients(settings), checked["batch"], owner=run_id)

    reported = report_cost()
    chain(checked, *start, *work, *teardown, reported, unlock_batch())

    # The run's committed outputs as asset events (fruits.assets): after the report, which reads the same
    # markers; ALL_DONE, so what a failed run did commit is announced too.
    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=list(assets.aliases().values()),
          pre_execute=assets.lineage("publish_assets"))
    def publish_assets(ti=None, outlet_events=None) -> list[dict]:
        return assets.publish_run(ti, outlet_events)

    reported >> publish_assets()

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def fail_if_anything_failed() -> None:
        # The teardown succeeding must not turn a failed run green.
        tasks.fail_run()

    final = fail_if_anything_failed().operator
    [t for t in dag.tasks if t is not final] >> final
