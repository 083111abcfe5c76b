"""Fruits! nightly pipeline: new photos -> MobileNetV2 features -> PCA, one batch per logical date.

check_gdpr -> upload_new_images -> plan_jobs -> stop_if_nothing_to_do (a dry run, or a batch with no
photo: the run ends there, successful, with no cluster) -> create_cluster -> featurize step
-> sensor -> PCA step -> sensor -> terminate_cluster (ALL_DONE) -> report_cost (ALL_DONE)
-> fail_if_anything_failed (fails the run when anything upstream failed).
Target (env FRUITS_TARGET, read at parse time because it changes the graph; default "emr"):
"emr" = transient EMR cluster; "local" = the same jobs through a local spark-submit, lake in a folder.
Settings: Airflow Variables `fruits_*` (fruits.settings), AWS credentials: the `aws_default` connection.
PCA: each run refits on every batch up to its own (Param pca_mode=project reuses a saved model).
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
from fruits import pipeline_tasks as tasks
from fruits.settings import PipelineSettings
from fruits.step_failures import ExplainedEmrStepSensor

TARGET = os.environ.get("FRUITS_TARGET", "emr")
if TARGET not in tasks.TARGETS:
    raise ValueError(f"FRUITS_TARGET must be one of {tasks.TARGETS}, not {TARGET!r}")
STEP_TIMEOUT = timedelta(hours=3)  # a featurize of a whole night's photos takes well under an hour
POKE = timedelta(minutes=1)


with DAG(
    dag_id="fruits_pipeline",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="Europe/Paris"),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Paris"),
    catchup=False,  # past dates run as explicit backfills
    max_active_runs=1,  # one cluster at a time; a PCA refit sees every earlier batch
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
            settings = tasks.resolve_settings(Variable.get, params, TARGET)
            tasks.guard(settings, lambda: tasks.s3_client(settings))  # raises before any other AWS call
        return {"settings": settings.as_dict(), "batch": tasks.run_batch(params, ds)}

    @task
    def upload_new_images(checked: dict, params=None) -> dict:
        settings = PipelineSettings(**checked["settings"])
        s3 = tasks.s3_client(settings) if TARGET == "emr" or tasks.is_s3(settings.landing) else None
        return tasks.upload_batch(settings, s3, checked["batch"], dry_run=params["dry_run"])

    @task(multiple_outputs=True)
    def plan_jobs(checked: dict, uploaded: dict, params=None, run_id=None) -> dict:
        settings = PipelineSettings(**checked["settings"])
        existing = tasks.feature_batches(settings, tasks.s3_client(settings) if TARGET == "emr" else None)
        with tasks.config_errors_fail_now():
            plan = tasks.plan_jobs(settings, params, checked["batch"], uploaded["code"], existing,
                                   run_name=f"fruits-{checked['batch']}-{run_id}"[:256])
        images = uploaded["images"]["images_in_batch"]
        return {**plan, "images_in_batch": images, "estimate": tasks.estimate_cost(settings, params, images, images)}

    @task.short_circuit(retries=0)  # skips everything after it, teardown and report included
    def stop_if_nothing_to_do(images_in_batch: int, batch: str, params=None) -> bool:
        return tasks.has_work(dry_run=params["dry_run"], images_in_batch=images_in_batch, batch=batch)

    checked = check_gdpr()
    plan = plan_jobs(checked, upload_new_images(checked))
    start = [plan, stop_if_nothing_to_do(plan["images_in_batch"], plan["batch"])]

    if TARGET == "emr":
        aws = {"aws_conn_id": plan["aws_conn_id"], "region_name": plan["region"]}
        create = EmrCreateJobFlowOperator(task_id="create_cluster", emr_conn_id=None,
                                          job_flow_overrides=plan["job_flow"], **aws)
        work = [create]
        for job in ("featurize", "pca"):
            add = EmrAddStepsOperator(task_id=f"add_{job}_step", job_flow_id=create.output,
                                      steps=plan[f"{job}_steps"], retries=0, **aws)
            # A failure shows EMR's reason and the step's stderr tail; killing the task cancels the step.
            wait = ExplainedEmrStepSensor(task_id=f"wait_{job}", job_flow_id=create.output, retries=0,
                                 step_id=f"{{{{ ti.xcom_pull(task_ids='add_{job}_step')[0] }}}}",
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
        def run_local_job(command: list[str], name: str) -> None:
            from fruits import local_target

            local_target.run(command, name=name)

        featurize = run_local_job.override(task_id="featurize")(plan["featurize_command"], "featurize")
        work = [featurize, run_local_job.override(task_id="pca")(plan["pca_command"], "pca")]
        teardown = []

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report_cost(ti=None) -> dict:  # what the run cost and how fast it went, failed runs included
        return tasks.report_cost(ti.xcom_pull(task_ids="check_gdpr"), ti.xcom_pull(task_ids="create_cluster"),
                                 ti.xcom_pull(task_ids="plan_jobs", key="estimate"))

    chain(checked, *start, *work, *teardown, report_cost())

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def fail_if_anything_failed() -> None:
        # The teardown succeeding must not turn a failed run green.
        tasks.fail_run()

    final = fail_if_anything_failed().operator
    [t for t in dag.tasks if t is not final] >> final
