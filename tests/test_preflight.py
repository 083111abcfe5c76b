"""Bad accounts are refused before any cluster is requested, each with a message naming its fix: no
subnets set, a subnet that does not exist, a subnet of another VPC, a subnet without the EMR tag, a VPC
without the S3 or KMS endpoint, an EC2 vCPU quota below the cluster's need (EC2 in moto; Service Quotas
through botocore's Stubber, see conftest.quota_client)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import boto3
import pytest
from cfnlint.decode.cfn_yaml import loads as load_cfn_yaml
from conftest import account_clients, emr_network
from moto import mock_aws

from fruits import pipeline_tasks, preflight, run_params
from fruits.emr_cluster import ClusterSizing, vcpus_needed
from fruits.settings import PipelineSettings, load_settings

REGION = "eu-west-3"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def network():
    with mock_aws():
        yield emr_network(REGION)


def _settings(variables: dict) -> PipelineSettings:
    return load_settings({"fruits_region": REGION, **variables}.get)


def test_the_default_cluster_needs_20_on_demand_and_8_spot_vcpus():
    # primary m7g.xlarge (4) + core and task 8-vCPU workers; the task fleet may switch to On-Demand.
    assert vcpus_needed(ClusterSizing()) == {"on_demand": 20, "spot": 8}
    assert vcpus_needed(ClusterSizing(task_count=3, spot=False)) == {"on_demand": 36, "spot": 0}


def test_a_ready_account_passes_and_reports_its_subnets_and_quotas(network):
    checked = preflight.check_account(_settings(network), ClusterSizing(), account_clients(REGION))
    assert sorted(checked["subnets"]) == sorted(network["fruits_subnet_ids"].split(","))
    assert set(checked["subnets"].values()) == {f"{REGION}a", f"{REGION}b"}
    assert checked["vcpus"] == {"on_demand": {"needed": 20, "quota": 1152}, "spot": {"needed": 8, "quota": 1152}}


def test_unset_subnets_are_refused_naming_the_stack_output(network):
    with pytest.raises(ValueError, match="fruits_subnet_ids.*default, public VPC.*SubnetIds"):
        preflight.check_account(_settings({}), ClusterSizing(), account_clients(REGION))


def test_a_subnet_that_does_not_exist_is_refused(network):
    variables = {**network, "fruits_subnet_ids": "subnet-0123456789abcdef0"}
    with pytest.raises(ValueError, match="subnet-0123456789abcdef0.*output SubnetIds"):
        preflight.check_account(_settings(variables), ClusterSizing(), account_clients(REGION))


def test_a_subnet_of_another_vpc_is_refused_naming_both_vpcs(network):
    ec2 = boto3.client("ec2", region_name=REGION)
    other_vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    stray = ec2.create_subnet(VpcId=other_vpc, CidrBlock="10.99.1.0/24")["Subnet"]["SubnetId"]
    variables = {**network, "fruits_subnet_ids": network["fruits_subnet_ids"] + "," + stray}
    with pytest.raises(
        ValueError, match=rf"{stray} is in {other_vpc}, not in fruits_vpc_id {network['fruits_vpc_id']}"
    ):
        preflight.check_account(_settings(variables), ClusterSizing(), account_clients(REGION))


def test_a_subnet_without_the_emr_tag_is_refused_with_the_tagging_command():
    with mock_aws():
        untagged = emr_network(REGION, tag_subnets=False)
        first = untagged["fruits_subnet_ids"].split(",")[0]
        with pytest.raises(ValueError) as refused:
            preflight.check_account(_settings(untagged), ClusterSizing(), account_clients(REGION))
    assert "for-use-with-amazon-emr-managed-policies=true" in str(refused.value)
    assert (
        f"aws ec2 create-tags --resources {first} --tags Key=for-use-with-amazon-emr-managed-policies,Value=true"
        in (str(refused.value))
    )


def test_a_vpc_without_the_kms_endpoint_is_refused_naming_the_stack_parameters():
    with mock_aws():
        bare = emr_network(REGION, endpoints=False)
        with pytest.raises(ValueError, match=r"no s3 \(Gateway\) and no kms \(Interface\) endpoint.*VpcId"):
            preflight.check_account(_settings(bare), ClusterSizing(), account_clients(REGION))
        ec2 = boto3.client("ec2", region_name=REGION)
        table = ec2.create_route_table(VpcId=bare["fruits_vpc_id"])["RouteTable"]["RouteTableId"]
        ec2.create_vpc_endpoint(
            VpcId=bare["fruits_vpc_id"],
            ServiceName=f"com.amazonaws.{REGION}.s3",
            VpcEndpointType="Gateway",
            RouteTableIds=[table],
        )
        with pytest.raises(ValueError, match=r"no kms \(Interface\) endpoint"):
            preflight.check_account(_settings(bare), ClusterSizing(), account_clients(REGION))


@pytest.mark.parametrize(
    "vcpus, code, needed",
    [({"on_demand": 16, "spot": 1152}, "L-1216C47A", 20), ({"on_demand": 1152, "spot": 5}, "L-34B43A08", 8)],
)
def test_a_quota_below_the_clusters_need_is_refused_with_the_increase_command(network, vcpus, code, needed):
    with pytest.raises(ValueError, match=rf"{code}.*needs {needed}.*--quota-code {code} --desired-value {needed}"):
        preflight.check_account(_settings(network), ClusterSizing(), account_clients(REGION, vcpus))
    # Without spot task nodes the spot quota is not read at all.
    if code == "L-34B43A08":
        preflight.check_account(_settings(network), ClusterSizing(spot=False), account_clients(REGION, vcpus))


def test_the_plan_refuses_a_bad_account_on_a_dry_run_before_any_cluster(network):
    settings = dataclasses.replace(_settings(network), bucket="fruits-lake-preflight", subnet_ids="")
    params = run_params.parse(
        {**{n: s["default"] for n, s in run_params.param_specs("emr").items()}, "dry_run": True},
        night="2026-03-10",
        settings=settings,
    )
    run = pipeline_tasks.Run(settings, params)
    listed = {
        "landing": {"listing": None, "landing": "s3://landing/2026-03-10/", "files": 0, "candidates": 0, "bytes": 0},
        "code": {"code_uri": "s3://b/code/x/", "helper_modules": []},
    }
    with pytest.raises(ValueError, match="fruits_subnet_ids"):
        pipeline_tasks.plan_run(run, None, listed, run_name="r", client=account_clients(REGION))
    assert boto3.client("emr", region_name=REGION).list_clusters()["Clusters"] == []


def test_the_airflow_policy_grants_every_call_the_preflight_makes(network):
    calls = set()

    def recording(name):
        client = account_clients(REGION)(name)
        prefix = client.meta.service_model.signing_name  # the IAM action prefix: ec2, servicequotas
        client.meta.events.register("before-parameter-build", lambda model, **_: calls.add(f"{prefix}:{model.name}"))
        return client

    preflight.check_account(_settings(network), ClusterSizing(), recording)
    assert calls == {"ec2:DescribeSubnets", "ec2:DescribeVpcEndpoints", "servicequotas:GetServiceQuota"}
    template = load_cfn_yaml((REPO / "infra" / "foundation.yaml").read_text())
    statements = template["Resources"]["AirflowPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    granted = {
        action
        for s in statements
        if isinstance(s, dict) and s.get("Effect") == "Allow" and s.get("Resource") == "*" and "Condition" not in s
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert calls <= granted
