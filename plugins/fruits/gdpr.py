"""GDPR guard: data and compute stay in EU member-state regions, encrypted and private.

The DAG's first task calls `check_settings` before anything else touches AWS; `build_job_flow` calls
`check_region` again, so no request for a cluster outside the allow-list is even built. Every check
fails closed: an answer it cannot read (access denied, missing configuration) is a refusal.

The allow-list is configurable (`fruits_allowed_regions`) but can only NARROW the EU member-state
regions below: widening it is a code change, reviewed like one (docs/gdpr.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

# AWS regions located in EU member states. Deliberately NOT eu-west-2 (London, UK) nor
# eu-central-2 (Zurich, CH): outside the EU, even if "eu-" in name.
EU_MEMBER_STATE_REGIONS: tuple[str, ...] = (
    "eu-west-3",  # Paris
    "eu-west-1",  # Ireland
    "eu-central-1",  # Frankfurt
    "eu-north-1",  # Stockholm
    "eu-south-1",  # Milan
    "eu-south-2",  # Spain
)

# Default bucket encryption we accept: SSE-KMS (what infra/foundation.yaml sets), DSSE-KMS, SSE-S3.
ACCEPTED_SSE_ALGORITHMS = ("aws:kms", "aws:kms:dsse", "AES256")
PUBLIC_ACCESS_BLOCK_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


class GdprViolation(ValueError):
    """Something would put data or compute outside the EU allow-list, unencrypted or public."""


def allowed_regions(allowed: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """The allow-list as a tuple: a comma-separated string or an iterable; None means the EU default.
    Refuses an empty list and any region that is not an EU member-state region."""
    if allowed is None:
        return EU_MEMBER_STATE_REGIONS
    items = allowed.split(",") if isinstance(allowed, str) else list(allowed)
    regions = tuple(r.strip() for r in items if r and r.strip())
    if not regions:
        raise GdprViolation("the region allow-list is empty: nothing may run")
    outside = [r for r in regions if r not in EU_MEMBER_STATE_REGIONS]
    if outside:
        raise GdprViolation(
            f"the allow-list names regions outside the EU member states: {outside}; "
            f"it may only narrow {list(EU_MEMBER_STATE_REGIONS)}"
        )
    return regions


def check_region(region: str | None, allowed: str | Iterable[str] | None = None) -> str:
    """Return `region` if the allow-list holds it; raise GdprViolation otherwise (no AWS call)."""
    permitted = allowed_regions(allowed)
    if region not in permitted:
        raise GdprViolation(f"region {region!r} is not in the GDPR allow-list {list(permitted)}")
    return region


def s3_bucket_of(uri: str, *, what: str = "uri") -> str:
    """The bucket of an `s3://bucket/...` URI; ValueError for anything else."""
    parsed = urlparse(uri or "")
    if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
        raise ValueError(f"{what} must be an s3://bucket/... URI, not {uri!r}")
    return parsed.netloc


def _bucket_region(location: dict[str, Any]) -> str:
    # GetBucketLocation answers None (or "") for us-east-1 and the legacy "EU" for eu-west-1.
    constraint = location.get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, constraint)


def check_bucket(s3_client: Any, bucket: str, allowed: str | Iterable[str] | None = None) -> str:
    """Refuse a bucket outside the allow-list, without default encryption or without a full public
    access block. Returns the bucket's region. The location is checked first and alone: for a bucket
    in the wrong region nothing else is asked."""
    from botocore.exceptions import BotoCoreError, ClientError

    permitted = allowed_regions(allowed)
    check_region(s3_client.meta.region_name, permitted)
    try:
        region = _bucket_region(s3_client.get_bucket_location(Bucket=bucket))
        if region not in permitted:
            raise GdprViolation(f"bucket {bucket!r} is in {region}, outside the GDPR allow-list {list(permitted)}")
        encryption = s3_client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        algorithms = {
            rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for rule in encryption["Rules"]
        }
        if not algorithms & set(ACCEPTED_SSE_ALGORITHMS):
            raise GdprViolation(f"bucket {bucket!r} has no accepted default encryption: {sorted(map(str, algorithms))}")
        block = s3_client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        open_flags = [flag for flag in PUBLIC_ACCESS_BLOCK_FLAGS if not block.get(flag)]
        if open_flags:
            raise GdprViolation(f"bucket {bucket!r} does not block public access: {open_flags} are off")
    except ClientError as error:
        # Access denied, no such bucket, no encryption / public-access-block configuration: fail closed.
        code = error.response.get("Error", {}).get("Code", "?")
        raise GdprViolation(f"bucket {bucket!r} cannot be shown to be EU, encrypted and private: {code}") from error
    except BotoCoreError as error:
        raise GdprViolation(f"bucket {bucket!r} could not be checked: {error}") from error
    log.info("GDPR: bucket %s is in %s, encrypted (%s), public access blocked", bucket, region,
             ",".join(sorted(algorithms)))
    return region


def check_uri(uri: str, s3_client: Any, allowed: str | Iterable[str] | None = None) -> str | None:
    """Check the bucket behind an s3:// URI (returns its region); a local path is not AWS (None)."""
    if urlparse(uri or "").scheme in ("s3", "s3a"):
        return check_bucket(s3_client, s3_bucket_of(uri), allowed)
    return None


def check_settings(settings: Any, s3_client: Any) -> dict[str, str]:
    """Everything the pipeline will touch, checked before it touches anything: the region (no AWS call),
    then the lake bucket, then the landing prefix's and the log URI's buckets when they differ.
    `settings` is a fruits.settings.PipelineSettings. Returns {bucket: region} for the log."""
    permitted = allowed_regions(settings.allowed_region_list)
    check_region(settings.region, permitted)
    checked = {settings.bucket: check_bucket(s3_client, settings.bucket, permitted)}
    for uri in (settings.landing, settings.log_uri_or_default):
        if urlparse(uri or "").scheme in ("s3", "s3a") and s3_bucket_of(uri) not in checked:
            checked[s3_bucket_of(uri)] = check_bucket(s3_client, s3_bucket_of(uri), permitted)
    log.info("GDPR: region %s and buckets %s inside the allow-list %s", settings.region, checked, list(permitted))
    return checked
