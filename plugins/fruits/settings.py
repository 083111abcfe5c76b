"""The pipeline's configuration, in one place.

Every setting is an Airflow Variable named `fruits_<field>` (so `AIRFLOW_VAR_FRUITS_<FIELD>` in the
environment works too, Airflow's own mechanism); anything unset takes the default below. The
one-time foundation stack (infra/) outputs exactly these values. AWS credentials never appear
here: they come from the `aws_default` connection (or the instance role).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from lakefiles import LANDING_AFTER

from fruits import lake
from fruits.gdpr import EU_MEMBER_STATE_REGIONS

TARGETS = ("emr", "local")  # where the jobs run: a transient EMR cluster, or this machine

VARIABLE_PREFIX = "fruits_"
# "emr": transient EMR cluster on AWS; "local": the same jobs through a local spark-submit.
TARGETS = ("emr", "local")
# The target changes the DAG's graph, so it is read where the DAG is parsed, from this variable only.
TARGET_ENVIRONMENT_VARIABLE = "FRUITS_TARGET"


def target_from_environment(environ: Any = None) -> str:
    """The deployment's target: env FRUITS_TARGET (default "emr"); anything else is refused."""
    target = (os.environ if environ is None else environ).get(TARGET_ENVIRONMENT_VARIABLE, "emr")
    if target not in TARGETS:
        raise ValueError(f"{TARGET_ENVIRONMENT_VARIABLE} must be one of {TARGETS}, not {target!r}")
    return target


@dataclass(frozen=True)
class PipelineSettings:
    # One of TARGETS, from target_from_environment() (never a Variable: see load_settings).
    target: str = "emr"
    # Paris: the company is French, and the region is inside the EU.
    region: str = "eu-west-3"
    bucket: str = "fruits-lake-eu-west-3"
    aws_conn_id: str = "aws_default"
    emr_release: str = "emr-7.13.0"
    service_role: str = "fruits-emr-service-role"
    instance_profile: str = "fruits-emr-ec2-instance-profile"
    security_configuration: str = "fruits-emr-security"
    kms_key_arn: str = ""
    # Empty: s3://<bucket>/logs/emr/ (see log_uri_or_default).
    log_uri: str = ""
    # Where new photos arrive: a local folder or an s3:// prefix (EU bucket).
    landing: str = ""
    # Root of the lake for the local target (relative paths are resolved from the repository).
    local_lake: str = "lake"
    # Comma-separated allow-list; defaults to the EU member-state regions.
    allowed_regions: str = ",".join(EU_MEMBER_STATE_REGIONS)
    # Comma-separated subnet ids for the EMR cluster: the foundation's output SubnetIds (private subnets of
    # vpc_id tagged for EMR, reaching S3 and KMS through its endpoints: no NAT). Several subnets let EMR
    # pick the AZ with spot capacity. The EMR target refuses an empty value (fruits.preflight).
    subnet_ids: str = ""
    # The VPC those subnets must belong to: the foundation's output VpcId (its endpoints live there).
    vpc_id: str = ""
    # The lake's account id: every S3 call passes it as ExpectedBucketOwner (a bucket of the same
    # name in another account is refused). Empty: not checked (local target, tests).
    bucket_owner: str = ""
    # Value of the cluster tag `fruits-pipeline` the Airflow role's EMR rights are conditioned on
    # (the foundation stack's Prefix).
    pipeline_tag: str = "fruits"
    # Days a batch is kept (the foundation's ImageRetentionDays): the batches a run catches up,
    # re-expresses on a new basis and fits a refit on are those of the last retention_days days.
    retention_days: int = 365
    # The most batches one night's retention sweep may delete (raise it for a longer catch-up): a night sweeps
    # one, a week of missed nights catches up alone, a retention_days typo (365 -> 36) is stopped.
    retention_max_batches: int = 7
    # Days a photo's stripped original (raw/) is kept once its batch is featurized, at most retention_days; its
    # derivative (derived/) and rows stay retention_days. Zero: the run that commits its features removes it;
    # each day kept costs ~68 USD a month at a million phone photos a night (docs/gdpr.md, "What the lake keeps").
    original_retention_days: int = 0
    # Drift past which a nightly PCA fits a new basis (pca.py --drift-threshold); empty: the job's default.
    pca_drift_threshold: str = ""
    # Comma-separated EU buckets, besides the lake's, that `weights` and `landing` may name (s3://).
    allowed_buckets: str = ""
    # Landing files larger than this are rejected unread ("too_large"): a phone photo is 2-15 MB, and 16
    # reads in flight stay under 1 GiB of the worker's memory.
    max_photo_bytes: int = 50 * 1024 * 1024
    # What happens to ingested landing files: keep (default), archive (under _ingested/), delete.
    landing_after: str = "keep"
    # The night must be done by this hour (HH:MM, Europe/Paris): Airflow's deadline alert (fruits.deadline).
    deadline: str = "07:00"
    # SNS topic ARN (EU) told when a night misses its deadline; empty: the alert is an error in the log.
    deadline_sns_topic: str = ""
    # "required": a new PCA basis waits for an operator's approval (fruits.approval); "off": never asked.
    basis_approval: str = "off"

    @property
    def basis_approval_required(self) -> bool:
        return self.basis_approval == "required"

    @property
    def keep_originals(self) -> bool:
        """The ingest step keeps a decoded photo's stripped bytes in raw/ (--keep-originals): only a window reads
        them; without one, featurize's run reads the pixels the pass decoded and nothing reads the photo."""
        return self.original_retention_days > 0

    @property
    def allowed_region_list(self) -> tuple[str, ...]:
        return tuple(r.strip() for r in self.allowed_regions.split(",") if r.strip())

    @property
    def allowed_bucket_list(self) -> tuple[str, ...]:
        return (self.bucket, *(b.strip() for b in self.allowed_buckets.split(",") if b.strip()))

    @property
    def drift_threshold(self) -> float | None:
        return float(self.pca_drift_threshold) if str(self.pca_drift_threshold).strip() else None

    @property
    def subnet_id_list(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.subnet_ids.split(",") if s.strip())

    @property
    def log_uri_or_default(self) -> str:
        return self.log_uri or lake.logs_uri(f"s3://{self.bucket}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_deadline(value: str) -> dt.time:
    """`fruits_deadline` as a wall-clock time: HH:MM, else ValueError naming the Variable."""
    try:
        return dt.time.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{VARIABLE_PREFIX}deadline must be HH:MM (Europe/Paris), not {value!r}") from None


def variable_names() -> dict[str, str]:
    """Field name -> Airflow Variable name, for docs and for the stack-output import."""
    return {f.name: VARIABLE_PREFIX + f.name for f in fields(PipelineSettings) if f.name != "target"}


def load_settings(
    get_variable: Callable[[str, Any], Any], *, target: str = "emr", **overrides: Any
) -> PipelineSettings:
    """Build the settings from a Variable getter (`airflow.sdk.Variable.get`, or a dict's `.get` in
    tests); `target` is the DAG's (target_from_environment), never a Variable; `overrides` win over
    Variables when not None."""
    values: dict[str, Any] = {"target": target}
    for name, variable in variable_names().items():
        value = get_variable(variable, None)
        if value not in (None, ""):
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(PipelineSettings)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown pipeline settings: {sorted(unknown)}")
    for name, value in values.items():  # Variables are strings: the int settings are parsed here
        if isinstance(known[name].default, int) and not isinstance(value, int):
            try:
                values[name] = int(value)
            except ValueError:
                raise ValueError(f"{VARIABLE_PREFIX}{name} must be an integer, not {value!r}") from None
    settings = PipelineSettings(**values)
    if settings.target not in TARGETS:
        raise ValueError(f"the target must be one of {TARGETS}, not {settings.target!r}")
    if settings.retention_days < 1:
        raise ValueError(f"fruits_retention_days must be at least 1, not {settings.retention_days}")
    if settings.retention_max_batches < 1:
        raise ValueError(f"fruits_retention_max_batches must be at least 1, not {settings.retention_max_batches}")
    if not 0 <= settings.original_retention_days <= settings.retention_days:
        raise ValueError(
            f"fruits_original_retention_days must be between 0 and fruits_retention_days "
            f"({settings.retention_days}), not {settings.original_retention_days}"
        )
    try:
        threshold = settings.drift_threshold
    except ValueError:
        raise ValueError(f"fruits_pca_drift_threshold must be a number, not {settings.pca_drift_threshold!r}") from None
    if threshold is not None and threshold <= 0:
        raise ValueError(f"fruits_pca_drift_threshold must be > 0, not {threshold}")
    parse_deadline(settings.deadline)
    if settings.landing_after not in LANDING_AFTER:  # the ingest step's --landing-after: refused before a cluster
        raise ValueError(
            f"{VARIABLE_PREFIX}landing_after must be one of {LANDING_AFTER}, not {settings.landing_after!r}"
        )
    if settings.basis_approval not in ("off", "required"):
        raise ValueError(f"{VARIABLE_PREFIX}basis_approval must be off or required, not {settings.basis_approval!r}")
    return settings
