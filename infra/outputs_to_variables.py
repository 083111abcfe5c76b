"""Turn the foundation stack's outputs into an `airflow variables import` file.

    python infra/outputs_to_variables.py --stack-name fruits-foundation --region eu-west-3 > fruits-variables.json
    aws cloudformation describe-stacks --stack-name fruits-foundation --region eu-west-3 \
        | python infra/outputs_to_variables.py --describe-stacks-json - > fruits-variables.json
    airflow variables import fruits-variables.json

Each output is named after a `fruits.settings.PipelineSettings` field (CamelCase of the snake_case
field): `Bucket` -> `fruits_bucket`, `KmsKeyArn` -> `fruits_kms_key_arn`. An output that maps onto
no field is an error, not a silent skip: the template and the settings must not drift apart. A stack
outside the GDPR allow-list is refused.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the settings live in the repository's plugins/ (Airflow's plugins folder).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from fruits.gdpr import allowed_regions, check_region  # noqa: E402
from fruits.settings import variable_names  # noqa: E402


def output_field(output_key: str) -> str:
    """`KmsKeyArn` -> `kms_key_arn`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", output_key).lower()


def outputs_to_variables(outputs: list[dict[str, Any]]) -> dict[str, str]:
    """DescribeStacks' `Outputs` -> {"fruits_<field>": value}."""
    names = variable_names()
    variables: dict[str, str] = {}
    unknown = []
    for output in outputs:
        field = output_field(output["OutputKey"])
        if field in names:
            variables[names[field]] = output["OutputValue"]
        else:
            unknown.append(output["OutputKey"])
    if unknown:
        raise ValueError(f"stack outputs {unknown} match no PipelineSettings field ({sorted(names)})")
    region = variables.get(names["region"])
    # The stack's own allow-list output (when present) must itself be EU-only, and hold its region.
    check_region(region, allowed_regions(variables.get(names["allowed_regions"])))
    return variables


def stack_outputs(describe_stacks: dict[str, Any]) -> list[dict[str, Any]]:
    stacks = describe_stacks.get("Stacks") or []
    if len(stacks) != 1:
        raise ValueError(f"expected the description of exactly one stack, got {len(stacks)}")
    return stacks[0].get("Outputs", [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack-name", help="read the outputs with boto3 (credentials from the environment)")
    source.add_argument(
        "--describe-stacks-json",
        type=argparse.FileType("r"),
        help="a saved `aws cloudformation describe-stacks` answer ('-' for stdin)",
    )
    parser.add_argument("--region", help="the stack's region (with --stack-name)")
    args = parser.parse_args(argv)
    if args.stack_name:
        import boto3

        region = check_region(args.region)  # refuse before any call outside the EU
        described = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=args.stack_name)
    else:
        described = json.load(args.describe_stacks_json)
    try:
        variables = outputs_to_variables(stack_outputs(described))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    json.dump(variables, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
