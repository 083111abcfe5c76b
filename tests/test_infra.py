"""infra/foundation.yaml: lints clean for the EU regions, agrees with the code (region list, lake
prefixes, settings), deploys in moto, and what it deploys satisfies the GDPR guard and the cluster."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode.cfn_yaml import loads as load_cfn_yaml
from conftest import account_clients, emr_network
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends
from moto.cloudformation.parsing import clean_json
from moto.core import DEFAULT_ACCOUNT_ID

from fruits import costs, lake, preflight
from fruits.cli.costs import main as costs_main
from fruits.emr_cluster import ClusterSizing, build_job_flow
from fruits.gdpr import EU_MEMBER_STATE_REGIONS, GdprViolation, check_bucket
from fruits.settings import PipelineSettings, load_settings, variable_names

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = REPO / "infra" / "foundation.yaml"
sys.path.insert(0, str(REPO))
from infra.outputs_to_variables import main as outputs_main  # noqa: E402
from infra.outputs_to_variables import output_field, outputs_to_variables  # noqa: E402

# moto warns about each resource type its CloudFormation skips (AWS::S3::BucketPolicy, handled below).
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS..S3..BucketPolicy")

REGION = "eu-west-3"
BUCKET = "fruits-lake-test-eu-west-3"
STACK = "fruits-foundation"


@pytest.fixture(scope="module")
def template() -> dict:
    return load_cfn_yaml(TEMPLATE_PATH.read_text())


def test_cfn_lint_passes_for_every_eu_region():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--regions",
            *EU_MEMBER_STATE_REGIONS,
            "--",
            str(TEMPLATE_PATH),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_region_rules_hold_exactly_the_eu_member_state_regions(template):
    assert template["Parameters"]["AllowedRegions"]["Default"].split(",") == list(EU_MEMBER_STATE_REGIONS)
    each_member_in, contains = template["Rules"]["EuMemberStateRegionsOnly"]["Assertions"]
    members, eu_list = each_member_in["Assert"]["Fn::EachMemberIn"]
    assert members == {"Ref": "AllowedRegions"}
    assert list(eu_list) == list(EU_MEMBER_STATE_REGIONS)
    assert contains["Assert"]["Fn::Contains"] == [{"Ref": "AllowedRegions"}, {"Ref": "AWS::Region"}]


def _lake_top_prefixes() -> set[str]:
    return {area + "/" for area in lake.AREAS}


def _object_prefixes(statement_resources) -> set[str]:
    """`${LakeBucket.Arn}/features/*` -> `features/`."""
    prefixes = set()
    for resource in statement_resources if isinstance(statement_resources, list) else [statement_resources]:
        if isinstance(resource, dict) and "Fn::Sub" in resource:
            text = resource["Fn::Sub"]
            prefixes.add(text.split("}/", 1)[1].removesuffix("*"))
    return prefixes


def test_prefixes_in_lifecycle_and_policies_are_the_lake_layout(template):
    layout = _lake_top_prefixes()
    rules = {r["Id"]: r for r in template["Resources"]["LakeBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    retention = {r["Prefix"] for r in rules.values() if r.get("ExpirationInDays") == {"Ref": "ImageRetentionDays"}}
    # A photo and everything derived from it share one retention; code/models/reports are not personal data.
    assert retention == {"raw/", "derived/", "features/", "quarantine/", "pca/"}
    assert {r.get("Prefix") for r in rules.values()} - {None} <= layout
    used = set()
    for name in ("EmrInstanceRole", "AirflowPolicy", "ErasurePolicy"):
        props = template["Resources"][name]["Properties"]
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])] or [props["PolicyDocument"]]
        for document in documents:
            for statement in document["Statement"]:
                used |= _object_prefixes(statement.get("Resource"))
                for prefix in statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", []):
                    used.add(prefix.removesuffix("*"))
    assert used and used <= layout, used - layout
    # The nodes never write the code they run (raw/: the ingest job's bundles, manifest and report).
    instance_statements = template["Resources"]["EmrInstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    writes = [s for s in instance_statements if "Action" in s and "s3:PutObject" in s["Action"]]
    written = set().union(*(_object_prefixes(s["Resource"]) for s in writes))
    assert "raw/" in written and "code/" not in written


def test_every_output_is_a_pipeline_setting(template):
    fields = variable_names()
    assert {output_field(key) for key in template["Outputs"]} <= set(fields)


def _apply_what_moto_cloudformation_skips(template: dict, s3) -> None:
    """moto's CloudFormation creates the bucket with its encryption but ignores the bucket's public
    access block, versioning and lifecycle properties and the AWS::S3::BucketPolicy resource. Apply the
    TEMPLATE'S OWN values (resolved by moto's intrinsic-function resolver against the created stack)
    through the S3 API, so what the assertions below read back is still what the template declares,
    and botocore validates the shapes on the way in."""
    backend = cloudformation_backends[DEFAULT_ACCOUNT_ID][REGION]
    stack = next(s for s in backend.stacks.values() if s.name == STACK)
    resolve = lambda node: clean_json(node, stack.resource_map)  # noqa: E731
    bucket_props = resolve(template["Resources"]["LakeBucket"]["Properties"])
    s3.put_public_access_block(
        Bucket=BUCKET, PublicAccessBlockConfiguration=bucket_props["PublicAccessBlockConfiguration"]
    )
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration=bucket_props["VersioningConfiguration"])
    rules = []
    for rule in bucket_props["LifecycleConfiguration"]["Rules"]:
        api_rule = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
        if "ExpirationInDays" in rule:
            api_rule["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        if rule.get("ExpiredObjectDeleteMarker"):
            api_rule["Expiration"] = {"ExpiredObjectDeleteMarker": True}
        if "NoncurrentVersionExpiration" in rule:
            api_rule["NoncurrentVersionExpiration"] = {
                "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
            }
        if "AbortIncompleteMultipartUpload" in rule:
            api_rule["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
            }
        rules.append(api_rule)
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": rules})
    policy = resolve(template["Resources"]["LakeBucketPolicy"]["Properties"])
    assert policy["Bucket"] == BUCKET
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy["PolicyDocument"]))


def _create_stack(**parameters: str) -> Any:
    """The template in moto (inside mock_aws) with the parameters every deployment here shares, plus these."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    shared = {
        "BucketName": BUCKET,
        # Passed explicitly (a narrower list): moto splits a CommaDelimitedList only when it
        # is given, and would join a defaulted one's characters in the output.
        "AllowedRegions": "eu-west-3,eu-west-1",
        # With a landing: moto leaves AWS::NoValue in a policy's statement list (the default,
        # landing-less policy is checked by cfn-lint and tests/test_access.py).
        "LandingBucket": "fruits-landing-test",
        "LandingPrefix": "incoming/",
        "AlertEmail": "oncall@example.com",
    }
    with warnings.catch_warnings():
        # moto skips some resource types: the bucket policy (applied below), the budget and cost anomaly (cfn-lint).
        warnings.simplefilter("ignore")
        cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=TEMPLATE_PATH.read_text(),
            Capabilities=["CAPABILITY_NAMED_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in {**shared, **parameters}.items()],
        )
    return cloudformation


@pytest.fixture
def deployed(template):
    with mock_aws():
        cloudformation = _create_stack(ImageRetentionDays="180")
        stack = cloudformation.describe_stacks(StackName=STACK)
        s3 = boto3.client("s3", region_name=REGION)
        _apply_what_moto_cloudformation_skips(template, s3)
        yield stack, s3


def test_deployed_bucket_is_eu_encrypted_with_the_stack_key_private_and_tls_only(deployed):
    stack, s3 = deployed
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Stacks"][0]["Outputs"]}
    assert stack["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == REGION

    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == outputs["KmsKeyArn"]
    # The stack's own customer-managed key (moto's DescribeKey chokes on a key policy given as an
    # object, as CloudFormation allows, so the key is identified through the stack's resources).
    resources = boto3.client("cloudformation", region_name=REGION).list_stack_resources(StackName=STACK)
    key_id = next(
        r["PhysicalResourceId"] for r in resources["StackResourceSummaries"] if r["LogicalResourceId"] == "LakeKey"
    )
    assert outputs["KmsKeyArn"].endswith(f":key/{key_id}")

    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    policy = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    tls = next(s for s in policy["Statement"] if s["Sid"] == "DenyInsecureTransport")
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert f"arn:aws:s3:::{BUCKET}/*" in tls["Resource"]
    other_keys = next(s for s in policy["Statement"] if s["Sid"] == "DenyOtherKmsKeys")
    assert (
        other_keys["Condition"]["StringNotEqualsIfExists"]["s3:x-amz-server-side-encryption-aws-kms-key-id"]
        == outputs["KmsKeyArn"]
    )

    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert rules["expire-raw-images"]["Expiration"]["Days"] == 180  # the parameter, not the default
    assert rules["purge-noncurrent-versions-and-uploads"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert rules["purge-noncurrent-versions-and-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7

    # What the stack built passes the guard the DAG runs first.
    assert check_bucket(s3, BUCKET, outputs["AllowedRegions"]) == REGION


def test_security_configuration_encrypts_at_rest_with_the_key_and_requires_imdsv2(deployed):
    stack, _ = deployed
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Stacks"][0]["Outputs"]}
    raw = boto3.client("emr", region_name=REGION).describe_security_configuration(
        Name=outputs["SecurityConfiguration"]
    )["SecurityConfiguration"]
    # moto stores the document as Python's repr of the dict where AWS returns JSON.
    config = json.loads(raw) if raw.lstrip().startswith('{"') else ast.literal_eval(raw)
    at_rest = config["EncryptionConfiguration"]["AtRestEncryptionConfiguration"]
    assert config["EncryptionConfiguration"]["EnableAtRestEncryption"] is True
    assert at_rest["S3EncryptionConfiguration"] == {"EncryptionMode": "SSE-KMS", "AwsKmsKey": outputs["KmsKeyArn"]}
    assert at_rest["LocalDiskEncryptionConfiguration"]["AwsKmsKey"] == outputs["KmsKeyArn"]
    assert at_rest["LocalDiskEncryptionConfiguration"]["EnableEbsEncryption"] is True
    # No certificates given: in-transit encryption off (documented), and no dangling certificate block.
    assert config["EncryptionConfiguration"]["EnableInTransitEncryption"] is False
    assert "InTransitEncryptionConfiguration" not in config["EncryptionConfiguration"]
    assert config["InstanceMetadataServiceConfiguration"]["MinimumInstanceMetadataServiceVersion"] == 2


def test_outputs_become_the_settings_that_launch_a_cluster(deployed, capsys, tmp_path):
    stack, _ = deployed
    described = tmp_path / "describe-stacks.json"
    described.write_text(json.dumps(stack, default=str))
    assert outputs_main(["--describe-stacks-json", str(described)]) == 0
    variables = json.loads(capsys.readouterr().out)
    assert variables == {
        "fruits_region": REGION,
        "fruits_bucket": BUCKET,
        "fruits_kms_key_arn": variables["fruits_kms_key_arn"],
        "fruits_service_role": "fruits-emr-service-role",
        "fruits_instance_profile": "fruits-emr-ec2-instance-profile",
        "fruits_security_configuration": "fruits-emr-security",
        "fruits_log_uri": lake.logs_uri(f"s3://{BUCKET}"),
        "fruits_allowed_regions": "eu-west-3,eu-west-1",
        "fruits_bucket_owner": variables["fruits_bucket_owner"],
        "fruits_pipeline_tag": "fruits",
    }
    assert variables["fruits_bucket_owner"] == DEFAULT_ACCOUNT_ID
    assert variables["fruits_kms_key_arn"].startswith(f"arn:aws:kms:{REGION}:")
    settings = load_settings(variables.get)
    # The settings' defaults name the resources the stack creates with its default prefix.
    defaults = PipelineSettings()
    assert (settings.service_role, settings.instance_profile, settings.security_configuration) == (
        defaults.service_role,
        defaults.instance_profile,
        defaults.security_configuration,
    )
    request = build_job_flow(
        settings, name="fruits-2026-11-22", code_uri=lake.code_uri(f"s3://{BUCKET}", "abc123"), sizing=ClusterSizing()
    )
    assert request["LogEncryptionKmsKeyId"] == variables["fruits_kms_key_arn"]
    cluster_id = boto3.client("emr", region_name=REGION).run_job_flow(**request)["JobFlowId"]
    assert cluster_id.startswith("j-")


def test_outputs_that_match_no_setting_or_leave_the_eu_are_refused():
    with pytest.raises(ValueError, match="NatGatewayId"):
        outputs_to_variables(
            [{"OutputKey": "Bucket", "OutputValue": "b"}, {"OutputKey": "NatGatewayId", "OutputValue": "n"}]
        )
    with pytest.raises(GdprViolation, match="eu-west-2"):
        outputs_to_variables([{"OutputKey": "Region", "OutputValue": "eu-west-2"}])
    with pytest.raises(GdprViolation, match="us-east-1"):
        outputs_to_variables(
            [
                {"OutputKey": "Region", "OutputValue": "eu-west-3"},
                {"OutputKey": "AllowedRegions", "OutputValue": "eu-west-3,us-east-1"},
            ]
        )


def test_the_cluster_reaches_only_s3_through_a_gateway_endpoint_and_no_nat(template):
    endpoint = template["Resources"]["LakeGatewayEndpoint"]
    assert endpoint["Type"] == "AWS::EC2::VPCEndpoint" and endpoint["Condition"] == "HasVpc"
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
    assert endpoint["Properties"]["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert not kinds & {"AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EIP"}


def test_the_deployed_airflow_policy_reaches_the_landing_prefix_only(deployed):
    iam = boto3.client("iam", region_name=REGION)
    (policy,) = [p for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"] == "fruits-airflow"]
    document = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
    statements = document["PolicyVersion"]["Document"]
    statements = (json.loads(statements) if isinstance(statements, str) else statements)["Statement"]
    landing = {s["Sid"]: s for s in statements if "fruits-landing-test" in json.dumps(s.get("Resource"))}
    assert landing["ReadAndClearTheLanding"]["Resource"] == "arn:aws:s3:::fruits-landing-test/incoming/*"
    assert landing["ListTheLanding"]["Condition"] == {"StringLike": {"s3:prefix": ["incoming/*"]}}
    assert set(landing) == {"GdprGuardReadsTheLandingSettings", "ListTheLanding", "ReadAndClearTheLanding"}


def test_the_nodes_reach_kms_through_an_interface_endpoint_open_to_the_vpc_only(template):
    endpoint = template["Resources"]["KmsInterfaceEndpoint"]
    assert endpoint["Condition"] == "HasVpc" and endpoint["Properties"]["VpcEndpointType"] == "Interface"
    assert endpoint["Properties"]["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.kms"}
    assert endpoint["Properties"]["PrivateDnsEnabled"] is True  # the SDK's default kms.<region> name resolves to it
    (ingress,) = template["Resources"]["InterfaceEndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"], ingress["CidrIp"]) == (443, 443, {"Ref": "VpcCidr"})
    # The cost model counts exactly the template's interface endpoints, in as many AZs as it places them.
    interface = {
        r["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1]: len(r["Properties"]["SubnetIds"])
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::VPCEndpoint" and r["Properties"]["VpcEndpointType"] == "Interface"
    }
    assert interface == costs.INTERFACE_ENDPOINTS


def test_the_budget_default_is_the_cost_models_month_with_its_margin(template, capsys):
    assert costs_main(["bill", "--json"]) == 0  # `python -m fruits.cli.costs bill`
    bill = json.loads(capsys.readouterr().out)
    month = bill["months"][str(costs.BUDGET_IMAGES_PER_NIGHT)]["monthly_usd"]
    assert bill["budget_usd"] == costs.monthly_budget_usd(month)
    default = template["Parameters"]["MonthlyBudgetUsd"]["Default"]
    assert default == bill["budget_usd"]
    assert month < default <= month * (1 + costs.BUDGET_MARGIN) + 10
    budget = template["Resources"]["MonthlyBudget"]["Properties"]
    assert budget["Budget"]["BudgetLimit"] == {"Amount": {"Ref": "MonthlyBudgetUsd"}, "Unit": "USD"}
    kinds = {
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"])
        for n in budget["NotificationsWithSubscribers"]
    }
    assert kinds == {("ACTUAL", 80), ("ACTUAL", 100), ("FORECASTED", 100)}
    subscription = template["Resources"]["CostAnomalySubscription"]["Properties"]
    assert subscription["MonitorArnList"] == [{"Ref": "CostAnomalyMonitor"}]
    assert template["Resources"]["CostAnomalyMonitor"]["Properties"]["MonitorType"] == "CUSTOM"


def test_a_stack_with_a_vpc_outputs_the_network_variables_that_pass_the_preflight():
    """Deployed in moto into a VPC whose subnets the checklist tagged: the endpoints exist, and the outputs
    (VpcId, SubnetIds) become Variables that fruits.preflight accepts."""
    with mock_aws():
        network = emr_network(REGION, endpoints=False)  # the stack adds them
        vpc, subnets = network["fruits_vpc_id"], network["fruits_subnet_ids"].split(",")
        ec2 = boto3.client("ec2", region_name=REGION)
        route_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        cidr = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"]
        cloudformation = _create_stack(
            VpcId=vpc, VpcCidr=cidr, PrivateSubnetIds=",".join(subnets), PrivateRouteTableIds=route_table
        )
        stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
        by_service = {e["ServiceName"].rsplit(".", 1)[1]: e for e in endpoints}
        assert by_service["s3"]["VpcEndpointType"] == "Gateway" and by_service["s3"]["RouteTableIds"] == [route_table]
        assert by_service["kms"]["VpcEndpointType"] == "Interface" and by_service["kms"]["SubnetIds"] == subnets[:1]
        variables = outputs_to_variables(stack["Outputs"])
        assert variables["fruits_vpc_id"] == vpc and variables["fruits_subnet_ids"] == ",".join(subnets)
        settings = load_settings(variables.get)
        checked = preflight.check_account(settings, ClusterSizing(), account_clients(REGION))
        assert sorted(checked["subnets"]) == sorted(subnets)
        request = build_job_flow(
            settings, name="n", code_uri=lake.code_uri(f"s3://{BUCKET}", "c"), sizing=ClusterSizing()
        )
        assert request["Instances"]["Ec2SubnetIds"] == subnets
