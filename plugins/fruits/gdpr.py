"""GDPR guard: data and compute stay in EU member-state regions, encrypted and private.

The DAG's first task calls `check_settings` before anything else touches AWS; `build_job_flow` calls
`check_region` again, so no request for a cluster outside the allow-list is even built. Every check
fails closed: an answer it cannot read (access denied, missing configuration) is a refusal.

The allow-list is configurable (`fruits_allowed_regions`) but can only NARROW the EU member-state
regions below: widening it is a code change, reviewed like one (docs/gdpr.md).

Exact, not jumpy: a transient AWS answer (503 SlowDown, throttling, a 500, a dropped connection) is
retried with backoff and, if it persists, raised as `GuardUnavailable` (the task retries later), never
as a GdprViolation. A client whose endpoint is not AWS's own S3 endpoint is refused (a proxy or a fake
could answer anything); a test double is allowed only when the caller names it (`test_endpoints=` or
`test_double_endpoint(...)`). Every call passes `ExpectedBucketOwner` when the lake's account id is
known (setting `bucket_owner`), so a same-named bucket in another account is refused by S3 itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from fruits import lake

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


class GuardUnavailable(RuntimeError):
    """AWS kept answering with transient errors: nothing was shown either way; retry later."""


# Error codes and HTTP statuses S3 uses for "try again": not an answer about the bucket.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
GUARD_ATTEMPTS = 5
GUARD_BACKOFF_SECONDS = 1.0  # doubled after each transient failure
# AWS's own S3 endpoints (regional, legacy global, dual-stack); anything else is not AWS answering.
_AWS_S3_ENDPOINT = re.compile(r"^https://s3([.-]dualstack)?(\.[a-z0-9-]+)?\.amazonaws\.com/?$")
_test_doubles: set[str] = set()
_sleep: Callable[[float], None] = time.sleep


@contextmanager
def test_double_endpoint(endpoint_url: str) -> Iterator[None]:
    """Say explicitly that `endpoint_url` is a test double (e.g. moto's ThreadedMotoServer) for the
    duration of the block; the guard logs a warning each time it accepts it."""
    _test_doubles.add(endpoint_url.rstrip("/"))
    try:
        yield
    finally:
        _test_doubles.discard(endpoint_url.rstrip("/"))


def check_endpoint(s3_client: Any, test_endpoints: Iterable[str] = ()) -> str:
    """Refuse a client that talks to anything but AWS's S3 endpoints, unless named a test double."""
    endpoint = (getattr(s3_client.meta, "endpoint_url", "") or "").rstrip("/")
    if _AWS_S3_ENDPOINT.match(endpoint):
        return endpoint
    if endpoint in _test_doubles | {e.rstrip("/") for e in test_endpoints}:
        log.warning("GDPR: endpoint %s accepted as a TEST DOUBLE, not AWS", endpoint)
        return endpoint
    raise GdprViolation(f"the S3 client's endpoint {endpoint!r} is not AWS's S3: its answers prove nothing")


def _is_transient(error: Exception) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in TRANSIENT_CODES or status in TRANSIENT_STATUSES
    return isinstance(error, ConnectionError | HTTPClientError)


def _call(method: Callable[..., Any], *, attempts: int = GUARD_ATTEMPTS, **kwargs: Any) -> Any:
    """One guard call, retried with exponential backoff while AWS answers with a transient error."""
    wait = GUARD_BACKOFF_SECONDS
    for attempt in range(1, attempts + 1):
        try:
            return method(**kwargs)
        except Exception as error:
            if not _is_transient(error):
                raise
            if attempt == attempts:
                raise GuardUnavailable(
                    f"{getattr(method, '__name__', method)} kept failing transiently ({error}) after {attempts} "
                    "attempts: nothing shown either way, retry later"
                ) from error
            log.warning("GDPR guard: transient %s (attempt %d/%d); retrying in %.0fs", error, attempt, attempts, wait)
            _sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


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
    bucket = lake.split_uri(uri)[1] if lake.is_s3(uri) else ""
    if not bucket:
        raise ValueError(f"{what} must be an s3://bucket/... URI, not {uri!r}")
    return bucket


def _bucket_region(location: dict[str, Any]) -> str:
    # GetBucketLocation answers None (or "") for us-east-1 and the legacy "EU" for eu-west-1.
    constraint = location.get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, constraint)


def owner_args(expected_owner: str | None) -> dict[str, str]:
    """`ExpectedBucketOwner=<account id>` for an S3 call when the account is known, else nothing."""
    return {"ExpectedBucketOwner": expected_owner} if expected_owner else {}


def expect_bucket_owner(s3_client: Any, bucket: str, account_id: str) -> Any:
    """Make every call of `s3_client` on `bucket` (the lake) carry ExpectedBucketOwner=account_id, whatever
    code makes it (the stores, the upload, the erasure): S3 then refuses the call with 403 if the bucket
    belongs to another account. Operations without that parameter, and other buckets, are left alone.
    Returns the client; a no-op when the account is unknown."""
    if not account_id:
        return s3_client

    def add_owner(params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("Bucket") == bucket and "ExpectedBucketOwner" in model.input_shape.members:
            params.setdefault("ExpectedBucketOwner", account_id)

    s3_client.meta.events.register("before-parameter-build.s3", add_owner, unique_id=f"fruits-owner-{bucket}")
    return s3_client


def check_bucket(
    s3_client: Any,
    bucket: str,
    allowed: str | Iterable[str] | None = None,
    *,
    expected_owner: str = "",
    test_endpoints: Iterable[str] = (),
) -> str:
    """Refuse a bucket outside the allow-list, without default encryption or without a full public
    access block. Returns the bucket's region. The location is checked first and alone: for a bucket
    in the wrong region nothing else is asked."""
    from botocore.exceptions import BotoCoreError, ClientError

    permitted = allowed_regions(allowed)
    check_region(s3_client.meta.region_name, permitted)
    check_endpoint(s3_client, test_endpoints)
    owner = owner_args(expected_owner)
    try:
        region = _bucket_region(_call(s3_client.get_bucket_location, Bucket=bucket, **owner))
        if region not in permitted:
            raise GdprViolation(f"bucket {bucket!r} is in {region}, outside the GDPR allow-list {list(permitted)}")
        encryption = _call(s3_client.get_bucket_encryption, Bucket=bucket, **owner)["ServerSideEncryptionConfiguration"]
        algorithms = {
            rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for rule in encryption["Rules"]
        }
        if not algorithms & set(ACCEPTED_SSE_ALGORITHMS):
            raise GdprViolation(f"bucket {bucket!r} has no accepted default encryption: {sorted(map(str, algorithms))}")
        block = _call(s3_client.get_public_access_block, Bucket=bucket, **owner)["PublicAccessBlockConfiguration"]
        open_flags = [flag for flag in PUBLIC_ACCESS_BLOCK_FLAGS if not block.get(flag)]
        if open_flags:
            raise GdprViolation(f"bucket {bucket!r} does not block public access: {open_flags} are off")
    except ClientError as error:
        # Access denied, no such bucket, no encryption / public-access-block configuration: fail closed.
        code = error.response.get("Error", {}).get("Code", "?")
        raise GdprViolation(f"bucket {bucket!r} cannot be shown to be EU, encrypted and private: {code}") from error
    except BotoCoreError as error:
        raise GdprViolation(f"bucket {bucket!r} could not be checked: {error}") from error
    log.info(
        "GDPR: bucket %s is in %s, encrypted (%s), public access blocked", bucket, region, ",".join(sorted(algorithms))
    )
    return region


def check_uri(uri: str, s3_client: Any, allowed: str | Iterable[str] | None = None, **kwargs: Any) -> str | None:
    """Check the bucket behind an s3:// URI (returns its region); a local path is not AWS (None)."""
    if lake.is_s3(uri):
        return check_bucket(s3_client, s3_bucket_of(uri), allowed, **kwargs)
    return None


def check_settings(settings: Any, s3_client: Any, *, test_endpoints: Iterable[str] = ()) -> dict[str, str]:
    """Everything the pipeline will touch, checked before it touches anything: the region (no AWS call),
    then the lake bucket, then the landing prefix's and the log URI's buckets when they differ.
    `settings` is a fruits.settings.PipelineSettings. Returns {bucket: region} for the log. The lake's
    account (`bucket_owner`) is expected of the lake bucket only: a landing may belong to a partner."""
    permitted = allowed_regions(settings.allowed_region_list)
    check_region(settings.region, permitted)
    owner = getattr(settings, "bucket_owner", "")
    checked = {
        settings.bucket: check_bucket(
            s3_client, settings.bucket, permitted, expected_owner=owner, test_endpoints=test_endpoints
        )
    }
    for uri in (settings.landing, settings.log_uri_or_default):
        if lake.is_s3(uri) and s3_bucket_of(uri) not in checked:
            checked[s3_bucket_of(uri)] = check_bucket(
                s3_client, s3_bucket_of(uri), permitted, test_endpoints=test_endpoints
            )
    log.info("GDPR: region %s and buckets %s inside the allow-list %s", settings.region, checked, list(permitted))
    return checked
