"""The IAM access matrix (fruits.access) against infra/foundation.yaml: each role's S3 grants are
EXACTLY what the matrix derives from the code and lake.py (no more, no less), by a small evaluator of
the template's own documents; then the project's store makes real calls under moto's IAM-enforcing mode
(`enable_iam_authentication`, i.e. INITIAL_NO_AUTH_ACTION_COUNT=0) as a user holding each role's
policy, and is allowed exactly where the matrix says. moto checks actions and resources but ignores
StringLike conditions, so the list actions' prefixes are checked by the evaluator alone; the EMR tag
conditions are checked on the template and on the cluster request."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from cfnlint.decode.cfn_yaml import loads as load_cfn_yaml
from moto import mock_aws
from moto.core.authorization import (
    disable_iam_authentication,
    enable_iam_authentication,
)

from fruits import access, lake
from fruits.emr_cluster import PIPELINE_TAG_KEY, ClusterSizing, build_job_flow
from fruits.settings import PipelineSettings
from fruits.storage import S3Store

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "infra" / "foundation.yaml"
BUCKET = "fruits-lake-access-test"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
LANDING_ARN, LANDING_PREFIX = "arn:aws:s3:::fruits-landing-test", "incoming/"
KEY_ARN = "arn:aws:kms:eu-west-3:123456789012:key/test"
REGION = "eu-west-3"


@pytest.fixture(scope="module")
def template() -> dict:
    return load_cfn_yaml(TEMPLATE_PATH.read_text())


def _resolve(node):
    """The template's intrinsic functions this test meets, resolved for BUCKET."""
    if isinstance(node, dict):
        if "Fn::GetAtt" in node:
            name = node["Fn::GetAtt"][0]
            return {"LakeBucket": BUCKET_ARN, "LakeKey": KEY_ARN}.get(name, f"arn:aws:iam::123456789012:role/{name}")
        if "Fn::Sub" in node:
            return (
                node["Fn::Sub"]
                .replace("${LakeBucket.Arn}", BUCKET_ARN)
                .replace("arn:${AWS::Partition}:s3:::${LandingBucket}", LANDING_ARN)
                .replace("${LandingPrefix}", LANDING_PREFIX)
            )
        if "Fn::If" in node:  # the conditions this test deploys with: a landing bucket is given
            condition, if_true, if_false = node["Fn::If"]
            return _resolve(if_true if condition == "HasLanding" else if_false)
        if "Ref" in node:
            return {"Prefix": "fruits", "AllowedRegions": ["eu-west-3"]}.get(node["Ref"], node["Ref"])
        return {k: _resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v) for v in node]
    return node


def _documents(template: dict, role: str) -> list[dict]:
    props = template["Resources"][access.ROLE_RESOURCES[role]]["Properties"]
    return [_resolve(p["PolicyDocument"]) for p in props.get("Policies", [])] or [_resolve(props["PolicyDocument"])]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def granted(documents: list[dict]) -> set[tuple[str, str]]:
    """{(s3 action, area)} the documents allow: object ARNs `<bucket>/<area>/*` give the area, the bucket
    ARN gives access.BUCKET, or for the list actions the areas of their s3:prefix condition."""
    grants = set()
    for document in documents:
        for statement in document["Statement"]:
            if statement["Effect"] != "Allow":
                continue
            actions = [a for a in _as_list(statement["Action"]) if a.startswith("s3:")]
            assert not [a for a in actions if "*" in a], f"wildcard S3 action in {statement.get('Sid')}"
            for resource in _as_list(statement["Resource"]):
                for action in actions:
                    if resource == LANDING_ARN and action in access.LIST_ACTIONS:
                        prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
                        assert prefixes == [LANDING_PREFIX + "*"], prefixes
                        grants.add((action, access.LANDING))
                    elif resource == LANDING_ARN:
                        grants.add((action, access.LANDING_BUCKET))
                    elif resource == f"{LANDING_ARN}/{LANDING_PREFIX}*":
                        grants.add((action, access.LANDING))
                    elif resource == BUCKET_ARN and action in access.LIST_ACTIONS:
                        prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", ["*"])
                        grants |= {(action, p.removesuffix("/*")) for p in _as_list(prefixes)}
                    elif resource == BUCKET_ARN:
                        grants.add((action, access.BUCKET))
                    elif resource.startswith(BUCKET_ARN + "/") and resource.endswith("/*"):
                        grants.add((action, resource[len(BUCKET_ARN) + 1 : -2]))
                    else:
                        grants.add((action, resource))
    return grants


@pytest.mark.parametrize("role", access.ROLES)
def test_the_template_grants_each_role_exactly_the_matrix(template, role):
    have, need = granted(_documents(template, role)), access.role_grants(role)
    assert not need - have, f"{role} lacks {sorted(need - have)}"
    assert not have - need, f"{role} has more than it needs: {sorted(have - need)}"


def test_the_check_catches_the_node_role_that_cannot_read_its_quarantine(template):
    """The bug this matrix was built for: featurize reads back what it commits under quarantine/."""
    broken = copy.deepcopy(template)
    statements = broken["Resources"]["EmrInstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    reads = next(s for s in statements if s["Action"] == "s3:GetObject")
    reads["Resource"] = [r for r in reads["Resource"] if "quarantine" not in r["Fn::Sub"]]
    missing = access.role_grants("node") - granted(_documents(broken, "node"))
    assert missing == {(access.GET, "quarantine")}


def test_the_matrix_names_only_lake_areas_and_only_the_ingest_job_writes_photos_and_nothing_writes_code():
    for name, actor in access.MATRIX.items():
        assert set(actor.areas) <= {*lake.AREAS, access.LANDING}, name
    writes = {area for action, area in access.role_grants("node") if action in (access.PUT, access.DELETE)}
    assert writes == {"landing", "raw", "index", "features", "derived", "quarantine", "pca", "logs"}
    photo_writers = {n for n, a in access.MATRIX.items() if a.role == "node" and access.PUT in a.areas.get("raw", ())}
    assert photo_writers == {"node:ingest"}
    assert (access.GET, "quarantine") in access.actor_grants("node:featurize")
    assert (access.PUT, "pca") not in access.actor_grants("node:featurize")  # one role, two phases
    erasure = access.role_grants("erasure")
    assert {area for _, area in erasure} - {access.BUCKET} == set(access.PERSONAL_AREAS)
    assert "| node:featurize |" in access.markdown_table()
    with pytest.raises(ValueError, match="no lake area"):
        access.area_of("s3://lake/elsewhere/x")


def test_emr_rights_hold_only_for_clusters_carrying_the_pipeline_tag(template):
    statements = _resolve(template["Resources"]["AirflowPolicy"]["Properties"]["PolicyDocument"])["Statement"]
    emr = [s for s in statements if any(a.startswith("elasticmapreduce:") for a in _as_list(s.get("Action", [])))]
    by_action = {a: s for s in emr for a in _as_list(s["Action"])}
    # Creating a cluster with tags is authorized as RunJobFlow AND AddTags: both only with the pipeline tag.
    create = ("elasticmapreduce:RunJobFlow", "elasticmapreduce:AddTags")
    for action in create:
        assert by_action[action]["Condition"] == {"StringEquals": {f"aws:RequestTag/{PIPELINE_TAG_KEY}": "fruits"}}
    for action, statement in by_action.items():
        if action not in create:
            assert statement["Condition"] == {"StringEquals": {f"aws:ResourceTag/{PIPELINE_TAG_KEY}": "fruits"}}
    assert {
        "elasticmapreduce:AddJobFlowSteps",
        "elasticmapreduce:CancelSteps",
        "elasticmapreduce:TerminateJobFlows",
    } <= set(by_action)
    # The request the DAG sends carries the tag, whatever extra tags a sizing adds.
    settings = PipelineSettings(bucket=BUCKET, pipeline_tag="fruits")
    request = build_job_flow(
        settings,
        name="n",
        code_uri=f"s3://{BUCKET}/code/v/",
        sizing=ClusterSizing(extra_tags={PIPELINE_TAG_KEY: "other"}),
    )
    assert {"Key": PIPELINE_TAG_KEY, "Value": "fruits"} in request["Tags"]
    assert template["Outputs"]["PipelineTag"]["Value"] == {"Ref": "Prefix"}


# ---- real calls of the project's store, under moto's IAM-enforcing mode ---------------------------------


def _user_client(iam, name: str, documents: list[dict]):
    """A moto user holding the documents. moto would apply the region Deny unconditionally (it skips a
    StringNotEquals condition instead of evaluating it), so that statement stays out: it is about the
    region, not the matrix."""
    iam.create_user(UserName=name)
    for index, document in enumerate(documents):
        document = {**document, "Statement": [s for s in document["Statement"] if s["Effect"] == "Allow"]}
        iam.put_user_policy(UserName=name, PolicyName=f"p{index}", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return boto3.client(
        "s3", region_name=REGION, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )


def _allowed(call, *args, **kwargs) -> bool:
    try:
        call(*args, **kwargs)
        return True
    except ClientError as error:
        assert error.response["Error"]["Code"] == "AccessDenied", error
        return False


@pytest.mark.parametrize("role", access.ROLES)
def test_the_store_is_allowed_exactly_where_the_matrix_says(template, role):
    with mock_aws(), disable_iam_authentication():
        admin = boto3.client("s3", region_name=REGION)
        admin.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for area in lake.AREAS:
            admin.put_object(Bucket=BUCKET, Key=f"{area}/batch=2026-01-01/{lake.COMMIT_MARKER}", Body=b"{}")
        client = _user_client(boto3.client("iam", region_name=REGION), role, _documents(template, role))
        store = S3Store(client, BUCKET)
        need = access.role_grants(role)
        with enable_iam_authentication():
            for area in lake.AREAS:
                uri = f"s3://{BUCKET}/{area}/batch=2026-01-01/{lake.COMMIT_MARKER}"
                key = uri.removeprefix(f"s3://{BUCKET}/")
                assert _allowed(store.read, uri) == ((access.GET, area) in need), (role, "read", area)
                new = uri + ".new"
                assert _allowed(store.put, new, b"{}", "0") == ((access.PUT, area) in need), (role, "put", area)
                assert _allowed(client.delete_object, Bucket=BUCKET, Key=key) == ((access.DELETE, area) in need), (
                    role,
                    "delete",
                    area,
                )


def _versioned_lake_of_nights(nights: int):
    """(admin client, its store, root) of a versioned lake holding nights 1..`nights` (test_retention's)."""
    from test_retention import day, land_night, new_basis

    admin = boto3.client("s3", region_name=REGION)
    admin.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    setup, root = S3Store(admin, BUCKET), f"s3://{BUCKET}"
    new_basis(setup, root, 1)
    for night in range(1, nights + 1):
        land_night(setup, root, day(night), 1)
    return admin, setup, root


def _airflow_client_deleting_versions(template):
    """An S3 client with the Airflow role's policy, plus the one moto needs for DeleteObjects: moto authorizes
    that request as s3:DeleteObject on the BUCKET, then checks no key against IAM (S3 checks
    s3:DeleteObjectVersion per key): a moto-only grant, outside the template."""
    moto_only = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": BUCKET_ARN}],
    }
    return _user_client(
        boto3.client("iam", region_name=REGION), "airflow", [*_documents(template, "airflow"), moto_only]
    )


def test_the_airflow_role_can_run_the_retention_sweep_on_a_versioned_lake(template):
    """fruits.retention under moto's IAM-enforcing mode with the Airflow role's policy: every version of an
    expired batch goes (ListBucketVersions + DeleteObjectVersion on each batch area), the window stays."""
    from test_retention import batches_in_lake, day

    from fruits import retention

    with mock_aws(), disable_iam_authentication():
        admin, setup, root = _versioned_lake_of_nights(3)
        client = _airflow_client_deleting_versions(template)
        with enable_iam_authentication():
            report = retention.sweep_expired(S3Store(client, BUCKET), root, day(3), 2)
        assert [s["batch"] for s in report["swept"]] == [day(1)]
        assert set(batches_in_lake(setup, root)) == {day(2), day(3)}
        left = admin.list_object_versions(Bucket=BUCKET, Prefix=f"raw/batch={day(1)}/")
        assert not left.get("Versions") and not left.get("DeleteMarkers")


def test_the_airflow_role_can_remove_a_featurized_nights_originals_on_a_versioned_lake(template):
    """The default night's `remove_originals` (fruits_original_retention_days 0) under moto's IAM-enforcing
    mode with the Airflow role's policy: under the run's own lock, every version of the covered batch's bundle
    goes; a batch with no committed features keeps its bundle; the run's lock stays the run's."""
    import lakefiles
    from conftest import commit_output
    from test_retention import day

    from fruits import locks, retention

    with mock_aws(), disable_iam_authentication():
        admin, setup, root = _versioned_lake_of_nights(2)
        sidecar, facts = lakefiles.covering(["bundle-a.parquet"])
        commit_output(setup, lake.features_uri(root, day(2)), {"part-0.parquet": b"f", **sidecar}, facts)
        setup.delete(lake.commit_marker_uri(lake.features_uri(root, day(1))))  # its featurize failed
        held = locks.acquire(setup, root, day(2), "run-2", ttl_seconds=3600)
        client = _airflow_client_deleting_versions(template)
        with enable_iam_authentication():
            report = retention.remove_featurized_originals(
                S3Store(client, BUCKET), root, [day(1), day(2)], owner="run-2"
            )
        assert report["removed"] == {day(2): 1} and report["waiting"] == [day(1)]
        gone = admin.list_object_versions(Bucket=BUCKET, Prefix=f"raw/batch={day(2)}/bundle-a.parquet")
        assert not gone.get("Versions") and not gone.get("DeleteMarkers")
        kept = admin.list_object_versions(Bucket=BUCKET, Prefix=f"raw/batch={day(1)}/bundle-a.parquet")
        assert kept.get("Versions")
        assert locks.holder(setup, root, day(2)) == held
