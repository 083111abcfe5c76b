"""What a real account must hold before EMR is asked for a cluster, checked with read-only calls: the
subnets (in the foundation's VPC, tagged for AmazonEMRServicePolicy_v2), that VPC's S3 and KMS endpoints,
and the EC2 vCPU quotas the cluster's sizing needs. Each refusal is a ValueError naming the fix;
`plan_run` calls `check_account` on every EMR run, dry runs included, so the refusal comes before any
cluster is requested.

    PYTHONPATH=plugins .venv/bin/python -m fruits.preflight --variables fruits-variables.json
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from fruits.emr_cluster import EMR_MANAGED_TAG, ClusterSizing, vcpus_needed
from fruits.gdpr import check_region
from fruits.settings import PipelineSettings, load_settings

# Service Quotas codes (service "ec2"), in vCPUs: the instance families the cluster uses (c, m, r) are "Standard".
ON_DEMAND_QUOTA = "L-1216C47A"  # Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances
SPOT_QUOTA = "L-34B43A08"  # All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests
QUOTA_CODES = {"on_demand": ON_DEMAND_QUOTA, "spot": SPOT_QUOTA}


def _tag_fix(resource: str) -> str:
    return f"aws ec2 create-tags --resources {resource} --tags Key={EMR_MANAGED_TAG[0]},Value={EMR_MANAGED_TAG[1]}"


def check_subnets(settings: PipelineSettings, ec2: Any) -> dict[str, str]:
    """{subnet id: its AZ}, or ValueError: no subnets set, a subnet that does not exist here, one in another
    VPC than fruits_vpc_id (whose endpoints the nodes need), one without the EMR tag."""
    subnet_ids = settings.subnet_id_list
    if not subnet_ids or not settings.vpc_id:
        raise ValueError(
            "fruits_subnet_ids and fruits_vpc_id must be set on the EMR target (unset, EMR launches in the "
            "default, public VPC): deploy the foundation with VpcId and PrivateSubnetIds, then import its "
            "outputs SubnetIds and VpcId (infra/outputs_to_variables.py, docs/first-night-on-aws.md)"
        )
    from botocore.exceptions import ClientError

    try:
        subnets = ec2.describe_subnets(SubnetIds=list(subnet_ids))["Subnets"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "InvalidSubnetID.NotFound":
            raise
        raise ValueError(
            f"fruits_subnet_ids {','.join(subnet_ids)}: {error.response['Error']['Message']} in {settings.region}; "
            "set it from the foundation stack's output SubnetIds"
        ) from None
    zones = {}
    for subnet in subnets:
        subnet_id = subnet["SubnetId"]
        if subnet["VpcId"] != settings.vpc_id:
            raise ValueError(
                f"subnet {subnet_id} is in {subnet['VpcId']}, not in fruits_vpc_id {settings.vpc_id} (the VPC "
                "holding the foundation's S3 and KMS endpoints): use the stack's output SubnetIds, or redeploy "
                "the stack with that subnet's VPC"
            )
        tags = {t["Key"]: t["Value"] for t in subnet.get("Tags", [])}
        if tags.get(EMR_MANAGED_TAG[0]) != EMR_MANAGED_TAG[1]:
            raise ValueError(
                f"subnet {subnet_id} lacks the tag {EMR_MANAGED_TAG[0]}={EMR_MANAGED_TAG[1]}: "
                f"AmazonEMRServicePolicy_v2 launches no instance there. Fix: {_tag_fix(subnet_id)}"
            )
        zones[subnet_id] = subnet["AvailabilityZone"]
    return zones


# What the nodes must reach inside the VPC (infra/foundation.yaml creates both with VpcId): service -> type.
REQUIRED_ENDPOINTS = {"s3": "Gateway", "kms": "Interface"}


def check_endpoints(settings: PipelineSettings, ec2: Any) -> dict[str, str]:
    """{service: endpoint id} for REQUIRED_ENDPOINTS in fruits_vpc_id, or ValueError: without the S3 gateway
    the bootstrap cannot install anything, without KMS no node decrypts its disks (no NAT, no internet)."""
    found = {}
    pages = ec2.get_paginator("describe_vpc_endpoints").paginate(
        Filters=[{"Name": "vpc-id", "Values": [settings.vpc_id]}]
    )
    for endpoint in (e for page in pages for e in page["VpcEndpoints"]):
        service = endpoint["ServiceName"].rsplit(".", 1)[-1]
        usable = endpoint.get("State", "available").lower() in ("available", "pending")
        if REQUIRED_ENDPOINTS.get(service) == endpoint["VpcEndpointType"] and usable:
            found[service] = endpoint["VpcEndpointId"]
    missing = [f"{service} ({kind})" for service, kind in REQUIRED_ENDPOINTS.items() if service not in found]
    if missing:
        raise ValueError(
            f"VPC {settings.vpc_id} has no {' and no '.join(missing)} endpoint: the nodes (no NAT) could not reach "
            "them. Deploy the foundation stack with VpcId, VpcCidr, PrivateSubnetIds and PrivateRouteTableIds "
            "(docs/first-night-on-aws.md)"
        )
    return found


def check_quotas(sizing: ClusterSizing, quotas: Any) -> dict[str, dict[str, int]]:
    """{"on_demand"|"spot": {"needed", "quota"}}, or ValueError when a quota is below the cluster's need
    (new accounts often get fewer vCPUs than one default cluster)."""
    needed = vcpus_needed(sizing)
    result = {}
    for market, code in QUOTA_CODES.items():
        if not needed[market]:
            continue
        quota = int(quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
        if quota < needed[market]:
            raise ValueError(
                f"EC2 quota {code} ({market.replace('_', '-')} Standard vCPUs) is {quota}, the cluster needs "
                f"{needed[market]} (fruits.emr_cluster.vcpus_needed): request more with `aws service-quotas "
                f"request-service-quota-increase --service-code ec2 --quota-code {code} --desired-value "
                f"{needed[market]}`, or run a smaller cluster (Params task_count, spot)"
            )
        result[market] = {"needed": needed[market], "quota": quota}
    return result


def check_account(settings: PipelineSettings, sizing: ClusterSizing, client: Callable[[str], Any]) -> dict[str, Any]:
    """Both checks; `client(service_name)` gives a boto3 client in the settings' region."""
    check_region(settings.region, settings.allowed_region_list)
    ec2 = client("ec2")
    subnets = check_subnets(settings, ec2)
    endpoints = check_endpoints(settings, ec2)
    return {"subnets": subnets, "endpoints": endpoints, "vcpus": check_quotas(sizing, client("service-quotas"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core", type=int, default=ClusterSizing.core_count)
    parser.add_argument("--task", type=int, default=ClusterSizing.task_count)
    parser.add_argument("--on-demand", action="store_true", help="no spot task nodes")
    parser.add_argument(
        "--variables",
        type=argparse.FileType("r"),
        help="an `airflow variables import` file (infra/outputs_to_variables.py's); default: AIRFLOW_VAR_FRUITS_*",
    )
    args = parser.parse_args(argv)
    variables = json.load(args.variables) if args.variables else {}
    settings = load_settings(
        lambda key, default=None: variables.get(key, os.environ.get(f"AIRFLOW_VAR_{key.upper()}", default))
    )
    sizing = ClusterSizing(core_count=args.core, task_count=args.task, spot=not args.on_demand)
    import boto3

    region = check_region(settings.region, settings.allowed_region_list)  # before any call outside the EU
    try:
        result = check_account(settings, sizing, lambda name: boto3.client(name, region_name=region))
    except ValueError as error:
        print(f"error: {error}")
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
