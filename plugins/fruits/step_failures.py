"""A failed EMR step explained where people look (the Airflow task log), and a killed task's step cancelled.

`explain_step(emr, s3, cluster_id, step_id, region=...)` returns the text the task log shows when a step
ends in FAILED / CANCELLED / INTERRUPTED: EMR's FailureDetails (reason, message, log file), the state
change reason, the last lines of the step's stderr read from the cluster's log URI
(`<log_uri>/<cluster>/steps/<step>/stderr.gz`, or FailureDetails' LogFile when it names one), and console
links to the cluster and the step. EMR pushes step logs to S3 every few minutes: when the stderr is not
there yet, the text says so and names the URI to read later.

`ExplainedEmrStepSensor` is the amazon provider's EmrStepSensor (9.39) with that explanation in the
exception of both paths (poke, and the deferrable trigger's failure event, which the provider reports as
a bare "Error while running job"), and with the step cancelled (CancelSteps) when the task is killed:
`on_kill` on the worker, `CancellingEmrStepTrigger.on_kill` in the triggerer (Airflow 3.3 calls it only
when a user marks the deferred task failed/success or clears it, never on a triggerer restart).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

FAILED_STATES = ("FAILED", "CANCELLED", "INTERRUPTED")
ACTIVE_STATES = ("PENDING", "CANCEL_PENDING", "RUNNING")
STDERR_TAIL_LINES = 60
# A step's stderr is streamed and decompressed, only the tail kept: bounded memory whatever its size.
CHUNK_BYTES = 1 << 20


def cluster_console_url(region: str, cluster_id: str) -> str:
    return f"https://{region}.console.aws.amazon.com/emr/home?region={region}#/clusterDetails/{cluster_id}"


def step_console_url(region: str, cluster_id: str, step_id: str) -> str:
    return cluster_console_url(region, cluster_id) + f"/steps/{step_id}"


def stderr_uri(log_uri: str, cluster_id: str, step_id: str) -> str:
    """EMR's layout of step logs under the cluster's LogUri (EMR answers it as s3n://...)."""
    bucket, prefix = _s3_location(log_uri)
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    return f"s3://{bucket}/{prefix}{cluster_id}/steps/{step_id}/stderr.gz"


def _s3_location(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3n", "s3a") or not parsed.netloc:
        raise ValueError(f"not an S3 URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def tail_of_log(s3: Any, uri: str, lines: int = STDERR_TAIL_LINES) -> list[str] | None:
    """The last `lines` lines of a (gzip or plain) log object; None when the object is not there yet."""
    bucket, key = _s3_location(uri)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except s3.exceptions.NoSuchKey:
        return None
    tail: deque[bytes] = deque(maxlen=lines)
    pending = b""

    def take(data: bytes) -> None:
        nonlocal pending
        *complete, pending = (pending + data).split(b"\n")
        tail.extend(complete)

    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS) if key.endswith(".gz") else None
    while chunk := body.read(CHUNK_BYTES):
        if decompressor is None:
            take(chunk)
            continue
        # Bounded output per call: a log line repeated a million times compresses several hundredfold.
        while chunk:
            take(decompressor.decompress(chunk, CHUNK_BYTES))
            chunk = decompressor.unconsumed_tail
    if pending:
        tail.append(pending)
    return [line.decode("utf-8", "replace") for line in tail]


def explain_step(
    emr: Any,
    s3: Any,
    cluster_id: str,
    step_id: str,
    *,
    region: str,
    tail_lines: int = STDERR_TAIL_LINES,
    status: dict[str, Any] | None = None,
) -> str:
    """What went wrong with a step, for the task log (never raises: an explanation is best effort).
    `status`: the step's DescribeStep Status when the caller has it already."""
    lines = [f"EMR step {step_id} on cluster {cluster_id}"]
    try:
        status = status or emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]
        lines[0] += f" ended {status.get('State')}"
        details = status.get("FailureDetails") or {}
        if details:
            lines += [
                f"  reason:   {details.get('Reason')}",
                f"  message:  {details.get('Message')}",
                f"  log file: {details.get('LogFile')}",
            ]
        if (status.get("StateChangeReason") or {}).get("Message"):
            lines.append(f"  state change: {status['StateChangeReason']['Message']}")
        log_uri = emr.describe_cluster(ClusterId=cluster_id)["Cluster"].get("LogUri")
        logfile = details.get("LogFile") or ""
        candidates = [logfile] if logfile.rstrip("/").endswith(("stderr.gz", "stderr")) else []
        if log_uri:
            candidates.append(stderr_uri(log_uri, cluster_id, step_id))
        for uri in dict.fromkeys(candidates):
            tail = tail_of_log(s3, uri.replace("s3n://", "s3://"), tail_lines)
            if tail is None:
                lines.append(f"  stderr not pushed yet (EMR uploads step logs every ~5 min): {uri}")
                continue
            lines.append(f"  last {len(tail)} lines of {uri}:")
            lines += [f"    | {line}" for line in tail]
            break
        if not candidates:
            lines.append("  the cluster has no LogUri: no step logs to show")
    except Exception as error:  # noqa: BLE001 - the explanation must never hide the failure it explains
        lines.append(f"  (could not read everything: {type(error).__name__}: {error})")
    lines += [
        f"  cluster: {cluster_console_url(region, cluster_id)}",
        f"  step:    {step_console_url(region, cluster_id, step_id)}",
    ]
    return "\n".join(lines)


def cancel_step_if_active(emr: Any, cluster_id: str, step_id: str) -> bool:
    """CancelSteps for a step still pending or running (SIGINT to spark-submit); True when asked."""
    state = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]["State"]
    if state not in ACTIVE_STATES:
        log.info("step %s is %s: nothing to cancel", step_id, state)
        return False
    answer = emr.cancel_steps(ClusterId=cluster_id, StepIds=[step_id], StepCancellationOption="SEND_INTERRUPT")
    log.warning(
        "task killed: cancelled step %s on %s (%s): %s", step_id, cluster_id, state, answer.get("CancelStepsInfoList")
    )
    return True


# ---------------------------------------------------------------------------------- Airflow classes
# Imported lazily by the DAG; everything above is plain Python.

from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor  # noqa: E402
from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger  # noqa: E402
from airflow.providers.amazon.aws.utils import validate_execute_complete_event  # noqa: E402


class CancellingEmrStepTrigger(EmrStepSensorTrigger):
    """The provider's step trigger; a user killing the deferred task cancels the step."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__name__}", kwargs

    async def on_kill(self) -> None:
        args = self.waiter_args
        await asyncio.to_thread(cancel_step_if_active, self.hook().conn, args["ClusterId"], args["StepId"])


class ExplainedEmrStepSensor(EmrStepSensor):
    """EmrStepSensor whose failure says why (FailureDetails, stderr tail, links) and whose kill cancels."""

    def explain(self, status: dict[str, Any] | None = None) -> str:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).get_conn()
        return explain_step(
            self.hook.conn,
            s3,
            self.job_flow_id,
            self.step_id,
            region=self.region_name or self.hook.conn_region_name,
            status=status,
        )

    def _fail(self, summary: str, status: dict[str, Any] | None = None) -> None:
        from airflow.sdk.exceptions import AirflowException

        explanation = self.explain(status)
        self.log.error("%s\n%s", summary, explanation)
        raise AirflowException(f"{summary}\n{explanation}")

    def poke(self, context: Any) -> bool:
        response = self.get_emr_response(context=context)
        state = self.state_from_response(response)
        if state in self.failed_states:
            self._fail(f"EMR step {self.step_id} {state}", response["Step"]["Status"])
        self.log.info("step %s: %s", self.step_id, state)
        return state in self.target_states

    def execute(self, context: Any) -> None:
        if not self.deferrable:
            return super().execute(context=context)
        if not self.poke(context):
            from datetime import timedelta

            self.defer(
                timeout=timedelta(seconds=self.max_attempts * self.poke_interval),
                trigger=CancellingEmrStepTrigger(
                    job_flow_id=self.job_flow_id,
                    step_id=self.step_id,
                    waiter_delay=int(self.poke_interval),
                    waiter_max_attempts=self.max_attempts,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
            )
        return None

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        validated = validate_execute_complete_event(event)
        if validated["status"] != "success":
            self._fail(f"EMR step {self.step_id} did not complete: {validated.get('message', validated)}")
        self.log.info("step %s completed", self.step_id)

    def on_kill(self) -> None:
        cancel_step_if_active(self.hook.conn, self.job_flow_id, self.step_id)
