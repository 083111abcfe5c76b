"""Refresh the prices file (`prices/aws_eu.json`) from the AWS Price List API and the spot price history.

Run by `python -m fruits.cli.costs refresh [--spot]` with credentials allowed `pricing:GetProducts` (and
`ec2:DescribeSpotPriceHistory` for --spot); the pipeline itself only reads the file (`fruits.costs.PriceBook`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fruits.costs import (
    PRICES_FILE,
    PriceBook,
)
from fruits.gdpr import EU_MEMBER_STATE_REGIONS, check_region

log = logging.getLogger(__name__)

# The Price List API is served from us-east-1, eu-central-1 and ap-south-1. It is a public price
# catalogue: the request carries product filters, no pipeline data, so nothing about the photos leaves
# the EU; we use Frankfurt anyway.
PRICING_ENDPOINT_REGION = "eu-central-1"


def _filters(**terms: str) -> list[dict[str, str]]:
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in terms.items()]


def _on_demand_usd(price_item: str) -> tuple[float, dict[str, Any]] | None:
    """The first-tier On-Demand USD price of one Price List product (a JSON string)."""
    product = json.loads(price_item)
    dimensions = [
        dimension
        for term in product.get("terms", {}).get("OnDemand", {}).values()
        for dimension in term.get("priceDimensions", {}).values()
    ]
    dimensions.sort(key=lambda d: float(d.get("beginRange", "0") or 0))
    for dimension in dimensions:
        usd = dimension.get("pricePerUnit", {}).get("USD")
        if usd is not None:
            return float(usd), product.get("product", {}).get("attributes", {})
    return None


def _price(pricing_client: Any, service: str, filters: list[dict[str, str]], *, nonzero: bool = True) -> float | None:
    """The price of the first product matching the filters (nonzero: skip free tiers/entries)."""
    paginator = pricing_client.get_paginator("get_products")
    for page in paginator.paginate(ServiceCode=service, Filters=filters, FormatVersion="aws_v1"):
        for item in page.get("PriceList", []):
            found = _on_demand_usd(item)
            if found and (found[0] > 0 or not nonzero):
                return found[0]
    return None


def price_queries(
    region: str, instance_types: Sequence[str]
) -> dict[tuple[str, ...], tuple[str, list[dict[str, str]], float]]:
    """(table, key) -> (service code, filters, multiplier to the file's unit): every price refreshed."""
    queries: dict[tuple[str, ...], tuple[str, list[dict[str, str]], float]] = {}
    for instance_type in instance_types:
        queries[("ec2_on_demand_hourly", instance_type)] = (
            "AmazonEC2",
            _filters(
                regionCode=region,
                instanceType=instance_type,
                operatingSystem="Linux",
                tenancy="Shared",
                preInstalledSw="NA",
                capacitystatus="Used",
            ),
            1.0,
        )
        queries[("emr_hourly", instance_type)] = (
            "ElasticMapReduce",
            _filters(regionCode=region, instanceType=instance_type, softwareType="EMR"),
            1.0,
        )
    queries[("ebs_gp3_gb_month",)] = (
        "AmazonEC2",
        _filters(regionCode=region, productFamily="Storage", volumeApiName="gp3"),
        1.0,
    )
    queries[("s3_standard_gb_month",)] = (
        "AmazonS3",
        _filters(regionCode=region, productFamily="Storage", storageClass="General Purpose", volumeType="Standard"),
        1.0,
    )
    # Request prices are per request in the API, per 1,000 in the file.
    queries[("s3_put_per_1000",)] = (
        "AmazonS3",
        _filters(regionCode=region, productFamily="API Request", group="S3-API-Tier1"),
        1000.0,
    )
    queries[("s3_get_per_1000",)] = (
        "AmazonS3",
        _filters(regionCode=region, productFamily="API Request", group="S3-API-Tier2"),
        1000.0,
    )
    return queries


def refresh_prices(
    document: dict[str, Any],
    pricing_client: Any,
    *,
    regions: Sequence[str],
    instance_types: Sequence[str],
    today: date | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """A new prices document with every price the Price List API returns; what it could not find keeps
    its old value and is listed in the second result."""
    today = today or datetime.now(UTC).date()
    updated = json.loads(json.dumps(document))
    missing: list[str] = []
    for region in regions:
        check_region(region)
        entry = updated["regions"].setdefault(
            region, {"name": region, "ec2_on_demand_hourly": {}, "emr_hourly": {}, "spot_hourly": {}}
        )
        refreshed = 0
        for key, (service, filters, multiplier) in price_queries(region, instance_types).items():
            value = _price(pricing_client, service, filters)
            if value is None:
                missing.append(f"{region} {'/'.join(key)}")
                continue
            value = round(value * multiplier, 6)
            if len(key) == 2:
                entry.setdefault(key[0], {})[key[1]] = value
            else:
                entry[key[0]] = value
            refreshed += 1
        if refreshed:
            entry["as_of"] = today.isoformat()
            entry["source"] = f"AWS Price List API (pricing.get_products, {PRICING_ENDPOINT_REGION} endpoint)"
            if not any(m.startswith(region + " ") for m in missing):
                entry.pop("derived", None)  # nothing left that was derived by hand
    updated["stamped"] = today.isoformat()
    # The oldest region's values: what the file as a whole can vouch for.
    updated["values_as_of"] = min(str(entry.get("as_of", "")) for entry in updated["regions"].values())
    updated["last_refresh"] = {
        "date": today.isoformat(),
        "endpoint": PRICING_ENDPOINT_REGION,
        "regions": list(regions),
        "missing": missing,
    }
    return updated, missing


def sample_spot_prices(
    ec2_client: Any, instance_types: Sequence[str], *, now: datetime | None = None
) -> dict[str, float]:
    """Current spot price per type in the client's region: the mean of the latest price of each
    availability zone (DescribeSpotPriceHistory, Linux/UNIX)."""
    now = now or datetime.now(UTC)
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    paginator = ec2_client.get_paginator("describe_spot_price_history")
    for page in paginator.paginate(
        InstanceTypes=list(instance_types),
        ProductDescriptions=["Linux/UNIX"],
        StartTime=now - timedelta(hours=1),
        EndTime=now,
    ):
        for entry in page["SpotPriceHistory"]:
            key = (entry["InstanceType"], entry["AvailabilityZone"])
            if key not in latest or entry["Timestamp"] > latest[key][0]:
                latest[key] = (entry["Timestamp"], float(entry["SpotPrice"]))
    by_type: dict[str, list[float]] = {}
    for (instance_type, _zone), (_when, price) in latest.items():
        by_type.setdefault(instance_type, []).append(price)
    return {t: round(sum(p) / len(p), 6) for t, p in sorted(by_type.items())}


def write_prices(document: dict[str, Any], path: Path = PRICES_FILE) -> None:
    """Write-then-rename: a failed refresh leaves the old file whole."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=1) + "\n")
    partial.replace(path)


def refresh(
    prices_file: Path = PRICES_FILE,
    *,
    regions: Sequence[str] = (),
    instance_types: Sequence[str] = (),
    spot: bool = False,
) -> list[str]:
    """Rewrite `prices_file` from the Price List API (every EU region and the file's instance types unless
    named), with sampled spot prices when `spot`; returns the prices not found (their old values kept)."""
    import boto3

    prices = PriceBook.load(prices_file)
    regions = list(regions) or list(EU_MEMBER_STATE_REGIONS)
    types = list(instance_types) or sorted(
        {t for r in prices.document["regions"].values() for t in r.get("ec2_on_demand_hourly", {})}
    )
    pricing = boto3.client("pricing", region_name=PRICING_ENDPOINT_REGION)
    document, missing = refresh_prices(prices.document, pricing, regions=regions, instance_types=types)
    if spot:
        for region in regions:
            sampled = sample_spot_prices(boto3.client("ec2", region_name=check_region(region)), types)
            document["regions"][region]["spot_hourly"] = sampled
            document["regions"][region]["spot_sampled_at"] = datetime.now(UTC).isoformat(timespec="minutes")
    write_prices(document, prices_file)
    for item in missing:
        log.warning("not in the Price List API answer, kept the old value: %s", item)
    log.info(
        "wrote %s (%d regions, %d instance types, %d prices missing)",
        prices_file,
        len(regions),
        len(types),
        len(missing),
    )
    return missing
