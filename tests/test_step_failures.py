"""fruits.step_failures: a failed step's reason, stderr tail and links reach the Airflow task log, on the poke
path and on the deferrable trigger's failure event; a killed task cancels its step.

moto never runs a step and has neither FailureDetails nor CancelSteps: the test drives the step's state in
moto's backend and adds the FailureDetails EMR would return (`_fail_step`), writes the step's stderr.gz
itself where EMR's log pusher would, and checks CancelSteps on botocore's Stubber (the real API model
validates the request)."""

from __future__ import annotations

import asyncio
import gzip
from unittest import mock

import boto3
import pytest
from airflow.sdk.exceptions import AirflowException
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import Step, emr_backends

from fruits import lake
from fruits.emr_cluster import ClusterSizing, build_job_flow
from fruits.settings import PipelineSettings
from fruits.step_failures import (
    CancellingEmrStepTrigger,
    ExplainedEmrStepSensor,
    cancel_step_if_active,
    explain_step,
    stderr_uri,
)

REGION = "eu-west-3"
BUCKET = "fruits-lake-steps"
STDERR = [f"26/12/01 02:{i:02d}:00 INFO progress line {i}" for i in range(200)] + [
    "Traceback (most recent call last):",
    '  File "featurize.py", line 412, in main',
    "PermissionError: s3://fruits-lake-steps/quarantine/batch=2026-12-01/_committed.json: 403 AccessDenied",
]


@pytest.fixture
def cluster(monkeypatch):
    """A moto cluster from the project's own request, with one step; yields (emr, s3, cluster id, step id)."""
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        emr = boto3.client("emr", region_name=REGION)
        request = build_job_flow(
            PipelineSettings(bucket=BUCKET),
            name="fruits-test",
            code_uri=lake.code_uri(f"s3://{BUCKET}", "v1"),
            sizing=ClusterSizing(),
        )
        cluster_id = emr.run_job_flow(**request)["JobFlowId"]
        (step_id,) = emr.add_job_flow_steps(
            JobFlowId=cluster_id,
            Steps=[
                {
                    "Name": "featurize",
                    "ActionOnFailure": "CONTINUE",
                    "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "featurize.py"]},
                }
            ],
        )["StepIds"]
        original = Step.status.fget
        monkeypatch.setattr(
            Step,
            "status",
            property(
                lambda self: {
                    **original(self),
                    **({"FailureDetails": self.failure} if hasattr(self, "failure") else {}),
                }
            ),
        )
        yield emr, s3, cluster_id, step_id


def _step(cluster_id: str, step_id: str) -> Step:
    backend = emr_backends[DEFAULT_ACCOUNT_ID][REGION]
    return next(s for s in backend.clusters[cluster_id].steps if s.id == step_id)


def _fail_step(cluster_id: str, step_id: str, *, log_file: str | None = None) -> None:
    step = _step(cluster_id, step_id)
    step.state = "FAILED"
    step.failure = {
        "Reason": "Unknown Error.",
        "Message": "PermissionError: 403 AccessDenied",
        **({"LogFile": log_file} if log_file else {}),
    }


def _push_stderr(s3, cluster_id: str, step_id: str) -> str:
    uri = stderr_uri(lake.logs_uri(f"s3://{BUCKET}"), cluster_id, step_id)
    key = uri.removeprefix(f"s3://{BUCKET}/")
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress("\n".join(STDERR).encode() + b"\n"))
    return uri


def test_the_explanation_has_the_reason_the_stderr_tail_and_links(cluster):
    emr, s3, cluster_id, step_id = cluster
    _fail_step(cluster_id, step_id)
    uri = _push_stderr(s3, cluster_id, step_id)
    assert uri == f"s3://{BUCKET}/logs/emr/{cluster_id}/steps/{step_id}/stderr.gz"
    text = explain_step(emr, s3, cluster_id, step_id, region=REGION, tail_lines=10)
    assert f"EMR step {step_id} on cluster {cluster_id} ended FAILED" in text
    assert "reason:   Unknown Error." in text and "message:  PermissionError: 403 AccessDenied" in text
    assert f"last 10 lines of {uri}" in text
    assert "    | PermissionError: s3://fruits-lake-steps/quarantine/" in text  # the real error, from the tail
    assert "progress line 192" not in text and "progress line 193" in text  # exactly the last 10 lines
    assert f"https://{REGION}.console.aws.amazon.com/emr/home?region={REGION}#/clusterDetails/{cluster_id}" in text
    assert f"#/clusterDetails/{cluster_id}/steps/{step_id}" in text


def test_a_log_not_pushed_yet_is_named_and_failure_details_log_file_is_preferred(cluster):
    emr, s3, cluster_id, step_id = cluster
    _fail_step(cluster_id, step_id, log_file=f"s3n://{BUCKET}/logs/emr/{cluster_id}/steps/{step_id}/stderr.gz")
    text = explain_step(emr, s3, cluster_id, step_id, region=REGION)
    assert "stderr not pushed yet" in text and f"steps/{step_id}/stderr.gz" in text
    _push_stderr(s3, cluster_id, step_id)
    text = explain_step(emr, s3, cluster_id, step_id, region=REGION)
    assert f"of s3n://{BUCKET}/logs/emr/{cluster_id}/steps/{step_id}/stderr.gz" in text


def test_the_explanation_never_raises(cluster):
    emr, s3, cluster_id, _ = cluster
    text = explain_step(emr, s3, cluster_id, "s-DOESNOTEXIST", region=REGION)
    assert "could not read everything" in text and "clusterDetails" in text


def _sensor(cluster_id: str, step_id: str, **kwargs) -> ExplainedEmrStepSensor:
    return ExplainedEmrStepSensor(
        task_id="wait_featurize",
        job_flow_id=cluster_id,
        step_id=step_id,
        aws_conn_id=None,
        region_name=REGION,
        **kwargs,
    )


def test_the_sensor_fails_with_the_explanation_on_poke(cluster):
    _, s3, cluster_id, step_id = cluster
    sensor = _sensor(cluster_id, step_id)
    _step(cluster_id, step_id).state = "RUNNING"
    assert sensor.poke({"ti": mock.MagicMock()}) is False
    _fail_step(cluster_id, step_id)
    _push_stderr(s3, cluster_id, step_id)
    with pytest.raises(AirflowException, match="PermissionError") as error:
        sensor.poke({"ti": mock.MagicMock()})
    assert "reason:   Unknown Error." in str(error.value) and "clusterDetails" in str(error.value)
    _step(cluster_id, step_id).state = "COMPLETED"
    assert sensor.poke({"ti": mock.MagicMock()}) is True


def test_the_deferred_sensor_explains_the_triggers_failure_event(cluster):
    _, s3, cluster_id, step_id = cluster
    sensor = _sensor(cluster_id, step_id, deferrable=True)
    _fail_step(cluster_id, step_id)
    _push_stderr(s3, cluster_id, step_id)
    event = {"status": "error", "message": f"Error while waiting for step {step_id} to complete"}
    with pytest.raises(AirflowException, match=r"(?s)did not complete.*PermissionError: s3://"):
        sensor.execute_complete({}, event)
    sensor.execute_complete({}, {"status": "success"})  # no raise


def test_deferring_uses_the_cancelling_trigger(cluster):
    _, _, cluster_id, step_id = cluster
    _step(cluster_id, step_id).state = "RUNNING"
    sensor = _sensor(cluster_id, step_id, deferrable=True)
    with mock.patch.object(sensor, "defer") as defer:
        sensor.execute({"ti": mock.MagicMock()})
    trigger = defer.call_args.kwargs["trigger"]
    assert isinstance(trigger, CancellingEmrStepTrigger)
    path, kwargs = trigger.serialize()
    assert path == "fruits.step_failures.CancellingEmrStepTrigger"
    assert (kwargs["job_flow_id"], kwargs["step_id"]) == (cluster_id, step_id)


def _stubbed_emr(state: str, cancel: bool):
    emr = boto3.client("emr", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(emr)
    stubber.add_response(
        "describe_step", {"Step": {"Id": "s-1", "Status": {"State": state}}}, {"ClusterId": "j-1", "StepId": "s-1"}
    )
    if cancel:
        stubber.add_response(
            "cancel_steps",
            {"CancelStepsInfoList": [{"StepId": "s-1", "Status": "SUBMITTED"}]},
            {"ClusterId": "j-1", "StepIds": ["s-1"], "StepCancellationOption": "SEND_INTERRUPT"},
        )
    stubber.activate()
    return emr, stubber


@pytest.mark.parametrize(
    "state, cancels", [("RUNNING", True), ("PENDING", True), ("COMPLETED", False), ("FAILED", False)]
)
def test_a_killed_task_cancels_its_active_step_on_the_worker_and_in_the_triggerer(state, cancels):
    emr, stubber = _stubbed_emr(state, cancels)
    assert cancel_step_if_active(emr, "j-1", "s-1") is cancels
    stubber.assert_no_pending_responses()

    emr, stubber = _stubbed_emr(state, cancels)  # the worker: the sensor's on_kill
    sensor = _sensor("j-1", "s-1")
    sensor.__dict__["hook"] = mock.Mock(conn=emr)
    sensor.on_kill()
    stubber.assert_no_pending_responses()

    emr, stubber = _stubbed_emr(state, cancels)  # the triggerer: the deferred task killed by a user
    trigger = CancellingEmrStepTrigger(job_flow_id="j-1", step_id="s-1", aws_conn_id=None, region_name=REGION)
    with mock.patch.object(CancellingEmrStepTrigger, "hook", return_value=mock.Mock(conn=emr)):
        asyncio.run(trigger.on_kill())
    stubber.assert_no_pending_responses()


def test_the_tail_of_a_large_compressible_log_is_exact_and_read_in_bounded_pieces(monkeypatch):
    """A step's stderr can be hundreds of MiB of one repeated line: decompressed in bounded pieces (else one
    1 MiB read of gzip expands to ~300 MiB at once), lines cut across pieces rejoined."""
    import io

    from fruits import step_failures

    monkeypatch.setattr(step_failures, "CHUNK_BYTES", 4096)
    text = b"".join(b"INFO the same line, again and again\n" for _ in range(200_000))
    text += b"".join(f"last line {i}\n".encode() for i in range(5)) + b"no newline at the end"
    sizes = []

    class Body(io.BytesIO):
        pass

    class S3:
        exceptions = type("E", (), {"NoSuchKey": KeyError})

        def get_object(self, Bucket, Key):
            return {"Body": Body(gzip.compress(text))}

    original = step_failures.zlib.decompressobj

    def watched(*args):
        inner = original(*args)

        class Watched:
            def decompress(self, data, max_length=0):
                out = inner.decompress(data, max_length)
                sizes.append(len(out))
                return out

            @property
            def unconsumed_tail(self):
                return inner.unconsumed_tail

        return Watched()

    monkeypatch.setattr(step_failures.zlib, "decompressobj", watched)
    tail = step_failures.tail_of_log(S3(), "s3://b/logs/emr/j-1/steps/s-1/stderr.gz", 6)
    assert tail == [f"last line {i}" for i in range(5)] + ["no newline at the end"]
    assert max(sizes) <= 4096 and sum(sizes) == len(text)
