"""fruits.gdpr: the region allow-list and the bucket guard refuse anything outside the EU, unencrypted or
public, fail closed on any answer they cannot read, and refuse before any other AWS call is made."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from fruits import gdpr, lake
from fruits.emr_cluster import ClusterSizing, build_job_flow
from fruits.gdpr import (
    EU_MEMBER_STATE_REGIONS,
    GdprViolation,
    allowed_regions,
    check_bucket,
    check_region,
    check_settings,
    check_uri,
    s3_bucket_of,
)
from fruits.settings import PipelineSettings

EU_BUCKET = "fruits-lake-eu-west-3"


@pytest.mark.parametrize("region", EU_MEMBER_STATE_REGIONS)
def test_eu_member_state_regions_pass(region):
    assert check_region(region) == region


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-2", "eu-central-2", "il-central-1", "", None])
def test_regions_outside_the_eu_are_refused(region):
    # eu-west-2 is London (UK) and eu-central-2 Zurich (CH): "eu-" in the name, not in the EU.
    with pytest.raises(GdprViolation, match="not in the GDPR allow-list"):
        check_region(region)


def test_the_allow_list_can_narrow_but_never_widen():
    assert allowed_regions("eu-west-3, eu-west-1") == ("eu-west-3", "eu-west-1")
    assert allowed_regions(None) == EU_MEMBER_STATE_REGIONS
    with pytest.raises(GdprViolation):
        check_region("eu-central-1", "eu-west-3")
    with pytest.raises(GdprViolation, match="outside the EU member states"):
        allowed_regions("eu-west-3,us-east-1")
    with pytest.raises(GdprViolation, match="outside the EU member states"):
        check_region("eu-west-2", ["eu-west-3", "eu-west-2"])
    with pytest.raises(GdprViolation, match="empty"):
        allowed_regions(" , ")


class CallRecorder:
    """Every AWS API call made by clients of one boto3 session (botocore's before-call event)."""

    def __init__(self) -> None:
        self.session = boto3.Session(region_name="eu-west-3")
        self.calls: list[str] = []
        self.session.events.register("before-call.*.*", self._record)

    def _record(self, model, **_):
        self.calls.append(f"{model.service_model.service_name}.{model.name}")

    def client(self, service: str, region: str = "eu-west-3"):
        return self.session.client(service, region_name=region)


def _make_bucket(name: str, region: str, *, encrypted: bool = True, blocked: dict | None = None) -> None:
    s3 = boto3.client("s3", region_name=region)
    config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=name, **config)
    if encrypted:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}, "BucketKeyEnabled": True}]
            },
        )
    flags = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    if blocked is not None:
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={**flags, **blocked})


@pytest.fixture
def aws():
    with mock_aws():
        _make_bucket(EU_BUCKET, "eu-west-3", blocked={})
        yield CallRecorder()


def test_an_eu_encrypted_private_bucket_passes(aws):
    assert check_bucket(aws.client("s3"), EU_BUCKET) == "eu-west-3"
    assert aws.calls == ["s3.GetBucketLocation", "s3.GetBucketEncryption", "s3.GetPublicAccessBlock"]


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-2"])
def test_a_bucket_outside_the_eu_is_refused_after_one_location_call(aws, region):
    _make_bucket("fruits-elsewhere", region, blocked={})
    with pytest.raises(GdprViolation, match=region):
        check_bucket(aws.client("s3"), "fruits-elsewhere")
    assert aws.calls == ["s3.GetBucketLocation"]


@pytest.mark.parametrize(
    "encrypted, blocked, reason",
    [
        (False, {}, "ServerSideEncryptionConfigurationNotFoundError"),
        (True, None, "NoSuchPublicAccessBlockConfiguration"),
        (True, {"RestrictPublicBuckets": False}, r"\['RestrictPublicBuckets'\] are off"),
    ],
    ids=["unencrypted", "no-public-access-block", "public-access-partly-allowed"],
)
def test_an_unencrypted_or_public_bucket_is_refused(aws, encrypted, blocked, reason):
    _make_bucket("fruits-leaky-eu", "eu-west-3", encrypted=encrypted, blocked=blocked)
    with pytest.raises(GdprViolation, match=reason):
        check_bucket(aws.client("s3"), "fruits-leaky-eu")


def test_an_unreadable_answer_fails_closed():
    s3 = boto3.client("s3", region_name="eu-west-3", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(s3) as stubber:
        stubber.add_client_error("get_bucket_location", "AccessDenied", http_status_code=403)
        with pytest.raises(GdprViolation, match="AccessDenied"):
            check_bucket(s3, EU_BUCKET)
        stubber.add_response("get_bucket_location", {"LocationConstraint": "eu-west-3"})
        stubber.add_response(
            "get_bucket_encryption",
            {
                "ServerSideEncryptionConfiguration": {
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:fancy"}}]
                }
            },
        )
        with pytest.raises(GdprViolation, match="no accepted default encryption"):
            check_bucket(s3, EU_BUCKET)


def test_a_client_pointed_outside_the_eu_is_refused_before_calling(aws):
    with pytest.raises(GdprViolation, match="us-east-1"):
        check_bucket(aws.client("s3", "us-east-1"), EU_BUCKET)
    assert aws.calls == []


def _preflight_then_launch(settings: PipelineSettings, aws: CallRecorder) -> str:
    """The order the DAG runs: the guard first, the cluster only if it passes."""
    check_settings(settings, aws.client("s3", settings.region))
    request = build_job_flow(
        settings, name="fruits-test", code_uri=lake.code_uri(f"s3://{settings.bucket}", "v1"), sizing=ClusterSizing()
    )
    return aws.client("emr", settings.region).run_job_flow(**request)["JobFlowId"]


def test_us_east_1_is_refused_before_any_aws_call(aws):
    with pytest.raises(GdprViolation, match="us-east-1"):
        _preflight_then_launch(PipelineSettings(region="us-east-1", bucket=EU_BUCKET), aws)
    assert aws.calls == []


def test_london_is_refused_before_any_aws_call(aws):
    with pytest.raises(GdprViolation, match="eu-west-2"):
        _preflight_then_launch(PipelineSettings(region="eu-west-2", bucket=EU_BUCKET), aws)
    assert aws.calls == []


def test_a_us_bucket_is_refused_before_any_emr_call(aws):
    _make_bucket("fruits-lake-us", "us-east-1", blocked={})
    with pytest.raises(GdprViolation, match="us-east-1"):
        _preflight_then_launch(PipelineSettings(bucket="fruits-lake-us"), aws)
    assert aws.calls == ["s3.GetBucketLocation"]
    assert not [call for call in aws.calls if call.startswith("emr.")]


def test_landing_and_log_buckets_are_checked_too(aws):
    _make_bucket("fruits-landing-us", "us-east-1", blocked={})
    with pytest.raises(GdprViolation, match="fruits-landing-us"):
        _preflight_then_launch(PipelineSettings(bucket=EU_BUCKET, landing="s3://fruits-landing-us/incoming/"), aws)
    assert not [call for call in aws.calls if call.startswith("emr.")]
    with pytest.raises(GdprViolation, match="fruits-logs-missing"):
        check_settings(PipelineSettings(bucket=EU_BUCKET, log_uri="s3://fruits-logs-missing/emr/"), aws.client("s3"))


def test_the_whole_preflight_passes_for_a_compliant_setup_and_then_launches(aws):
    _make_bucket("fruits-landing-eu", "eu-west-1", blocked={})
    settings = PipelineSettings(bucket=EU_BUCKET, landing="s3://fruits-landing-eu/incoming/")
    assert check_settings(settings, aws.client("s3")) == {EU_BUCKET: "eu-west-3", "fruits-landing-eu": "eu-west-1"}
    assert _preflight_then_launch(settings, aws).startswith("j-")
    assert aws.calls[-1] == "emr.RunJobFlow"
    assert all(call.startswith("s3.") for call in aws.calls[:-1])


def test_uris():
    assert s3_bucket_of("s3://fruits-lake/raw/") == "fruits-lake"
    with pytest.raises(ValueError, match="s3://bucket"):
        s3_bucket_of("/data/lake")
    assert check_uri("/data/landing", s3_client=None) is None  # a local folder is not AWS


# ---- exact: transient errors retried, non-AWS endpoints refused, the bucket owner expected ---------------


def _stubbed(endpoint_url: str | None = None):
    return boto3.client(
        "s3", region_name="eu-west-3", aws_access_key_id="x", aws_secret_access_key="x", endpoint_url=endpoint_url
    )


def _compliant_answers(stubber: Stubber, expected: dict | None = None) -> None:
    params = {"Bucket": EU_BUCKET, **(expected or {})}
    stubber.add_response("get_bucket_location", {"LocationConstraint": "eu-west-3"}, params)
    stubber.add_response(
        "get_bucket_encryption",
        {
            "ServerSideEncryptionConfiguration": {
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
            }
        },
        params,
    )
    flags = dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)
    stubber.add_response("get_public_access_block", {"PublicAccessBlockConfiguration": flags}, params)


@pytest.fixture
def no_sleep(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(gdpr, "_sleep", waits.append)
    return waits


@pytest.mark.parametrize(
    "code, status",
    [("SlowDown", 503), ("InternalError", 500), ("ThrottlingException", 400), ("ServiceUnavailable", 503)],
)
def test_a_transient_error_is_retried_with_backoff_not_reported_as_a_violation(no_sleep, code, status):
    s3 = _stubbed()
    with Stubber(s3) as stubber:
        stubber.add_client_error("get_bucket_location", code, http_status_code=status)
        stubber.add_client_error("get_bucket_location", code, http_status_code=status)
        _compliant_answers(stubber)
        assert check_bucket(s3, EU_BUCKET) == "eu-west-3"
        stubber.assert_no_pending_responses()
    assert no_sleep == [gdpr.GUARD_BACKOFF_SECONDS, 2 * gdpr.GUARD_BACKOFF_SECONDS]


def test_a_persistent_transient_error_is_unavailable_not_a_violation(no_sleep):
    s3 = _stubbed()
    with Stubber(s3) as stubber:
        stubber.add_response("get_bucket_location", {"LocationConstraint": "eu-west-3"})
        for _ in range(gdpr.GUARD_ATTEMPTS):
            stubber.add_client_error("get_bucket_encryption", "SlowDown", http_status_code=503)
        with pytest.raises(gdpr.GuardUnavailable, match="SlowDown") as error:
            check_bucket(s3, EU_BUCKET)
    assert not isinstance(error.value, GdprViolation) and not isinstance(error.value, ValueError)
    assert len(no_sleep) == gdpr.GUARD_ATTEMPTS - 1


def test_a_dropped_connection_is_retried(no_sleep):
    from botocore.exceptions import EndpointConnectionError

    answers = iter(
        [
            EndpointConnectionError(endpoint_url="https://s3.eu-west-3.amazonaws.com"),
            {"LocationConstraint": "eu-west-3"},
        ]
    )

    def flaky(**_):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert gdpr._call(flaky, Bucket=EU_BUCKET) == {"LocationConstraint": "eu-west-3"}
    assert len(no_sleep) == 1


def test_a_real_refusal_is_still_a_violation_at_once(no_sleep):
    s3 = _stubbed()
    with Stubber(s3) as stubber:
        stubber.add_client_error("get_bucket_location", "AccessDenied", http_status_code=403)
        with pytest.raises(GdprViolation, match="AccessDenied"):
            check_bucket(s3, EU_BUCKET)
    assert no_sleep == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:5000",
        "https://s3.eu-west-3.amazonaws.com.evil.example",
        "https://minio.internal",
        "http://s3.eu-west-3.amazonaws.com",
    ],
)
def test_a_client_with_a_non_aws_endpoint_is_refused_before_any_call(endpoint):
    s3 = _stubbed(endpoint)
    with Stubber(s3), pytest.raises(GdprViolation, match="not AWS's S3"):
        check_bucket(s3, EU_BUCKET)  # the Stubber has no answer queued: any call would fail differently


def test_a_test_double_is_accepted_only_when_named(caplog):
    endpoint = "http://127.0.0.1:5000"
    for allow in (lambda: check_bucket(_stubbed(endpoint), EU_BUCKET, test_endpoints=[endpoint]), None):
        s3 = _stubbed(endpoint)
        with Stubber(s3) as stubber:
            _compliant_answers(stubber)
            if allow is None:
                with gdpr.test_double_endpoint(endpoint):
                    assert check_bucket(s3, EU_BUCKET) == "eu-west-3"
            else:
                assert check_bucket(s3, EU_BUCKET, test_endpoints=[endpoint]) == "eu-west-3"
    assert "TEST DOUBLE" in caplog.text
    with pytest.raises(GdprViolation):  # the block is over: refused again
        check_bucket(_stubbed(endpoint), EU_BUCKET)
    assert gdpr.check_endpoint(_stubbed()) == "https://s3.eu-west-3.amazonaws.com"  # moto in-process: AWS's


def test_the_lake_bucket_owner_is_expected_on_every_guard_call():
    s3 = _stubbed()
    settings = PipelineSettings(bucket=EU_BUCKET, bucket_owner="123456789012")
    with Stubber(s3) as stubber:
        _compliant_answers(stubber, {"ExpectedBucketOwner": "123456789012"})  # the Stubber checks the params
        assert check_settings(settings, s3) == {EU_BUCKET: "eu-west-3"}
        stubber.assert_no_pending_responses()
    with Stubber(s3) as stubber:
        stubber.add_client_error(
            "get_bucket_location",
            "AccessDenied",
            http_status_code=403,
            expected_params={"Bucket": EU_BUCKET, "ExpectedBucketOwner": "123456789012"},
        )
        with pytest.raises(GdprViolation, match="AccessDenied"):  # what S3 answers for another account's bucket
            check_settings(settings, s3)
    with Stubber(s3) as stubber:  # unknown account: no parameter at all
        _compliant_answers(stubber)
        assert check_bucket(s3, EU_BUCKET, expected_owner="") == "eu-west-3"


def test_every_store_call_on_the_lake_carries_the_expected_owner():
    """The stores (fruits.storage.S3Store) get the owner through the client: every S3 operation that takes
    ExpectedBucketOwner sends it for the lake bucket, none for another bucket (moto ignores the header, so
    the test reads what goes on the wire)."""
    from fruits.storage import S3Store

    with mock_aws():
        _make_bucket(EU_BUCKET, "eu-west-3", blocked={})
        _make_bucket("fruits-landing-partner", "eu-west-3", blocked={})
        s3 = gdpr.expect_bucket_owner(boto3.client("s3", region_name="eu-west-3"), EU_BUCKET, "123456789012")
        sent: list[tuple[str, str | None]] = []
        s3.meta.events.register(
            "before-call.s3.*",
            lambda model, params, **_: sent.append((model.name, params["headers"].get("x-amz-expected-bucket-owner"))),
        )
        lake_store, landing = S3Store(s3, EU_BUCKET), S3Store(s3, "fruits-landing-partner")
        lake_store.put(f"s3://{EU_BUCKET}/raw/batch=2026-01-01/a", b"x", "0")
        assert lake_store.read(f"s3://{EU_BUCKET}/raw/batch=2026-01-01/a") == b"x"
        assert list(lake_store.list_files(f"s3://{EU_BUCKET}/raw/")) == [f"s3://{EU_BUCKET}/raw/batch=2026-01-01/a"]
        lake_store.delete(f"s3://{EU_BUCKET}/raw/batch=2026-01-01/a")
        lake_calls = list(sent)
        landing.put("s3://fruits-landing-partner/x", b"x", "0")
    assert {name for name, _ in lake_calls} >= {"PutObject", "GetObject", "ListObjectsV2", "DeleteObjects"}
    assert all(owner == "123456789012" for _, owner in lake_calls), lake_calls
    assert sent[-1] == ("PutObject", None)


def test_a_moto_server_answers_only_once_named_a_test_double():
    """Over HTTP (ThreadedMotoServer on 127.0.0.1), the same bucket the in-process tests pass is refused
    until the test says this endpoint is a test double."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3", region_name="eu-west-3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test"
        )
        s3.create_bucket(Bucket=EU_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        s3.put_bucket_encryption(
            Bucket=EU_BUCKET,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
            },
        )
        s3.put_public_access_block(
            Bucket=EU_BUCKET,
            PublicAccessBlockConfiguration=dict.fromkeys(
                ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
            ),
        )
        with pytest.raises(GdprViolation, match="not AWS's S3"):
            check_settings(PipelineSettings(bucket=EU_BUCKET), s3)
        assert check_settings(PipelineSettings(bucket=EU_BUCKET), s3, test_endpoints=[endpoint]) == {
            EU_BUCKET: "eu-west-3"
        }
    finally:
        server.stop()
